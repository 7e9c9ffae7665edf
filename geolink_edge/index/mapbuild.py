"""Write the map store (:mod:`geolink_edge.index.mapstore`) while building an index.

The map grid covers the sources' extent in the bundle's frame, its top-left corner on the extent's
top-left corner (so a ``local`` raster at its own GSD is copied pixel for pixel). Chunks are
rendered a row at a time; each finished row leaves ``map-row-<r>.json`` in the work folder, so an
interrupted build resumes by rows and shards split the rows between them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from geolink_edge.atomic import write_bytes, write_json, write_text
from geolink_edge.errors import GeolinkError
from geolink_edge.index.mapstore import MAP_DIR, MAP_JSON, chunk_stem
from geolink_edge.index.sources import Layer
from geolink_edge.index.tiling import Georef, render_region

CHUNK_PX = 1024
# Quality 90 keeps the texture local features need while staying near the size of a typical
# JPEG-compressed orthomosaic (docs/artifacts.md has the measured sizes).
MAP_JPEG_QUALITY = 90
MAX_MAP_PX = 2_000_000  # per side: 200 km at 0.1 m/px


def plan_map(boxes: np.ndarray, gsd_m: float, chunk_px: int | None = None) -> dict:
    """The map grid over the layers' extent: GSD, pixel → xy affine, size in pixels and in chunks."""
    chunk_px = chunk_px or CHUNK_PX
    xmin, ymax = boxes[:, 0].min(), boxes[:, 3].max()
    width = math.ceil((boxes[:, 2].max() - xmin) / gsd_m)
    height = math.ceil((ymax - boxes[:, 1].min()) / gsd_m)
    if max(width, height) > MAX_MAP_PX:
        raise GeolinkError(f"a map of {width} x {height} px at {gsd_m:g} m/px is too large: raise --map-gsd")
    return {
        "gsd_m": gsd_m,
        "pixel_to_xy": [[gsd_m, 0.0, xmin + gsd_m / 2], [0.0, -gsd_m, ymax - gsd_m / 2]],
        "chunk_px": chunk_px,
        "width": width,
        "height": height,
        "rows": math.ceil(height / chunk_px),
        "cols": math.ceil(width / chunk_px),
    }


def _row_file(workdir: Path, row: int) -> Path:
    return workdir / f"map-row-{row:05d}.json"


def _render_chunk(workdir, grid, row, col, layers, boxes, georef) -> list | None:
    """Render and write one chunk; ``[row, col, has_mask]`` or None when it holds no imagery."""
    size, gsd = grid["chunk_px"], grid["gsd_m"]
    affine = np.asarray(grid["pixel_to_xy"], dtype=np.float64).copy()
    affine[0, 2] += col * size * gsd
    affine[1, 2] -= row * size * gsd
    region = render_region(layers, boxes, georef, affine, (size, size))
    if not region.valid.any():
        return None
    stem = workdir / MAP_DIR / chunk_stem(row, col)
    ok, jpeg = cv2.imencode(".jpg", region.image, [cv2.IMWRITE_JPEG_QUALITY, MAP_JPEG_QUALITY])
    write_bytes(stem.with_suffix(".jpg"), jpeg.tobytes())
    masked = not region.valid.all()
    if masked:
        ok, png = cv2.imencode(".png", region.valid.astype(np.uint8) * 255)
        write_bytes(stem.with_suffix(".png"), png.tobytes())
    return [row, col, masked]


def render_map_rows(
    workdir: Path,
    grid: dict,
    rows: list[int],
    layers: list[Layer],
    boxes: np.ndarray,
    georef: Georef,
    pool,
    progress,
) -> None:
    """Render every chunk of the given rows not already finished in ``workdir``."""
    (workdir / MAP_DIR).mkdir(exist_ok=True)
    for row in rows:
        if _row_file(workdir, row).is_file():
            continue
        kept = pool.map(
            lambda col, row=row: _render_chunk(workdir, grid, row, col, layers, boxes, georef),
            range(grid["cols"]),
        )
        write_json(_row_file(workdir, row), [c for c in kept if c is not None])
        progress(1)


def finished_chunks(workdirs: list[Path], grid: dict) -> list[tuple[Path, list]]:
    """(work folder, [row, col, has_mask]) of every stored chunk, once all rows are done."""
    rows = {p.name: p for w in workdirs for p in w.glob("map-row-*.json")}
    if len(rows) != grid["rows"]:
        raise GeolinkError(f"{len(rows)} of {grid['rows']} map rows are done; run the missing shards first")
    return [(path.parent, chunk) for path in rows.values() for chunk in json.loads(path.read_text())]


def write_map(out: Path, grid: dict, chunks: list[tuple[Path, list]], link) -> None:
    """Place the chunks in the bundle (``link(src, dst)``) and write ``map.json``."""
    (out / MAP_DIR).mkdir()
    for workdir, (row, col, masked) in chunks:
        suffixes = (".jpg", ".png") if masked else (".jpg",)
        for suffix in suffixes:
            name = chunk_stem(row, col) + suffix
            link(workdir / MAP_DIR / name, out / MAP_DIR / name)
    description = {**grid, "chunks": sorted(chunk for _, chunk in chunks)}
    write_text(out / MAP_JSON, json.dumps(description) + "\n")
