"""The bundle's map store: native-resolution chunks written by ``index build``, read by windows."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from _index_fixtures import texture, write_geotiff

from geolink_edge.errors import GeolinkError
from geolink_edge.index import build, mapbuild
from geolink_edge.index.build import BuildConfig
from geolink_edge.index.search import TileIndex

GSD = 0.5
LEFT, TOP = 1000.0, 5000.0  # local metres of the raster's top-left corner
NODATA_ROWS = slice(0, 140)  # rows 0..139 of the left 70 columns are nodata
NODATA_COLS = slice(0, 70)


@pytest.fixture(scope="module")
def local_map(tmp_path_factory, tiny_onnx):
    """A 'local' raster at 0.5 m/px with a nodata corner, indexed with 128-px map chunks."""
    image = texture(300, 420, seed=3)
    image[image.sum(axis=2) == 0] = 1  # keep 0 for nodata only
    image[NODATA_ROWS, NODATA_COLS] = 0
    folder = tmp_path_factory.mktemp("mapstore")
    raster = write_geotiff(folder / "map.tif", image, gsd=GSD, crs=None, nodata=0, origin=(LEFT, TOP))
    mp = pytest.MonkeyPatch()
    mp.setattr(mapbuild, "CHUNK_PX", 128)
    try:
        conf = BuildConfig(tile_m=60.0, stride_m=30.0, crop_px=64, crs="local", min_valid=0.5)
        bundle = build.main(conf, tiny_onnx, folder / "bundle", ortho=[raster])
    finally:
        mp.undo()
    return bundle, image


def _xy(col: float, row: float) -> tuple[float, float]:
    """Local metres of the centre of raster pixel (col, row)."""
    return LEFT + (col + 0.5) * GSD, TOP - (row + 0.5) * GSD


def test_native_window_copies_the_raster(local_map):
    bundle, image = local_map
    index = TileIndex.load(bundle)
    assert index.map_gsd_m == GSD
    window = index.map_window(*_xy(249.5, 199.5), 40.0)  # 160 px, across four 128-px chunks
    assert window.image.shape == (160, 160, 3) and window.valid.all() and window.gsd_m == GSD
    assert np.allclose(window.pixel_to_xy, [[GSD, 0, _xy(170, 0)[0]], [0, -GSD, _xy(0, 120)[1]]])
    # A local raster at its own GSD is stored pixel for pixel: only JPEG's loss remains (this
    # texture's 4-px colour noise costs JPEG ~5.6 grey levels), and no shift fits better.
    errors = {
        (dr, dc): np.abs(window.image - image[120 + dr : 280 + dr, 170 + dc : 330 + dc].astype(float)).mean()
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
    }
    assert errors[0, 0] < 6.5 and min(errors, key=errors.get) == (0, 0)


def test_window_pixels_map_to_their_ground_position(local_map):
    bundle, image = local_map
    index = TileIndex.load(bundle)
    window = index.map_window(*_xy(200.3, 150.8), 30.0, gsd_m=0.37)
    u, v = 17.0, 101.0
    x, y = window.pixel_to_xy @ [u, v, 1.0]
    col, row = (x - LEFT) / GSD - 0.5, (TOP - y) / GSD - 0.5  # raster pixel under window pixel (u, v)
    expected = cv2.getRectSubPix(image.astype(np.float32), (1, 1), (col, row))[0, 0]
    assert np.abs(window.image[int(v), int(u)] - expected).max() < 25


def test_coarser_window_averages_like_inter_area(local_map):
    bundle, image = local_map
    index = TileIndex.load(bundle)
    centre = _xy(239.5, 159.5)  # windows over raster px 160..319 x 80..239
    stored = index.map_window(*centre, 40.0).image  # the store's own pixels there
    for gsd, factor in ((1.0, 2), (2.0, 4), (4.0, 8), (0.8, 1.6)):
        window = index.map_window(*centre, 40.0, gsd_m=gsd)
        size = round(160 / factor)
        assert window.image.shape == (size, size, 3) and window.valid.all()
        source = cv2.resize(image[80:240, 160:320], (size, size), interpolation=cv2.INTER_AREA)
        averaged = cv2.resize(stored, (size, size), interpolation=cv2.INTER_AREA)
        # As close to the source's average as averaging the stored pixels (reduced JPEG decoding
        # is a different low-pass, not a worse one), and never far from it.
        error = np.abs(window.image.astype(float) - source).mean()
        assert error < np.abs(averaged.astype(float) - source).mean() + 0.5, gsd
        assert np.abs(window.image.astype(float) - averaged).mean() < 3.5, gsd


def test_nodata_and_outside_are_invalid_never_an_error(local_map):
    bundle, image = local_map
    index = TileIndex.load(bundle)
    far = index.map_window(-1e6, 1e6, 20.0)
    assert not far.valid.any() and not far.image.any()
    # Straddling the raster's left edge and the nodata corner: valid exactly where imagery is.
    window = index.map_window(*_xy(29.5, 149.5), 25.0)  # raster cols -20..79, rows 100..199
    truth = np.zeros((100, 100), bool)
    truth[:, 20:] = True  # raster col 0 onwards
    truth[:40, :90] = False  # raster rows 100..139, cols ..69 are nodata
    assert np.array_equal(window.valid, truth)
    assert not window.image[~window.valid].any() and window.image[window.valid].any()


def test_store_skips_empty_chunks_and_is_described(local_map):
    bundle, _ = local_map
    described = json.loads((bundle / "map.json").read_text())
    assert described["chunk_px"] == 128 and described["width"] == 420 and described["height"] == 300
    assert (described["rows"], described["cols"]) == (3, 4)
    chunks = {(r, c): m for r, c, m in described["chunks"]}
    assert len(chunks) == 12  # the nodata corner covers no whole chunk
    assert chunks[(0, 0)] and chunks[(2, 3)] and not chunks[(1, 1)]  # edge chunks are padded
    assert not (bundle / "map" / "1_1.png").exists() and (bundle / "map" / "0_0.png").exists()


def test_tile_image_is_the_tiles_footprint(local_map):
    bundle, image = local_map
    index = TileIndex.load(bundle)
    tile = index.tile(len(index) - 1)  # bottom-right, clear of the nodata corner
    crop = index.tile_image(tile.id)
    assert crop.shape == (64, 64, 3) and tile.gsd_m == pytest.approx(60 / 64)
    x, y = tile.pixel_to_xy @ [-0.5, -0.5, 1.0]  # the crop's top-left corner
    c0, r0 = round((x - LEFT) / GSD), round((TOP - y) / GSD)
    truth = cv2.resize(image[r0 : r0 + 120, c0 : c0 + 120], (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(float) - truth).mean() < 5.0  # JPEG's loss on this texture, averaged


def test_old_bundle_is_refused_with_a_rebuild_hint(local_map, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(local_map[0], old)
    manifest = json.loads((old / "index.json").read_text())
    manifest["format"] = "geolink-edge/tile-index/1"
    (old / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(GeolinkError, match="rebuild it with geolink-edge index build"):
        TileIndex.load(old)


def test_window_size_and_gsd_are_checked(local_map):
    index = TileIndex.load(local_map[0])
    with pytest.raises(GeolinkError, match="positive"):
        index.map_window(0.0, 0.0, 10.0, gsd_m=0.0)
    with pytest.raises(GeolinkError, match="coarser GSD"):
        index.map_window(0.0, 0.0, 1e5, gsd_m=0.5)


def test_map_rows_resume_after_a_crash_and_shards_split_them(local_map, tiny_onnx, tmp_path, monkeypatch):
    bundle, _ = local_map
    raster = bundle.parent / "map.tif"
    monkeypatch.setattr(mapbuild, "CHUNK_PX", 128)
    conf = BuildConfig(tile_m=60.0, stride_m=30.0, crop_px=64, crs="local", min_valid=0.5)
    original, rendered = mapbuild._render_chunk, []

    def crash_in_second_row(workdir, grid, row, col, *rest):
        if row == 1 and col == 2:
            raise RuntimeError("power cut")
        rendered.append((row, col))
        return original(workdir, grid, row, col, *rest)

    monkeypatch.setattr(mapbuild, "_render_chunk", crash_in_second_row)
    with pytest.raises(RuntimeError, match="power cut"):
        build.main(conf, tiny_onnx, tmp_path / "resumed", ortho=[raster])
    assert [p.name for p in (tmp_path / ".resumed.partial").glob("map-row-*")] == ["map-row-00000.json"]
    monkeypatch.setattr(mapbuild, "_render_chunk", lambda *a: (rendered.append(a[2:4]), original(*a))[1])
    rendered.clear()
    build.main(conf, tiny_onnx, tmp_path / "resumed", ortho=[raster])
    assert {row for row, _ in rendered} == {1, 2}  # row 0 was kept from the first run
    for i in range(2):
        build.main(conf, tiny_onnx, tmp_path / "shards", ortho=[raster], shard=f"{i}/2")
    merged = build.merge(tmp_path / "shards", tmp_path / "merged")
    expected = json.loads((bundle / "map.json").read_text())
    for other in (tmp_path / "resumed", merged):
        assert json.loads((other / "map.json").read_text()) == expected
        for name in (bundle / "map").iterdir():
            assert (other / "map" / name.name).read_bytes() == name.read_bytes()
