"""Index sources: corner CSV, XYZ pyramid, rasters without CRS ('local'), nodata, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from _index_fixtures import LAT0, LON0, texture, write_corner_csv, write_geotiff, write_xyz

from geolink_edge.errors import GeolinkError
from geolink_edge.index import build
from geolink_edge.index.build import BuildConfig
from geolink_edge.index.search import TileIndex
from geolink_edge.index.sources import normalise_crs, open_sources, read_corner_csv

# About 1 m per pixel at LAT0.
DEG_PER_PX = (1 / 111_200.0, 1 / (111_320.0 * np.cos(np.radians(LAT0))))


def _assert_aligned(
    crop: np.ndarray, mosaic: np.ndarray, row: float, col: float, half: float, step: int
) -> None:
    """``crop`` matches the mosaic window centred at (row, col) better than windows ``step`` px off.

    The residual at the right place is JPEG noise on a busy texture; a shift of one crop pixel adds
    clearly more, so this pins the georeferencing to within a crop pixel.
    """

    def diff(dy: int, dx: int) -> float:
        r0, c0 = int(round(row - half)) + dy, int(round(col - half)) + dx
        size = int(round(2 * half))
        window = cv2.resize(
            mosaic[r0 : r0 + size, c0 : c0 + size], crop.shape[1::-1], interpolation=cv2.INTER_AREA
        )
        return float(np.abs(crop.astype(np.float32) - window.astype(np.float32)).mean())

    assert diff(0, 0) < 16
    assert diff(0, 0) + 1 < min(diff(-step, 0), diff(step, 0), diff(0, -step), diff(0, step))


def test_corner_csv_builds_a_seamless_mosaic(tiny_onnx, tmp_path):
    mosaic = texture(400, 400, seed=3)
    csv_path = write_corner_csv(tmp_path / "map", mosaic, LAT0, LON0, DEG_PER_PX, grid=2)
    out = build.main(
        BuildConfig(tile_m=100.0, stride_m=50.0, crop_px=50), tiny_onnx, tmp_path / "b", tiles_csv=csv_path
    )
    index = TileIndex.load(out)
    assert len(index) >= 36 and index.manifest["crs"] == "EPSG:4326"
    assert {t.source for t in index.tiles} == {"0_0.png", "0_1.png", "1_0.png", "1_1.png"}
    # A tile straddling the point where the four images meet equals the mosaic around its centre.
    junction = index.frame.to_enu(LAT0 - 200 * DEG_PER_PX[0], LON0 + 200 * DEG_PER_PX[1])[:2]
    tile = index.tile(int(index.ids_within(*junction, 36.0)[0]))
    row = int(round((LAT0 - tile.center_lat) / DEG_PER_PX[0]))
    col = int(round((tile.center_lon - LON0) / DEG_PER_PX[1]))
    assert 150 < row < 250 and 150 < col < 250
    _assert_aligned(index.tile_image(tile.id), mosaic, row, col, half=50, step=2)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("img/0_0.png,47.1,abc,47.0,8.6", "row 3: corner values must be numbers"),
        ("img/0_0.png,47.0,8.5,47.1,8.6", "row 3: corners must satisfy"),
        ("img/0_0.png,47.1", "row 3: 2 fields"),
        ("img/nope.png,47.1,8.5,47.0,8.6", "row 3: tile image 'img/nope.png' not found"),
    ],
)
def test_corner_csv_bad_row_is_named(tmp_path, row, message):
    csv_path = write_corner_csv(tmp_path, texture(64, 64), LAT0, LON0, DEG_PER_PX, grid=1)
    csv_path.write_text(csv_path.read_text() + row + "\n")
    with pytest.raises(GeolinkError, match=message):
        read_corner_csv(csv_path)


def test_corner_csv_needs_its_columns(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("file,lat,lon\na.png,1,2\n")
    with pytest.raises(GeolinkError, match="lacks column"):
        read_corner_csv(path)


def test_xyz_pyramid_tiles_match_web_mercator(tiny_onnx, tmp_path):
    import mercantile

    zoom = 18
    folder, mosaic = write_xyz(tmp_path / "xyz", zoom, LAT0, LON0, count=3)
    (folder / "17" / "1").mkdir(parents=True)  # a coarser level is present; the deepest one is used
    out = build.main(
        BuildConfig(tile_m=80.0, stride_m=40.0, crop_px=64), tiny_onnx, tmp_path / "b", xyz=folder
    )
    index = TileIndex.load(out)
    assert len(index) >= 16 and index.manifest["crs"] == "EPSG:3857"
    first = mercantile.tile(LON0, LAT0, zoom)
    left, top = mercantile.xy_bounds(first).left, mercantile.xy_bounds(first).top
    res = (mercantile.xy_bounds(first).right - left) / 256
    checked = 0
    for tile in index.tiles:
        x, y = mercantile.xy(tile.center_lon, tile.center_lat)
        col, row = (x - left) / res, (top - y) / res
        half = tile.tile_m / 2 / res / np.cos(np.radians(tile.center_lat))  # Mercator stretch
        if min(row, col) - half < 4 or max(row, col) + half > len(mosaic) - 4:
            continue  # the shifted windows of the check must stay inside the mosaic
        _assert_aligned(index.tile_image(tile.id), mosaic, row, col, half, step=3)
        checked += 1
    assert checked >= 4


def test_raster_without_crs_needs_crs_option(tiny_onnx, tmp_path):
    raster = write_geotiff(tmp_path / "plain.tif", texture(300, 300), crs=None, origin=(1000.0, 5000.0))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "geolink_edge.cli",
            "index",
            "build",
            "--model",
            str(tiny_onnx),
            "--out",
            str(tmp_path / "b"),
            "--ortho",
            str(raster),
            "--tile-m",
            "100",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "has no CRS" in result.stderr and "--crs" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "b").exists()
    conf = BuildConfig(tile_m=100.0, stride_m=50.0, crop_px=32, crs="local")
    index = TileIndex.load(build.main(conf, tiny_onnx, tmp_path / "b", ortho=[raster]))
    assert index.frame is None and index.crs == "local" and len(index) == 25
    tile = index.tile(0)
    assert tile.center_lat is None and tile.center_xy == (1050.0, 4950.0)  # raster metres, north-up
    assert np.allclose(tile.corners_crs, [(1000, 5000), (1100, 5000), (1100, 4900), (1000, 4900)])
    hits = index.search_xy(index.index.reconstruct_n(0, 1), 3, 1050.0, 4950.0, 60.0)
    assert set(hits.ids[0][hits.ids[0] >= 0]) <= {0, 1, 5, 6}


def test_nodata_is_skipped(tiny_onnx, tmp_path):
    image = texture(300, 400)
    image[:, 200:] = 0  # the east half is nodata
    raster = write_geotiff(
        tmp_path / "half.tif", image, crs="EPSG:32632", nodata=0, origin=(465000.0, 5247000.0)
    )
    out = build.main(
        BuildConfig(tile_m=100.0, stride_m=50.0, crop_px=32), tiny_onnx, tmp_path / "b", ortho=[raster]
    )
    tiles = json.loads((out / "tiles.json").read_text())
    assert tiles and max(max(c[0] for c in t["corners_crs"]) for t in tiles) <= 465000.0 + 200.0 + 1.0


def test_all_nodata_raster_is_refused_without_bundle(tiny_onnx, tmp_path):
    raster = write_geotiff(tmp_path / "empty.tif", np.zeros((200, 200, 3), np.uint8), nodata=0)
    with pytest.raises(GeolinkError, match="no tile is covered"):
        build.main(BuildConfig(tile_m=50.0, crop_px=32), tiny_onnx, tmp_path / "b", ortho=[raster])
    assert not (tmp_path / "b").exists()


def test_single_band_and_bad_crs_are_refused(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "grey.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="uint8",
        crs="EPSG:32632",
        transform=from_origin(0, 0, 1, 1),
    ) as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(GeolinkError, match="3\\+ bands"):
        open_sources([path])
    assert normalise_crs("epsg:32632") == "EPSG:32632" and normalise_crs("LOCAL") == "local"
    with pytest.raises(GeolinkError, match="--crs 'metres'"):
        normalise_crs("metres")


def test_sixteen_bit_raster_is_stretched_to_eight_bits(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    image = texture(128, 128, seed=5)
    path = tmp_path / "u16.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=128,
        height=128,
        count=3,
        dtype="uint16",
        crs="EPSG:32632",
        transform=from_origin(465000, 5247000, 1, 1),
    ) as ds:
        ds.write(image[..., ::-1].transpose(2, 0, 1).astype(np.uint16) * 16 + 1000)
    (layer,) = open_sources([path])
    bgr, valid = layer.read(0, 0, 128, 128, 128, 128)
    assert bgr.dtype == np.uint8 and valid.all() and bgr.std() > 40
    assert np.corrcoef(bgr.ravel().astype(float), image.ravel().astype(float))[0, 1] > 0.98


def _build_cli(tiny_onnx, out, *options) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "geolink_edge.cli", "index", "build", "--model", str(tiny_onnx)]
    command += ["--out", str(out), *map(str, options)]
    return subprocess.run(command, capture_output=True, text=True)


def test_truncated_geotiff_stops_the_build_in_one_line(tiny_onnx, tmp_path):
    import rasterio

    raster = write_geotiff(tmp_path / "map.tif", texture(600, 600))
    data = raster.read_bytes()
    raster.write_bytes(data[: len(data) // 2])  # the header and half the pixels survive
    with rasterio.open(raster) as ds:  # the file still opens: it fails only mid-read
        assert (ds.width, ds.height) == (600, 600)
    result = _build_cli(tiny_onnx, tmp_path / "b", "--ortho", raster, "--tile-m", "100")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "map.tif: read failed in the window" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "b").exists()


def test_broken_xyz_tile_is_left_out_with_a_warning(tiny_onnx, tmp_path):
    folder, _ = write_xyz(tmp_path / "xyz", 18, LAT0, LON0, count=3)
    broken = sorted((folder / "18").glob("*/*.png"))[4]  # the middle tile
    broken.write_bytes(broken.read_bytes()[:100])
    result = _build_cli(tiny_onnx, tmp_path / "b", "--xyz", folder, "--tile-m", "80")
    assert result.returncode == 0, result.stderr
    assert "warning: 1 tile image(s) could not be decoded and were left out" in result.stderr
    assert broken.name in result.stderr and len(TileIndex.load(tmp_path / "b")) > 0


def test_undecodable_csv_tile_is_left_out_and_counted(tmp_path, capsys):
    from geolink_edge.index.sources import unreadable_tiles

    csv_path = write_corner_csv(tmp_path, texture(128, 128), LAT0, LON0, DEG_PER_PX, grid=2)
    (tmp_path / "img" / "0_1.png").write_bytes(b"not an image")
    layers = read_corner_csv(csv_path)
    assert sorted(layer.name for layer in layers) == ["0_0.png", "1_0.png", "1_1.png"]
    unreadable_tiles(layers)
    assert "warning: 1 tile image(s) could not be decoded" in capsys.readouterr().err
    for name in ("0_0.png", "1_0.png", "1_1.png"):
        (tmp_path / "img" / name).write_bytes(b"")
    with pytest.raises(GeolinkError, match="none of its 4 tile images decode"):
        read_corner_csv(csv_path)
