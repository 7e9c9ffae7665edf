"""Real-map quirks on tiny GeoTIFFs: palette rasters, alpha bands, nodata tags, an undeclared black
border (``--nodata``), and a CRS label that contradicts the coordinates (``--crs``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _index_fixtures import texture, utm_origin, write_geotiff

from geolink_edge.errors import GeolinkError
from geolink_edge.index import build
from geolink_edge.index.build import BuildConfig
from geolink_edge.index.search import TileIndex
from geolink_edge.index.sources import open_sources


def _write(path, bands: np.ndarray, colormap=None, colorinterp=None, **extra):
    """A UTM GeoTIFF of (count, H, W) uint8 bands; ``extra`` goes to the profile (nodata, photometric)."""
    import rasterio
    from rasterio.transform import from_origin

    count, height, width = bands.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype="uint8", crs="EPSG:32632")
    with rasterio.open(path, "w", transform=from_origin(*utm_origin(), 1.0, 1.0), **profile, **extra) as ds:
        ds.write(bands)
        if colormap is not None:
            ds.write_colormap(1, colormap)
        if colorinterp is not None:
            ds.colorinterp = colorinterp
    return path


def _palette_raster(path, indices: np.ndarray, colours: np.ndarray, **extra):
    table = {i: tuple(int(v) for v in colours[i]) for i in range(256)}
    return _write(path, indices[None], colormap=table, photometric="palette", **extra)


def test_palette_raster_is_expanded_to_rgb(tmp_path):
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (256, 3), dtype=np.uint8)  # RGB
    indices = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    indices[:10, :20] = 7
    path = _palette_raster(tmp_path / "pal.tif", indices, colours, nodata=7)  # the tag names an index
    (layer,) = open_sources([path])
    bgr, valid = layer.read(0, 0, 80, 64, 80, 64)
    assert np.array_equal(bgr[valid], colours[indices][..., ::-1][valid])  # exact at full size
    assert np.array_equal(~valid, indices == 7)
    (plain,) = open_sources([_palette_raster(tmp_path / "plain.tif", indices, colours)])
    half, _ = plain.read(0, 0, 80, 64, 40, 32)
    expected = colours[indices][..., ::-1].astype(float).reshape(32, 2, 40, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - expected).max() <= 1  # colours averaged, never indices


def test_one_band_without_palette_is_still_refused(tmp_path):
    path = _write(tmp_path / "grey.tif", np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(GeolinkError, match="no palette; an RGB raster"):
        open_sources([path])


def test_alpha_band_and_nodata_tag_mask_pixels(tmp_path):
    from rasterio.enums import ColorInterp

    image = texture(60, 60, seed=2)[..., ::-1].transpose(2, 0, 1)
    alpha = np.full((1, 60, 60), 255, np.uint8)
    alpha[0, :, :25] = 0
    rgba = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    path = _write(
        tmp_path / "rgba.tif",
        np.concatenate([image, alpha]),
        colorinterp=rgba,
        photometric="RGB",
        alpha="YES",
    )
    (layer,) = open_sources([path])
    _, valid = layer.read(0, 0, 60, 60, 60, 60)
    assert not valid[:, :25].any() and valid[:, 25:].all()

    tagged = image.copy()
    tagged[:, 40:] = 9
    path = _write(tmp_path / "tag.tif", tagged, nodata=9)
    (layer,) = open_sources([path])
    _, valid = layer.read(0, 0, 60, 60, 60, 60)
    assert not valid[40:].any() and valid[:40].all()


def test_declared_nodata_masks_tiles_and_the_map_store(tiny_onnx, tmp_path):
    """A black border without a nodata tag: imagery unless --nodata 0 says otherwise."""
    image = texture(200, 300, seed=4)
    image[image.sum(axis=2) == 0] = 1
    image[:, 150:] = 0  # the east half is an undeclared black border
    raster = write_geotiff(tmp_path / "border.tif", image, crs="EPSG:32632", origin=(465000.0, 5247000.0))
    conf = BuildConfig(tile_m=100.0, stride_m=50.0, crop_px=32)
    plain = TileIndex.load(build.main(conf, tiny_onnx, tmp_path / "plain", ortho=[raster]))
    masked_conf = conf.model_copy(update={"nodata": 0})
    masked = TileIndex.load(build.main(masked_conf, tiny_onnx, tmp_path / "masked", ortho=[raster]))
    # ENU is centred on the raster, so the border is x > 0; a tile centred at x = 0 is half border.
    assert {round(t.center_xy[0] / 50) for t in plain.tiles} == {-2, -1, 0, 1, 2}
    assert {round(t.center_xy[0] / 50) for t in masked.tiles} == {-2, -1}
    # The map store knows the border is not imagery.
    assert masked.map_window(-75.0, 0.0, 20.0).valid.all()
    assert not masked.map_window(75.0, 0.0, 20.0).valid.any()
    assert plain.map_window(75.0, 0.0, 20.0).valid.all()
    assert json.loads((tmp_path / "masked" / "index.json").read_text())["sources"] == ["border.tif"]


def test_metres_labelled_as_degrees_suggest_crs_and_crs_overrides(cli, tiny_onnx, tmp_path):
    image = texture(200, 200, seed=5)
    raster = write_geotiff(tmp_path / "mislabelled.tif", image, crs="EPSG:4326", origin=(465000.0, 5247000.0))
    common = ("--model", str(tiny_onnx), "--ortho", str(raster), "--tile-m", "100", "--crop-px", "32")
    bad = cli("index", "build", *common, "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "impossible in its geographic CRS EPSG:4326" in bad.stderr and "--crs" in bad.stderr
    assert not (tmp_path / "bad").exists()
    local = cli("index", "build", *common, "--out", str(tmp_path / "local"), "--crs", "local")
    assert local.returncode == 0, local.stderr
    index = TileIndex.load(tmp_path / "local")
    assert index.crs == "local" and index.tile(0).center_xy == (465050.0, 5246950.0)
    utm = cli("index", "build", *common, "--out", str(tmp_path / "utm"), "--crs", "EPSG:32632")
    assert utm.returncode == 0, utm.stderr
    index = TileIndex.load(tmp_path / "utm")
    assert index.crs == "EPSG:32632" and 47.0 < index.tile(0).center_lat < 47.5
