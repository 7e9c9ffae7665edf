"""A simulated camera: each frame rendered from a map at a vehicle's true pose.

The map is a GeoTIFF orthophoto (any CRS, read by windows, so a large one is never loaded whole)
and optionally a DEM (one band of heights above sea level, any CRS). Frames go through the
configured intrinsics (distortion included) and camera mount, with the vehicle's attitude.

How a pixel finds its ground: rays are cast on a grid every ``STRIDE`` pixels and interpolated
between. Without a DEM the ground is the plane at the launch height, so each ray meets it in one
division (the grid then holds a homography exactly, up to the distortion). With a DEM each ray is
marched from the DEM's highest to its lowest height and refined by bisection: the first sample under
the surface is the visible ground, so hills occlude what lies behind them (to within the grid).
Around the vehicle the map's CRS is replaced by its local affine fit, exact to millimetres over a
frame's footprint and valid for any CRS (UTM, geographic).

Exposure drifts slowly (a bounded random walk of the gain) and every frame gets read noise: the
runtime sees a camera, not the map's own pixels.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from geolink_edge.errors import GeolinkError, first_line, require
from geolink_edge.geo import LocalFrame
from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.mount import BodyAttitude, CameraMount, world_to_camera
from geolink_edge.runtime.sources import RawFrame

STRIDE = 8  # pixels between cast rays
MARCH_STEPS = 48  # samples along a ray between the DEM's highest and lowest heights
BISECTIONS = 6
AFFINE_SPAN_M = 100.0  # the local affine fit of the map's CRS uses points this far apart
SKY_BGR = (235, 206, 180)
MIN_DOWN = 0.02  # a ray this close to the horizon meets the ground beyond any footprint: sky


@dataclass(frozen=True)
class Pose:
    """The vehicle's true state: position (degrees, metres above sea level), attitude, when."""

    t_unix: float
    lat: float
    lon: float
    alt_msl: float
    body: BodyAttitude


@dataclass(frozen=True)
class Exposure:
    """Frame-to-frame variation: gain random walk (log σ per frame, bounded), read noise (DN)."""

    gain_step: float = 0.03
    gain_range: tuple[float, float] = (0.75, 1.25)
    noise_dn: float = 3.0
    seed: int = 0


def _crs_transformer(crs: str):
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def local_affine(to_pixel: Callable, frame: LocalFrame) -> np.ndarray:
    """2×3 map from (east, north) metres of ``frame`` to a raster's (col, row), fitted at its origin.

    ``to_pixel(lat, lon) -> (col, row)`` is the raster's exact map."""
    east = np.array([0.0, AFFINE_SPAN_M, 0.0])
    north = np.array([0.0, 0.0, AFFINE_SPAN_M])
    lat, lon, _ = frame.to_geodetic(east, north)
    col, row = to_pixel(lat, lon)
    col, row = np.asarray(col, float), np.asarray(row, float)
    return np.array(
        [
            [(col[1] - col[0]) / AFFINE_SPAN_M, (col[2] - col[0]) / AFFINE_SPAN_M, col[0]],
            [(row[1] - row[0]) / AFFINE_SPAN_M, (row[2] - row[0]) / AFFINE_SPAN_M, row[0]],
        ]
    )


class Dem:
    """Heights above sea level on a raster grid, held in memory (DEMs are coarse), sampled bilinearly."""

    def __init__(self, path: Path):
        rasterio = require("rasterio", "reading a DEM needs rasterio: pip install rasterio")
        path = Path(path)
        if not path.is_file():
            raise GeolinkError(f"{path}: DEM not found")
        try:
            with rasterio.open(path) as src:
                if src.crs is None or src.transform.is_identity:
                    raise GeolinkError(f"{path}: DEM is not georeferenced (no CRS or geotransform)")
                heights = src.read(1, masked=True).astype(np.float32)
                crs, transform = src.crs.to_wkt(), src.transform
        except rasterio.errors.RasterioError as exc:
            raise GeolinkError(f"{path}: not a readable DEM ({first_line(exc, 120)})") from None
        if heights.count() == 0:
            raise GeolinkError(f"{path}: DEM has no valid heights")
        self.zmin, self.zmax = float(heights.min()), float(heights.max())
        self.heights = np.ascontiguousarray(heights.filled(self.zmin))
        self._inverse = ~transform
        self._to_crs = _crs_transformer(crs)

    def to_pixel(self, lat, lon):
        """(col, row) with pixel centres at integers (what cv2.remap samples)."""
        x, y = self._to_crs.transform(lon, lat)
        t = self._inverse
        x, y = np.asarray(x, float), np.asarray(y, float)
        return t.a * x + t.b * y + t.c - 0.5, t.d * x + t.e * y + t.f - 0.5

    def at(self, lat: float, lon: float) -> float:
        col, row = self.to_pixel(lat, lon)
        return float(self.sample(np.array([[col]], np.float32), np.array([[row]], np.float32))[0, 0])

    def sample(self, col: np.ndarray, row: np.ndarray) -> np.ndarray:
        return cv2.remap(
            self.heights, col.astype(np.float32), row.astype(np.float32), cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip


class MapScene:
    """What the camera looks at: an orthophoto and the ground under it (a DEM, else a level plane)."""

    def __init__(self, ortho: Path, dem: Path | None = None, ground_msl: float | None = None):
        from geolink_edge.index.sources import RasterLayer

        self.ortho = RasterLayer(Path(ortho))
        self._to_crs = _crs_transformer(self.ortho.crs)
        self.dem = Dem(dem) if dem is not None else None
        self.ground_msl = ground_msl

    def to_pixel(self, lat, lon):
        """Orthophoto (col, row) of geodetic points, pixel centres at integers."""
        x, y = self._to_crs.transform(lon, lat)
        col, row = self.ortho.crs_to_pixel(x, y)
        return col - 0.5, row - 0.5

    def centre(self) -> tuple[float, float]:
        """(lat, lon) of the orthophoto's centre."""
        from pyproj import Transformer

        x, y = self.ortho.pixel_to_crs(self.ortho.width / 2, self.ortho.height / 2)
        lon, lat = Transformer.from_crs(self.ortho.crs, "EPSG:4326", always_xy=True).transform(x, y)
        return float(lat), float(lon)

    def contains(self, lat: float, lon: float, margin_m: float) -> bool:
        """Whether a point lies on the orthophoto at least ``margin_m`` from its edges."""
        affine = local_affine(self.to_pixel, LocalFrame(lat, lon))
        col, row = affine[:, 2]
        margin_px = margin_m * float(np.abs(affine[:, :2]).max())
        w, h = self.ortho.width, self.ortho.height
        return margin_px <= col <= w - 1 - margin_px and margin_px <= row <= h - 1 - margin_px

    def ground_at(self, lat: float, lon: float) -> float:
        """Height of the ground above sea level (the DEM's, else the level plane's)."""
        if self.dem is not None:
            return self.dem.at(lat, lon)
        return self.ground_msl or 0.0


class MapRenderer:
    """Renders ``scene`` through a camera model of ``size`` pixels fixed on ``mount``."""

    def __init__(self, scene: MapScene, intrinsics: Intrinsics, mount: CameraMount, size: tuple[int, int]):
        self.scene, self.mount = scene, mount
        self.width, self.height = size
        self.intrinsics = intrinsics.for_size(*size)
        # cast-ray grid: every STRIDE pixels and the last row and column
        us = np.unique(np.r_[np.arange(0, self.width, STRIDE), self.width - 1]).astype(np.float64)
        vs = np.unique(np.r_[np.arange(0, self.height, STRIDE), self.height - 1]).astype(np.float64)
        grid = np.stack(np.meshgrid(us, vs), -1).reshape(-1, 2)
        ideal = self.intrinsics.undistort_points(grid)  # a pixel's ray: the ideal pinhole's pixel
        k = self.intrinsics
        self._rays = np.stack(
            [(ideal[:, 0] - k.cx) / k.fx, (ideal[:, 1] - k.cy) / k.fy, np.ones(len(grid))], -1
        )
        self._grid_shape = (len(vs), len(us))
        # full-resolution pixel → fractional grid index, for interpolating what the grid found
        gx = np.interp(np.arange(self.width), us, np.arange(len(us)))
        gy = np.interp(np.arange(self.height), vs, np.arange(len(vs)))
        self._up_x, self._up_y = (a.astype(np.float32) for a in np.meshgrid(gx, gy))

    def camera_angles(self, body: BodyAttitude) -> tuple[float, float, float]:
        angles = self.mount.camera(body)
        assert angles is not None
        return angles

    def ground_points(self, pose: Pose) -> tuple[np.ndarray, np.ndarray, LocalFrame]:
        """East/north (m, in a frame at the vehicle) where the grid's rays meet the ground; sky = NaN."""
        frame = LocalFrame(pose.lat, pose.lon)
        rotation = world_to_camera(*self.camera_angles(pose.body))
        d = self._rays @ rotation  # camera → ENU directions
        down = -d[:, 2]
        sky = down < MIN_DOWN * np.linalg.norm(d, axis=1)
        down = np.where(sky, 1.0, down)
        if self.scene.dem is None:
            t = (pose.alt_msl - self.scene.ground_at(pose.lat, pose.lon)) / down
        else:
            t = self._march(pose, frame, d, down)
        t = np.where(sky | (t <= 0), np.nan, t)
        return t * d[:, 0], t * d[:, 1], frame

    def _march(self, pose: Pose, frame: LocalFrame, d: np.ndarray, down: np.ndarray) -> np.ndarray:
        """Distance along each ray to the first sample under the DEM, refined by bisection."""
        dem = self.scene.dem
        affine = local_affine(dem.to_pixel, frame)

        def under(t: np.ndarray) -> np.ndarray:
            east, north = t * d[:, 0:1], t * d[:, 1:2]
            col = affine[0, 0] * east + affine[0, 1] * north + affine[0, 2]
            row = affine[1, 0] * east + affine[1, 1] * north + affine[1, 2]
            return pose.alt_msl - t * down[:, None] <= dem.sample(col, row)

        t0 = np.maximum((pose.alt_msl - dem.zmax) / down, 0.0)
        t1 = np.maximum((pose.alt_msl - dem.zmin) / down, t0 + 1e-3)
        steps = t0[:, None] + (t1 - t0)[:, None] * np.linspace(0.0, 1.0, MARCH_STEPS + 1)[None, :]
        hit = under(steps)
        hit[:, -1] = True  # at the lowest height every ray is under the surface
        first = hit.argmax(axis=1)
        hi = steps[np.arange(len(d)), first]
        lo = np.where(first > 0, steps[np.arange(len(d)), np.maximum(first - 1, 0)], hi)
        for _ in range(BISECTIONS):
            mid = (lo + hi) / 2
            below = under(mid[:, None])[:, 0]
            hi, lo = np.where(below, mid, hi), np.where(below, lo, mid)
        return hi

    def render(self, pose: Pose) -> np.ndarray:
        """The BGR frame the camera takes at ``pose`` (no exposure or noise: see :class:`SimCamera`)."""
        east, north, frame = self.ground_points(pose)
        affine = local_affine(self.scene.to_pixel, frame)
        col = affine[0, 0] * east + affine[0, 1] * north + affine[0, 2]
        row = affine[1, 0] * east + affine[1, 1] * north + affine[1, 2]
        shape = self._grid_shape
        col_full = cv2.remap(col.reshape(shape).astype(np.float32), self._up_x, self._up_y, cv2.INTER_LINEAR)
        row_full = cv2.remap(row.reshape(shape).astype(np.float32), self._up_x, self._up_y, cv2.INTER_LINEAR)
        sky = ~np.isfinite(col_full)
        return self._sample(col_full, row_full, sky, map_px_per_pixel(col, row, shape))

    def _sample(self, col: np.ndarray, row: np.ndarray, sky: np.ndarray, scale: float) -> np.ndarray:
        """Read the orthophoto window under the frame (averaged down when the frame is coarser) and
        remap it; sky and off-map pixels get the sky's colour."""
        ortho = self.scene.ortho
        seen = ~sky
        out = np.empty((self.height, self.width, 3), np.uint8)
        out[:] = SKY_BGR
        if not seen.any():
            return out
        c0 = max(int(math.floor(np.nanmin(col[seen]))) - 1, 0)
        r0 = max(int(math.floor(np.nanmin(row[seen]))) - 1, 0)
        c1 = min(int(math.ceil(np.nanmax(col[seen]))) + 2, ortho.width)
        r1 = min(int(math.ceil(np.nanmax(row[seen]))) + 2, ortho.height)
        if c1 <= c0 or r1 <= r0:
            return out
        factor = max(1, int(scale))  # read at about one map pixel per frame pixel
        out_w, out_h = max(1, (c1 - c0) // factor), max(1, (r1 - r0) // factor)
        window, valid = ortho.read(c0, r0, c1 - c0, r1 - r0, out_w, out_h)
        window = np.where(valid[..., None], window, np.uint8(SKY_BGR)).astype(np.uint8)
        sx, sy = (c1 - c0) / out_w, (r1 - r0) / out_h
        map_x = np.where(seen, (col - c0 + 0.5) / sx - 0.5, -1e6).astype(np.float32)
        map_y = np.where(seen, (row - r0 + 0.5) / sy - 0.5, -1e6).astype(np.float32)
        return cv2.remap(window, map_x, map_y, cv2.INTER_LINEAR, dst=out, borderMode=cv2.BORDER_TRANSPARENT)


def map_px_per_pixel(col: np.ndarray, row: np.ndarray, shape: tuple[int, int]) -> float:
    """Median orthophoto pixels per frame pixel along the grid's rows (how coarse the frame is)."""
    c, r = col.reshape(shape), row.reshape(shape)
    step = np.hypot(np.diff(c, axis=1), np.diff(r, axis=1)) / STRIDE
    step = step[np.isfinite(step)]
    return float(np.median(step)) if step.size else 1.0


class ExposureModel:
    """Gain drifting by a bounded random walk, read noise on every pixel."""

    def __init__(self, conf: Exposure):
        self.conf = conf
        self.rng = np.random.default_rng(conf.seed)
        self.gain = 1.0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        lo, hi = self.conf.gain_range
        self.gain = float(np.clip(self.gain * math.exp(self.rng.normal(0.0, self.conf.gain_step)), lo, hi))
        noise = self.rng.standard_normal(image.shape, dtype=np.float32) * np.float32(self.conf.noise_dn)
        return np.clip(image.astype(np.float32) * self.gain + noise, 0, 255).astype(np.uint8)


class SimCamera:
    """A live camera (the runtime's Reader protocol) whose frames are rendered at the latest pose.

    ``pose()`` returns the vehicle's newest true pose (None until one is known); frames come at
    ``rate_hz`` and carry the pose's time as their sensor timestamp, like a camera that stamps its
    exposures. Nothing else about the truth leaves this object.
    """

    live = True
    fps = None

    def __init__(
        self, renderer: MapRenderer, pose: Callable[[], Pose | None], rate_hz: float, exposure: Exposure
    ):
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise GeolinkError(f"camera rate must be a positive number of frames per second, got {rate_hz}")
        self.renderer, self.pose, self.period = renderer, pose, 1.0 / rate_hz
        self.exposure = ExposureModel(exposure)
        self.render_ms: list[float] = []
        self._next = 0.0
        self._closed = threading.Event()

    def open(self) -> None:
        self._closed.clear()
        self._next = time.monotonic()

    def read(self) -> RawFrame | None:
        while not self._closed.is_set():
            wait = self._next - time.monotonic()
            if wait > 0:
                self._closed.wait(wait)
                continue
            self._next = max(self._next + self.period, time.monotonic() - self.period)
            pose = self.pose()
            if pose is None:
                continue
            t0 = time.perf_counter()
            image = self.exposure(self.renderer.render(pose))
            self.render_ms.append((time.perf_counter() - t0) * 1e3)
            return RawFrame(image, timestamp=pose.t_unix)
        return None

    def close(self) -> None:
        self._closed.set()


def default_intrinsics(size: tuple[int, int], hfov_deg: float) -> Intrinsics:
    """A distortion-free camera of ``size`` pixels with a horizontal field of view of ``hfov_deg``."""
    width, height = size
    f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, (), width, height)


def intrinsics_yaml(k: Intrinsics) -> str:
    """ROS camera_info YAML of ``k`` (what ``--intrinsics`` reads)."""
    dist = list(k.dist) or [0.0] * 5
    return (
        f"image_width: {k.width}\nimage_height: {k.height}\ncamera_name: simulated\n"
        f"camera_matrix:\n  rows: 3\n  cols: 3\n"
        f"  data: [{k.fx:.6f}, 0, {k.cx:.6f}, 0, {k.fy:.6f}, {k.cy:.6f}, 0, 0, 1]\n"
        f"distortion_model: plumb_bob\ndistortion_coefficients:\n  rows: 1\n  cols: {len(dist)}\n"
        f"  data: [{', '.join(f'{v:.8g}' for v in dist)}]\n"
    )
