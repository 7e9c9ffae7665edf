"""Tile index: build from a GeoTIFF with a real (tiny, ONNX) encoder, geometry, search, resume, shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _index_fixtures import LAT0, UTM, texture, utm_origin, write_geotiff

from geolink_edge.errors import GeolinkError
from geolink_edge.geo import haversine_m
from geolink_edge.index import build
from geolink_edge.index.build import BuildConfig, choose_index, make_faiss
from geolink_edge.index.bundle import INDEX_FAISS, Tile, write_metadata
from geolink_edge.index.search import CentreGrid, TileIndex

TILE_M, GSD = 150.0, 1.0


@pytest.fixture(scope="module")
def ortho(tmp_path_factory):
    """A 700 m x 600 m UTM orthophoto at 1 m/px with a white 5 px marker at a known place."""
    image = texture(600, 700, seed=1)
    image[298:303, 398:403] = 255  # marker centred on pixel (400, 300)
    return write_geotiff(tmp_path_factory.mktemp("ortho") / "map.tif", image, gsd=GSD), image


@pytest.fixture(scope="module")
def bundle(ortho, tiny_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "geotiff"
    return build.main(BuildConfig(tile_m=TILE_M, stride_m=50.0, crop_px=96), tiny_onnx, out, ortho=[ortho[0]])


def test_bundle_manifest_and_files(bundle, tiny_onnx):
    from geolink_edge.backends import load_embedder

    manifest = json.loads((bundle / "index.json").read_text())
    card = load_embedder(tiny_onnx).card
    assert manifest["model_hash"] == card.weights_hash and manifest["descriptor_dim"] == card.descriptor_dim
    assert manifest["crs"] == UTM and manifest["metric"] == "ip" and manifest["faiss_type"] == "Flat"
    assert manifest["tiling"]["tile_m"] == TILE_M and manifest["tiling"]["stride_m"] == 50.0
    # a 12 x 10 grid at stride 50; ENU is rotated ~1.3° from UTM grid north, so border tiles lose a sliver.
    assert 100 <= manifest["count"] <= 12 * 10
    described = json.loads((bundle / "map.json").read_text())
    assert manifest["map_gsd_m"] == pytest.approx(GSD, rel=0.01) == described["gsd_m"]
    # The rotated UTM raster leaves black slivers in the ENU grid: every chunk has a validity mask.
    expected = [f"{r}_{c}{suffix}" for r, c, m in described["chunks"] for suffix in (".jpg", ".png")[: 1 + m]]
    assert sorted(p.name for p in (bundle / "map").iterdir()) == sorted(expected)
    assert all(masked for _, _, masked in described["chunks"])
    assert not (bundle / "crops").exists()
    assert not list(bundle.parent.glob(".geotiff*"))  # work folder removed after success


def test_raster_window_found_at_rank_1(bundle, ortho, tiny_onnx):
    """A view cut straight from the raster (not the stored crop) retrieves its tile first."""
    from geolink_edge.backends import load_embedder

    index = TileIndex.load(bundle)
    embedder = load_embedder(tiny_onnx)
    index.check_model(embedder.card.weights_hash)
    east0, north0 = utm_origin()
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    hits = []
    for tile_id in range(0, len(index), 7):
        tile = index.tile(tile_id)
        east, north = to_utm.transform(tile.center_lon, tile.center_lat)
        col, row = int(round(east - east0 - TILE_M / 2)), int(round(north0 - north - TILE_M / 2))
        view = ortho[1][max(row, 0) : row + int(TILE_M), max(col, 0) : col + int(TILE_M)]
        result = index.search(embedder.embed([view]), k=3)
        hits.append(result.ids[0, 0] == tile_id)
        assert result.tiles[0][0].id == result.ids[0, 0]
    assert np.mean(hits) == 1.0


def test_tile_geometry_matches_pyproj(bundle):
    from pyproj import Transformer

    index = TileIndex.load(bundle)
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    for tile in index.tiles:
        lat, lon = np.array(tile.corners_latlon).T
        east, north = to_utm.transform(lon, lat)
        assert np.allclose(np.stack([east, north], 1), tile.corners_crs, atol=0.01)
        # North-up square of TILE_M: TL→TR runs east, TL→BL runs south, both TILE_M long.
        assert abs(haversine_m(lat[0], lon[0], lat[1], lon[1]) - TILE_M) < 0.5
        assert abs(haversine_m(lat[0], lon[0], lat[3], lon[3]) - TILE_M) < 0.5
        assert abs(lat[0] - lat[1]) < 1e-6 and abs(lon[0] - lon[3]) < 1e-6  # edges along parallel / meridian
        cx, cy = index.frame.to_enu(tile.center_lat, tile.center_lon)[:2]
        assert np.allclose((cx, cy), tile.center_xy, atol=1e-3)
        assert tile.gsd_m == pytest.approx(TILE_M / 96)


def test_marker_pixel_maps_to_its_utm_position(bundle):
    """The white marker's pixel in a crop, through pixel_to_xy, lands on its UTM position."""
    from pyproj import Transformer

    index = TileIndex.load(bundle)
    east0, north0 = utm_origin()
    marker_utm = (east0 + 400.5 * GSD, north0 - 300.5 * GSD)  # centre of pixel (400, 300)
    to_ll = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(*marker_utm)
    marker_xy = index.frame.to_enu(lat, lon)[:2]
    checked = 0
    for tile_id in index.ids_within(*marker_xy, 40.0):
        # The crop is resampled twice (raster → map store → tile GSD), so the 5 px marker is a
        # slightly blurred white blob: take its brightest pixels.
        darkest_channel = index.tile_image(tile_id).min(axis=2).astype(int)
        assert darkest_channel.max() > 230, f"tile {tile_id} should show the marker"
        white = np.argwhere(darkest_channel >= darkest_channel.max() - 15)
        v, u = white.mean(axis=0)
        x, y = index.tile(tile_id).pixel_to_xy @ [u, v, 1.0]
        assert np.hypot(x - marker_xy[0], y - marker_xy[1]) < 1.0  # under one source pixel
        checked += 1
    assert checked >= 2


def test_prior_gated_search_stays_in_radius_and_is_exact(bundle, tiny_onnx):
    from geolink_edge.backends import load_embedder

    index = TileIndex.load(bundle)
    query = load_embedder(tiny_onnx).embed([index.tile_image(10)])
    vectors = index.index.reconstruct_n(0, len(index))
    for tile_id in (0, 30, 60):
        tile = index.tile(tile_id)
        result = index.search(query, k=5, near=(tile.center_lat, tile.center_lon, 120.0))
        inside = [
            t
            for t in index.tiles
            if haversine_m(t.center_lat, t.center_lon, tile.center_lat, tile.center_lon) <= 120.0
        ]
        expected = sorted(inside, key=lambda t: -float(vectors[t.id] @ query[0]))[:5]
        assert [t.id for t in result.tiles[0]] == [t.id for t in expected]
        assert all(
            haversine_m(t.center_lat, t.center_lon, tile.center_lat, tile.center_lon) <= 120.5
            for t in result.tiles[0]
        )


def test_mmap_load_gives_same_results(bundle):
    mapped, loaded = TileIndex.load(bundle, mmap=True), TileIndex.load(bundle, mmap=False)
    queries = loaded.index.reconstruct_n(0, 8)
    a, b = mapped.search(queries, 4), loaded.search(queries, 4)
    assert np.array_equal(a.ids, b.ids) and np.allclose(a.scores, b.scores)
    assert np.array_equal(a.ids[:, 0], np.arange(8))


def test_model_mismatch_is_refused_naming_both(bundle):
    index = TileIndex.load(bundle)
    with pytest.raises(GeolinkError, match=f"{index.model_hash[:12]}.*{'f' * 12}"):
        index.check_model("f" * 64)


def _grid_bundle(root, vectors, xy, factory, params=""):
    root.mkdir()
    index = make_faiss(factory, vectors.shape[1])
    index.train(vectors)
    index.add(vectors)
    import faiss

    faiss.write_index(index, str(root / INDEX_FAISS))
    tiles = [
        Tile(
            i,
            None,
            None,
            (float(x), float(y)),
            None,
            ((0.0, 0.0),) * 4,
            1.0,
            1.0,
            10.0,
            "grid",
            (0, 0, 1, 1),
            np.eye(2, 3),
        )
        for i, (x, y) in enumerate(xy)
    ]
    write_metadata(
        root, {"crs": "local", "origin": None, "tiling": {"stride_m": 10.0}, "faiss_params": params}, tiles
    )
    return TileIndex.load(root)


def test_auto_index_is_compact_beyond_a_hundred_thousand_tiles():
    """Float vectors of 1M 4096-d tiles are 16 GB; the compact type keeps 768 bytes of each."""
    assert choose_index("auto", 100_000, 4096) == ("Flat", "")
    assert choose_index("auto", 1_000_000, 4096) == ("PCA768,IVF4000,SQ8", "nprobe=16")
    assert choose_index("compact", 2000, 32)[0] == "IVF51,SQ8"  # short descriptors are not reduced
    assert choose_index("compact", 1000, 4096)[0] == "IVF25,SQ8"  # too few tiles to train a 768-d PCA


@pytest.mark.parametrize("preset", ["flat", "sq8", "hnsw", "ivfpq", "compact", "PCA16,HNSW32,SQ8"])
def test_gated_search_is_exact_for_every_index_type(tmp_path, preset):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    xy = rng.uniform(0, 2000, (2000, 2))
    factory, params = choose_index(preset, len(vectors), 32)
    index = _grid_bundle(tmp_path / preset.replace(",", "_"), vectors, xy, factory, params)
    gated, queries = index._gated, vectors
    if hasattr(gated, "chain"):  # a PCA-reduced index scores in the reduced space
        gated, queries = gated.inner, gated.chain[0].apply(vectors)
    stored = gated.reconstruct_n(0, len(index))  # the codes the gated search scores with
    for q in range(5):
        centre = xy[q * 100]
        result = index.search_xy(vectors[q : q + 1], 10, *centre, 150.0)
        inside = np.flatnonzero(np.hypot(*(xy - centre).T) <= 150.0)
        expected = inside[np.argsort(-(stored[inside] @ queries[q]))][:10]
        assert np.array_equal(result.ids[0][: len(expected)], expected)
        assert np.all(np.hypot(*(xy[result.ids[0][result.ids[0] >= 0]] - centre).T) <= 150.0)


def test_centre_grid_matches_brute_force():
    rng = np.random.default_rng(1)
    xy = rng.uniform(-5000, 5000, (20000, 2))
    grid = CentreGrid(xy, 200.0)
    for x, y, r in [(0, 0, 300), (4900, -4900, 800), (-7000, 0, 2500), (1, 2, 0), (0, 0, 20000)]:
        truth = np.flatnonzero(np.hypot(xy[:, 0] - x, xy[:, 1] - y) <= r)
        assert np.array_equal(grid.within(x, y, r), truth)
    with pytest.raises(GeolinkError, match="radius"):
        grid.within(0, 0, -1)


def test_empty_prior_region_gives_padded_result(tmp_path):
    vectors = np.eye(8, dtype=np.float32)
    index = _grid_bundle(tmp_path / "b", vectors, np.arange(16).reshape(8, 2) * 10.0, "Flat")
    result = index.search_xy(vectors[:2], 3, 1e6, 1e6, 10.0)
    assert result.ids.shape == (2, 3) and (result.ids == -1).all() and np.isneginf(result.scores).all()
    assert result.tiles == [[], []]
    with pytest.raises(GeolinkError, match="local frame"):
        index.search(vectors[:1], 3, near=(LAT0, 8.5, 100.0))


def test_tile_table_reads_its_lines_or_any_json_list(tmp_path):
    vectors = np.eye(8, dtype=np.float32)
    index = _grid_bundle(tmp_path / "b", vectors, np.arange(16).reshape(8, 2) * 10.0, "Flat")
    path = tmp_path / "b" / "tiles.json"
    lines = path.read_text().splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 10  # one line per tile
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2))  # laid out otherwise
    again = TileIndex.load(tmp_path / "b")
    assert np.array_equal(again.centers_xy, index.centers_xy) and again.tile(7).center_xy == (140.0, 150.0)
    path.write_text("\n".join([*lines[:3], '{"id": 2, "center_xy": [20, 30], oops},', *lines[4:]]))
    with pytest.raises(GeolinkError, match="tile at position 2 is not JSON"):
        TileIndex.load(tmp_path / "b")


def test_resume_reuses_finished_chunks(ortho, tiny_onnx, tmp_path, monkeypatch):
    """A crash mid-build leaves no bundle; the rerun reuses the chunks already written."""
    monkeypatch.setattr(build, "CHUNK_TILES", 16)
    conf = BuildConfig(tile_m=TILE_M, stride_m=50.0, crop_px=48)
    original, calls = build._embed_chunk, []

    def crash_on_third_chunk(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return original(*args, **kwargs)

    monkeypatch.setattr(build, "_embed_chunk", crash_on_third_chunk)
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError, match="power cut"):
        build.main(conf, tiny_onnx, out, ortho=[ortho[0]])
    assert not out.exists()
    work = tmp_path / ".bundle.partial"
    assert sorted(p.name for p in work.glob("chunk-*")) == ["chunk-000000.npz", "chunk-000001.npz"]
    calls.clear()
    monkeypatch.setattr(build, "_embed_chunk", lambda *a, **k: (calls.append(a[1]), original(*a, **k)))
    build.main(conf, tiny_onnx, out, ortho=[ortho[0]])
    assert calls and min(calls) == 2  # chunks 0 and 1 reused, the rest embedded
    assert json.loads((out / "index.json").read_text())["count"] > 32 and not work.exists()


def test_shards_merge_into_the_same_bundle(ortho, bundle, tiny_onnx, tmp_path):
    conf = BuildConfig(tile_m=TILE_M, stride_m=50.0, crop_px=96)
    for i in range(2):
        build.main(conf, tiny_onnx, tmp_path / "shards", ortho=[ortho[0]], shard=f"{i}/2")
    merged = build.merge(tmp_path / "shards", tmp_path / "merged")
    a, b = TileIndex.load(merged), TileIndex.load(bundle)
    assert len(a) == len(b)
    assert np.allclose(a.index.reconstruct_n(0, len(a)), b.index.reconstruct_n(0, len(b)), atol=1e-6)
    assert [t.center_xy for t in a.tiles] == [t.center_xy for t in b.tiles]


def test_merge_refuses_missing_shard(ortho, tiny_onnx, tmp_path):
    build.main(
        BuildConfig(tile_m=TILE_M, crop_px=64), tiny_onnx, tmp_path / "s", ortho=[ortho[0]], shard="1/3"
    )
    with pytest.raises(GeolinkError, match="1 of 3 shards"):
        build.merge(tmp_path / "s", tmp_path / "out")


def test_cli_build_info_and_bad_inputs(cli, ortho, tiny_onnx, tmp_path):
    out = tmp_path / "cli"
    ok = cli(
        "index",
        "build",
        "--model",
        str(tiny_onnx),
        "--out",
        str(out),
        "--ortho",
        str(ortho[0]),
        "--tile-m",
        "200",
        "--stride-m",
        "100",
        "--scales",
        "1,2",
        "--crop-px",
        "48",
        "--index-type",
        "hnsw",
    )
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["faiss_type"] == "HNSW32,Flat" and {
        t["scale"] for t in json.loads((out / "tiles.json").read_text())
    } == {1.0, 2.0}
    shown = cli("index", "info", str(out))
    assert shown.returncode == 0 and f"{manifest['count']} tiles" in shown.stdout
    cases = [
        (["--tile-m", "5000"], "smaller than one 5000 m tile"),  # the area holds no tile
        (["--stride-m", "-3", "--tile-m", "100"], "--stride-m"),
        (["--tile-m", "100", "--index-type", "NotAnIndex"], "NotAnIndex"),
        (["--tile-m", "100", "--index-type", "PCA999,Flat"], "cannot output 999 dimensions"),
        ([], "--tile-m"),  # the tiny card has no training footprint
    ]
    for extra, message in cases:
        bad = cli(
            "index",
            "build",
            "--model",
            str(tiny_onnx),
            "--out",
            str(tmp_path / "bad"),
            "--ortho",
            str(ortho[0]),
            *extra,
        )
        assert bad.returncode == 2 and message in bad.stderr, (extra, bad.stderr)
        assert bad.stderr.count("\n") == 1 and not (tmp_path / "bad").exists()
