"""The synthetic world: georeferencing, camera geometry, facades, point clouds, layout, flight, CLI."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest
import yaml

from geolink_edge import cli
from geolink_edge.data import pointclouds
from geolink_edge.data.synthetic import render, writer
from geolink_edge.data.synthetic.flight import footprint_radius
from geolink_edge.data.synthetic.georef import AreaGrid, read_geotiff
from geolink_edge.data.synthetic.pointcloud import dsm_point_cloud
from geolink_edge.data.synthetic.weather import WEATHER, apply_weather
from geolink_edge.errors import GeolinkError
from geolink_edge.geo import utm_epsg

SMALL = {
    "locations": 4,
    "views": 3,
    "size": 64,
    "tile_m": 100.0,
    "area_px": 1024,
    "flight_frames": 6,
    "flight_size": 96,
    "flight_altitude": 80.0,
    "workers": 1,
    "points": 1024,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    return writer.main(writer.SynthConfig(**SMALL), out)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _flat_surface(size=512, gsd=0.5, height=10.0):
    grid = AreaGrid.centred_on(47.0, 8.0, gsd, size, size)
    dsm = np.full((size, size), height, np.float32)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    ramps = np.stack([cols / size, rows / size, np.full_like(rows, 0.5)], -1)  # colour encodes position
    return grid, dsm, ramps


def test_geotiff_is_utm_and_location_lands_on_tile_centre(dataset):
    import rasterio

    loc = next(r for r in _rows(dataset / "locations.csv") if r["role"] == "query")
    with rasterio.open(dataset / "areas" / loc["area"] / "ortho.tif") as src:
        lat, lon = float(loc["lat"]), float(loc["lon"])
        assert src.crs.to_epsg() == utm_epsg(lat, lon)
        grid = AreaGrid.from_transform(src.crs.to_epsg(), src.transform, src.width, src.height)
        east, north = grid.from_latlon(lat, lon)
        assert abs(east - float(loc["x"])) < 1e-3 and abs(north - float(loc["y"])) < 1e-3
        row, col = src.index(float(east), float(north))
        ortho = np.moveaxis(src.read(), 0, -1)
    tile = cv2.cvtColor(
        cv2.imread(
            str(dataset / "test/gallery_satellite" / loc["location_id"] / f"{loc['location_id']}.jpg")
        ),
        cv2.COLOR_BGR2RGB,
    ).astype(np.float32)
    half = int(SMALL["tile_m"] / grid.gsd / 2)

    def score(dc, dr):
        crop = ortho[row + dr - half : row + dr + half, col + dc - half : col + dc + half]
        crop = cv2.resize(crop, tile.shape[:2][::-1], interpolation=cv2.INTER_AREA).astype(np.float32)
        return np.corrcoef(crop.ravel(), tile.ravel())[0, 1]

    centred = score(0, 0)
    assert centred > 0.9
    assert centred > score(int(15 / grid.gsd), 0) + 0.1  # 15 m off is clearly worse


def test_nadir_render_of_flat_dsm_follows_camera_convention():
    grid, dsm, ramps = _flat_surface()
    surface = render.Surface(grid, dsm, [ramps, cv2.pyrDown(ramps)])
    centre = np.array([*grid.local_to_crs(128.0, 128.0), 0.0])
    cam = render.make_camera(centre + [0, 0, 110.0], yaw=30.0, pitch=90.0, width=96, height=80, hfov_deg=50)
    image, hits = render.render(surface, cam, visibility_m=1e12)
    footprint_m = 100.0 / cam.K[0, 0]  # ground metres per image pixel
    rng = np.random.default_rng(0)
    for _ in range(20):  # a known ground point lands where K, R, C say, with its own colour
        x, y = rng.uniform(110, 146, 2)
        point = np.array([*grid.local_to_crs(x, y), 10.0])
        u, v = cam.project(point[None])[0]
        ui, vi = int(round(u)), int(round(v))
        if 0 <= ui < 96 and 0 <= vi < 80:
            error_m = (
                math.hypot(hits.col[vi, ui] - (x / grid.gsd - 0.5), hits.row[vi, ui] - (y / grid.gsd - 0.5))
                * grid.gsd
            )
            assert error_m < footprint_m * math.hypot(u - ui, v - vi) + 0.02  # only the pixel rounding
            rgb = image[vi, ui, ::-1] / 255.0
            assert abs(rgb[0] - (x / grid.gsd) / 512) < 0.01 and abs(rgb[1] - (y / grid.gsd) / 512) < 0.01
    # The hits re-project onto their own pixels; heading 30° puts the north-north-east at the top.
    pts = hits.crs_points(grid)
    uv = cam.project(pts).reshape(80, 96, 2)
    v_grid, u_grid = np.mgrid[0:80, 0:96]
    assert np.abs(uv[..., 0] - u_grid).max() < 0.6 and np.abs(uv[..., 1] - v_grid).max() < 0.6
    ahead = centre + [40 * math.sin(math.radians(30)), 40 * math.cos(math.radians(30)), 10.0]
    assert cam.project(ahead[None])[0, 1] < 10 and abs(cam.project(ahead[None])[0, 0] - 47.5) < 1


def test_oblique_view_of_tower_shows_facade_but_nadir_does_not():
    grid, dsm, ramps = _flat_surface(height=0.0)
    dsm[236:276, 236:276] = 60.0  # a 20 m × 20 m tower, 60 m tall
    facade = np.zeros((*dsm.shape, 3), np.uint8)
    facade[236:276, 236:276] = (200, 40, 40)
    surface = render.Surface(grid, dsm, [ramps], facade, np.zeros_like(dsm))
    target = (*grid.local_to_crs(128.0, 128.0), 0.0)
    oblique = render.orbit_camera(target, 80.0, 45.0, 200.0, 96, 60)
    image, hits = render.render(surface, oblique)
    assert hits.wall.mean() > 0.05
    wall_rgb = image[hits.wall][:, ::-1].astype(float)
    assert (wall_rgb[:, 0] > wall_rgb[:, 1] + 20).mean() > 0.3  # red facade (windows aside)
    nadir = render.make_camera((*target[:2], 200.0), 0.0, 90.0, 96, 96, 10)  # narrow, straight down
    assert render.cast(surface, nadir).wall.mean() < 0.01


def test_point_cloud_normalised_and_reproducible_from_files(dataset):
    loc = next(r for r in _rows(dataset / "locations.csv") if r["role"] == "train")
    stored = pointclouds.load(dataset / "pointclouds" / f"{loc['location_id']}.npz")
    assert stored.shape == (1024, 3) and stored.dtype == np.float32
    assert np.abs(stored.mean(0)).max() < 1e-5
    assert abs(np.linalg.norm(stored, axis=1).max() - 1.0) < 1e-5
    assert np.ptp(stored[:, 2]) > 0.02  # not a flat sheet: heights vary
    again = dsm_point_cloud(dataset, loc["location_id"], n_points=1024)
    assert np.allclose(again, stored, atol=1e-6)
    distractor = next(r for r in _rows(dataset / "locations.csv") if r["role"] == "distractor")
    with pytest.raises(GeolinkError, match="distractor"):
        dsm_point_cloud(dataset, distractor["location_id"])


def test_layout_cross_area_with_distractors(dataset):
    meta = json.loads((dataset / "dataset.json").read_text())
    assert not set(meta["splits"]["train"]) & set(meta["splits"]["test"])
    rows = _rows(dataset / "locations.csv")
    styles = {a["name"]: a["style"] for a in meta["areas"]}
    assert all(
        styles[r["area"]] in meta["splits"]["train" if r["split"] == "train" else "test"] for r in rows
    )
    gps = {r["location_id"] for r in _rows(dataset / "gps.csv")}
    assert gps == {r["location_id"] for r in rows}
    by_role = {
        role: {r["location_id"] for r in rows if r["role"] == role}
        for role in ("train", "query", "distractor")
    }
    assert len(by_role["train"]) == 2 and len(by_role["query"]) == 2 and len(by_role["distractor"]) >= 1

    def ids(folder):
        return {p.name for p in (dataset / folder).iterdir()}

    assert ids("train/drone") == ids("train/satellite") == by_role["train"]
    assert (
        ids("test/query_drone")
        == ids("test/gallery_drone")
        == ids("test/query_satellite")
        == by_role["query"]
    )
    assert ids("test/gallery_satellite") == by_role["query"] | by_role["distractor"]
    for r in rows:
        assert (dataset / "areas" / r["area"] / "dsm.tif").is_file()
        if r["role"] == "distractor":
            continue
        folder = dataset / ("train/drone" if r["role"] == "train" else "test/query_drone") / r["location_id"]
        cams = json.loads((folder / "cameras.json").read_text())
        assert [c["file"] for c in cams] == sorted(p.name for p in folder.glob("*.jpg"))
        for c in cams:  # every view orbits the location: it projects near the image centre
            assert 80 <= c["altitude"] <= 300 and 45 <= c["pitch"] <= 90
            cam = render.Camera.from_json(c)
            ground = c["C"][2] - c["altitude"]
            u, v = cam.project(np.array([[float(r["x"]), float(r["y"]), ground]]))[0]
            assert abs(u - 31.5) < 0.01 and abs(v - 31.5) < 0.01


def test_flight_ground_truth_matches_frames_and_stays_inside(dataset):
    flight = dataset / "flight"
    gt = _rows(flight / "gt.csv")
    frames = sorted((flight / "frames").glob("*.jpg"))
    assert len(gt) == len(frames) == SMALL["flight_frames"]
    assert cv2.imread(str(frames[0])).shape == (96, 96, 3)
    t = [float(r["timestamp"]) for r in gt]
    assert all(b > a for a, b in zip(t, t[1:], strict=False))
    meta = json.loads((flight / "flight.json").read_text())
    area = json.loads((dataset / "areas" / meta["area"] / "area.json").read_text())
    assert area["split"] == "test" and meta["epsg"] == area["epsg"]
    _, grid = read_geotiff(dataset / "areas" / meta["area"] / "dsm.tif")
    east, north = grid.from_latlon([float(r["lat"]) for r in gt], [float(r["lon"]) for r in gt])
    x, y = grid.crs_to_local(east, north)
    reach = footprint_radius(SMALL["flight_altitude"], 90.0, 60.0)
    size = grid.size_m[0]
    assert x.min() > reach and y.min() > reach and x.max() < size - reach and y.max() < size - reach
    steps = np.hypot(np.diff(x), np.diff(y))
    assert np.allclose(steps, steps.mean(), rtol=0.1)  # constant speed along a continuous path
    camera = yaml.safe_load((flight / "camera.yaml").read_text())
    assert camera["image_width"] == 96 and len(camera["camera_matrix"]["data"]) == 9


# two one-view locations in two areas: the smallest world that has a train and a test area
TWO_AREAS = {
    "locations": 2,
    "views": 1,
    "size": 48,
    "tile_m": 80.0,
    "area_px": 768,
    "workers": 1,
    "points": 1024,
    "styles": ["farmland", "suburb"],
}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    tiny = TWO_AREAS
    runs = [
        writer.main(writer.SynthConfig(**tiny, seed=s), tmp_path / f"run{i}") for i, s in enumerate((5, 5, 6))
    ]
    query = next(r["location_id"] for r in _rows(runs[0] / "locations.csv") if r["role"] == "query")
    for rel in (
        "train/drone/0001/image-01.jpg",
        "train/satellite/0001/0001.jpg",
        "gps.csv",
        "areas/train-00-farmland/ortho.tif",
        f"test/query_drone/{query}/cameras.json",
    ):
        assert (runs[0] / rel).read_bytes() == (runs[1] / rel).read_bytes(), rel
        assert (runs[0] / rel).read_bytes() != (runs[2] / rel).read_bytes(), rel
    a, b = (pointclouds.load(r / f"pointclouds/{query}.npz") for r in runs[:2])
    assert np.array_equal(a, b)


def test_cli_refuses_non_empty_out_and_bad_numbers(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    for argv in (
        ["synth", str(out)],
        ["synth", str(tmp_path / "new"), "--views", "0"],
        ["synth", str(tmp_path / "new"), "--styles", "suburb"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
    assert (out / "keep.txt").read_text() == "x" and not (tmp_path / "new").exists()


def test_weather_is_seeded_and_changes_the_image():
    rng = np.random.default_rng(0)
    image = cv2.resize(
        rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), (96, 96), interpolation=cv2.INTER_CUBIC
    )
    for name in WEATHER:
        a, b = apply_weather(image, name, 7), apply_weather(image, name, 7)
        assert a.shape == image.shape and np.array_equal(a, b), name
        assert np.abs(a.astype(int) - image).mean() > 2, name
    with pytest.raises(GeolinkError, match="unknown weather"):
        apply_weather(image, "hail", 0)


def test_map_in_another_season_and_coarser_leaves_the_flight_unchanged(tmp_path):
    """The harder cases: a winter map at 0.5 m/px under a 40 m flight rendered as by default."""
    import rasterio

    tiny = {
        **TWO_AREAS,
        "flight_frames": 2,
        "flight_size": 64,
        "flight_altitude": 40.0,
    }
    plain = writer.main(writer.SynthConfig(**tiny), tmp_path / "plain")
    hard = writer.main(writer.SynthConfig(**tiny, map_season="winter", map_gsd=0.5), tmp_path / "hard")
    for frame in sorted((plain / "flight" / "frames").glob("*.jpg")):
        assert frame.read_bytes() == (hard / "flight" / "frames" / frame.name).read_bytes()
    assert (plain / "flight" / "gt.csv").read_bytes() == (hard / "flight" / "gt.csv").read_bytes()

    def ortho(root, area):
        with rasterio.open(root / "areas" / area / "ortho.tif") as ds:
            return ds.read().transpose(1, 2, 0).astype(np.float32), ds.res, ds.transform

    for area, season in (("train-00-farmland", "same"), ("test-01-suburb", "winter")):
        fine, fine_res, fine_transform = ortho(plain, area)
        coarse, res, transform = ortho(hard, area)
        assert fine_res == (0.3, 0.3) and res == (0.5, 0.5) and coarse.shape == (461, 461, 3)
        assert (transform.c, transform.f) == (fine_transform.c, fine_transform.f)  # same corner
        shrunk = cv2.resize(fine, (461, 461), interpolation=cv2.INTER_AREA)
        difference = float(np.abs(shrunk - coarse).mean())
        if season == "same":
            assert difference < 1.0  # only averaged down
        else:
            assert difference > 20.0  # snow, bare trees, brown grass
        area_json = json.loads((hard / "areas" / area / "area.json").read_text())
        assert area_json["map"] == {"season": season, "gsd_m": 0.5}
    assert "map" not in json.loads((plain / "areas" / "test-01-suburb" / "area.json").read_text())


def test_map_options_are_checked(tmp_path, capsys):
    for extra, message in (
        (["--map-season", "monsoon"], "unknown season 'monsoon'"),
        (["--map-gsd", "0.1"], "finer than the world"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(["synth", str(tmp_path / "new"), *extra])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and message in err and "\n" not in err, err
    assert not (tmp_path / "new").exists()
