"""The simulated camera of ``geolink-edge sitl`` against an independent exact rendering.

A textured GeoTIFF on a UTM central meridian (where the grid is true north and true to scale) is
rendered by :class:`MapRenderer` from geodetic poses and compared pixel by pixel with the exact
plane-to-image homography of the same camera (``render_view``), for a nadir and an oblique view,
on a level plane and on a sloped DEM.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _runtime_fixtures import ortho_affine, render_view, textured_ground

from geolink_edge.errors import GeolinkError
from geolink_edge.geo import LocalFrame
from geolink_edge.runtime.mount import BodyAttitude, CameraMount
from geolink_edge.sim.camera import (
    Exposure,
    ExposureModel,
    MapRenderer,
    MapScene,
    Pose,
    SimCamera,
    default_intrinsics,
)

LAT, LON = 45.0, -93.0  # on UTM zone 15's central meridian
EPSG = 32615
GSD = 0.25
SIZE_PX = 800
GROUND = 200.0
FRAME = (320, 240)


def utm(lat, lon):
    from pyproj import Transformer

    return Transformer.from_crs(4326, EPSG, always_xy=True).transform(lon, lat)


@pytest.fixture(scope="module")
def ortho(tmp_path_factory):
    """(path, BGR image, affine of its pixels in metres east/north of (LAT, LON))."""
    import rasterio
    from rasterio.transform import Affine

    image = textured_ground(SIZE_PX, seed=3)
    east, north = utm(LAT, LON)
    west, top = east - SIZE_PX * GSD / 2, north + SIZE_PX * GSD / 2
    path = tmp_path_factory.mktemp("sim_camera") / "ortho.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=SIZE_PX, height=SIZE_PX, count=3, dtype="uint8",
        crs=f"EPSG:{EPSG}", transform=Affine(GSD, 0, west, 0, -GSD, top),
    ) as dst:  # fmt: skip
        dst.write(np.moveaxis(image[..., ::-1], -1, 0))
    return path, image, ortho_affine(GSD, west + GSD / 2 - east, top - GSD / 2 - north)


def write_dem(path, slope: tuple[float, float]):
    """A DEM of the plane GROUND + slope·(east, north) about (LAT, LON), coarser than the ortho."""
    import rasterio
    from rasterio.transform import Affine

    east, north = utm(LAT, LON)
    cell, n = 2.0, 120
    west, top = east - n * cell / 2, north + n * cell / 2
    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    heights = GROUND + slope[0] * (west + cols * cell - east) + slope[1] * (top - rows * cell - north)
    with rasterio.open(
        path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32",
        crs=f"EPSG:{EPSG}", transform=Affine(cell, 0, west, 0, -cell, top),
    ) as dst:  # fmt: skip
        dst.write(heights[None].astype(np.float32))
    return path


def pose_at(east: float, north: float, height: float, yaw_deg: float) -> Pose:
    lat, lon, _ = LocalFrame(LAT, LON).to_geodetic(east, north)
    return Pose(0.0, float(lat), float(lon), GROUND + height, BodyAttitude(0.0, 0.0, math.radians(yaw_deg)))


def compare(rendered: np.ndarray, expected: np.ndarray) -> float:
    """Mean absolute difference (DN) over the pixels both images cover, away from the border."""
    inner = (slice(8, -8), slice(8, -8))
    covered = (expected[inner].max(axis=-1) > 0) & (rendered[inner].max(axis=-1) > 0)
    assert covered.mean() > 0.9
    diff = np.abs(rendered[inner].astype(float) - expected[inner].astype(float))
    return float(diff[covered].mean())


@pytest.mark.parametrize(
    ("mount", "yaw", "pitch", "slope"),
    [
        ("gimbal:90", 0.0, 90.0, None),
        ("gimbal:60", 30.0, 60.0, None),
        ("gimbal:70", 200.0, 70.0, (0.15, -0.1)),
    ],
)
def test_rendered_frames_match_the_exact_view_of_the_map(ortho, tmp_path, mount, yaw, pitch, slope):
    path, image, affine = ortho
    dem = write_dem(tmp_path / "dem.tif", slope) if slope else None
    scene = MapScene(path, dem, ground_msl=GROUND)
    k = default_intrinsics(FRAME, 60.0)
    renderer = MapRenderer(scene, k, CameraMount.parse(mount), FRAME)
    centre = (12.0, -7.0, 55.0)
    rendered = renderer.render(pose_at(*centre, yaw))
    expected = render_view(image, affine, k.K, centre, yaw, pitch, FRAME, slope or (0.0, 0.0))
    # the same picture to within interpolation, and much closer to it than to a view 0.5 m away
    error = compare(rendered, expected)
    shifted = render_view(
        image, affine, k.K, (centre[0] + 0.5, *centre[1:]), yaw, pitch, FRAME, slope or (0, 0)
    )
    print(
        f"{mount}: {error:.2f} DN from the exact view, {compare(rendered, shifted):.2f} DN from it 0.5 m east"
    )
    assert error < 1.0 and compare(rendered, shifted) > 5 * error


def test_exposure_varies_and_stays_bounded():
    model = ExposureModel(Exposure(gain_step=0.2, seed=1))
    frame = np.full((48, 64, 3), 128, np.uint8)
    means = [float(model(frame).mean()) for _ in range(200)]
    assert 0.75 * 128 - 2 <= min(means) < 120 and 136 < max(means) <= 1.25 * 128 + 2


def test_camera_delivers_at_its_rate_with_the_poses_time(ortho):
    path, _, _ = ortho
    renderer = MapRenderer(
        MapScene(path, ground_msl=GROUND), default_intrinsics(FRAME, 60.0), CameraMount(), FRAME
    )
    pose = pose_at(0.0, 0.0, 50.0, 0.0)
    camera = SimCamera(renderer, lambda: pose, 5.0, Exposure())
    camera.open()
    frames = [camera.read() for _ in range(6)]
    camera.close()
    assert all(f.timestamp == pose.t_unix and f.truth is None and f.telemetry is None for f in frames)
    assert camera.read() is None  # closed


def test_bad_maps_are_one_line_errors(tmp_path):
    with pytest.raises(GeolinkError, match="raster not found"):
        MapScene(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(GeolinkError, match="not a readable"):
        MapScene(tmp_path / "junk.tif")
    with pytest.raises(GeolinkError, match="camera rate"):
        SimCamera(None, lambda: None, 0.0, Exposure())
