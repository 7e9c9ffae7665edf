"""The bundle's map store: size per km² against the source raster, and window read latency.

For each orthophoto the map store is written as ``index build`` writes it (native GSD, 1024-px
JPEG chunks + validity masks), without embedding tiles. Sizes are per km² of imagery (valid pixels),
beside the source file and the source re-encoded as a tiled JPEG GeoTIFF (quality 90, YCbCr), the
usual way orthomosaics are shipped. Windows are read at random centres inside the imagery, cold
(empty chunk cache) and warm, at the sizes and GSDs a verifier asks for.

    python benchmarks/mapstore.py --ortho map.tif [--nodata 0] --windows 30
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from geolink_edge.index.mapbuild import finished_chunks, plan_map, render_map_rows, write_map
from geolink_edge.index.mapstore import MAP_DIR, MapStore
from geolink_edge.index.sources import open_sources
from geolink_edge.index.tiling import layer_boxes, make_georef, native_gsd

# (half size m, GSD: None = native, or a multiple of native written as "x2")
WINDOWS = ((75.0, None), (150.0, None), (150.0, "x2"), (300.0, "x4"))


def jpeg_geotiff_bytes(source: Path, work: Path) -> int:
    """Size of the source re-encoded as a tiled JPEG (q90, YCbCr) GeoTIFF, palette expanded."""
    import rasterio

    (layer,) = open_sources([source])
    with rasterio.open(source) as src:
        profile = src.profile | {
            "driver": "GTiff",
            "count": 3,
            "dtype": "uint8",
            "compress": "jpeg",
            "jpeg_quality": 90,
            "photometric": "ycbcr",
            "interleave": "pixel",
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "nodata": None,
        }
        profile.pop("predictor", None)
        out = work / "jpeg.tif"
        with rasterio.open(out, "w", **profile) as dst:
            for row in range(0, src.height, 1024):
                height = min(1024, src.height - row)
                bgr, _ = layer.read(0, row, src.width, height, src.width, height)
                dst.write(bgr[..., ::-1].transpose(2, 0, 1), window=((row, row + height), (0, src.width)))
    return out.stat().st_size


def build_store(source: Path, nodata: float | None, work: Path) -> tuple[Path, float]:
    layers = open_sources([source], nodata=nodata)
    georef = make_georef(layers)
    boxes = layer_boxes(layers, georef)
    grid = plan_map(boxes, native_gsd(layers, georef))
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        render_map_rows(work, grid, list(range(grid["rows"])), layers, boxes, georef, pool, lambda n: None)
    bundle = work / "bundle"
    bundle.mkdir()
    write_map(bundle, grid, finished_chunks([work], grid), lambda src, dst: dst.hardlink_to(src))
    return bundle, time.perf_counter() - started


def valid_area_km2(store: MapStore) -> tuple[float, np.ndarray]:
    """Imagery area, and the xy of valid pixels on a coarse grid (to draw window centres from)."""
    coarse = store.gsd_m * store.chunk_px / 64
    rows = max(r for r, _ in store.chunks)
    cols = max(c for _, c in store.chunks)
    extent = (cols + 1) * store.chunk_px * store.gsd_m, (rows + 1) * store.chunk_px * store.gsd_m
    centre = store.left + extent[0] / 2, store.top - extent[1] / 2
    half = max(extent) / 2
    window = store.window(*centre, half, coarse)
    v, u = np.nonzero(window.valid)
    xy = (window.pixel_to_xy @ np.stack([u, v, np.ones_like(u)])).T
    return window.valid.sum() * coarse**2 / 1e6, xy


def time_windows(bundle: Path, xy: np.ndarray, count: int, rng) -> list[tuple[str, float, float, int]]:
    rows = []
    for half, gsd in WINDOWS:
        store = MapStore.load(bundle)
        g = store.gsd_m * (1 if gsd is None else float(gsd[1:]))
        picks = xy[rng.integers(0, len(xy), count)]
        cold = []
        for x, y in picks:
            store._cache.clear()  # cold: every chunk decoded again
            t0 = time.perf_counter()
            window = store.window(x, y, half, g)
            cold.append(time.perf_counter() - t0)
        warm = []
        for x, y in picks:
            store.window(x, y, half, g)
            t0 = time.perf_counter()
            store.window(x, y, half, g)
            warm.append(time.perf_counter() - t0)
        label = f"{2 * half:.0f} m at {'native' if gsd is None else gsd}"
        rows.append((label, 1e3 * np.median(cold), 1e3 * np.median(warm), window.image.shape[0]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ortho", type=Path, nargs="+", required=True)
    parser.add_argument("--nodata", type=float, default=None)
    parser.add_argument("--windows", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        f"{'map':<24} {'GSD m':>6} {'km²':>6} {'build s':>8} {'store MB/km²':>13} "
        f"{'source MB/km²':>14} {'JPEG-TIFF MB/km²':>17} {'store/JPEG-TIFF':>16}"
    )
    timings = []
    for source in args.ortho:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            bundle, build_s = build_store(source, args.nodata, work)
            store = MapStore.load(bundle)
            km2, xy = valid_area_km2(store)
            stored = sum(p.stat().st_size for p in (bundle / MAP_DIR).iterdir())
            jpeg = jpeg_geotiff_bytes(source, work)
            print(
                f"{source.name:<24} {store.gsd_m:>6.3f} {km2:>6.3f} {build_s:>8.1f} "
                f"{stored / 2**20 / km2:>13.2f} {source.stat().st_size / 2**20 / km2:>14.2f} "
                f"{jpeg / 2**20 / km2:>17.2f} {stored / jpeg:>16.2f}",
                flush=True,
            )
            timings += [(source.name, *row) for row in time_windows(bundle, xy, args.windows, rng)]
    print(f"\n{'map':<24} {'window':<20} {'px':>6} {'cold ms':>8} {'warm ms':>8}")
    for name, label, cold, warm, px in timings:
        print(f"{name:<24} {label:<20} {px:>6} {cold:>8.1f} {warm:>8.1f}")


if __name__ == "__main__":
    main()
