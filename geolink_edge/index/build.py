"""``index build`` and ``index merge``: embed north-up tiles of reference imagery into a faiss bundle.

Work is done in chunks of :data:`CHUNK_TILES` planned tiles. Each finished chunk (descriptors +
tile metadata in an ``.npz``) is written into a work folder beside the output (``.<out>.partial``),
then the map store is rendered there by rows of map chunks, so a crashed or interrupted build
resumes where it stopped when rerun with the same inputs. ``--shard i/n`` (or torchrun's
``RANK``/``WORLD_SIZE``) embeds every n-th tile chunk and renders every n-th map row into
``<out>/shard-i-of-n``; ``index merge`` assembles the shards. The bundle itself appears only
when complete (:func:`geolink_edge.atomic.atomic_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from geolink_edge.atomic import atomic_dir, atomic_path, check_new_dir, write_json
from geolink_edge.errors import GeolinkError, first_line
from geolink_edge.index.bundle import INDEX_FAISS, Tile, write_metadata
from geolink_edge.index.mapbuild import finished_chunks, plan_map, render_map_rows, write_map
from geolink_edge.index.sources import Layer, open_sources, unreadable_tiles
from geolink_edge.index.tiling import (
    DEFAULT_MIN_VALID,
    MIN_CROP_PX,
    Georef,
    TilingConfig,
    layer_boxes,
    make_georef,
    native_gsd,
    plan_tiles,
    render_tile,
)

CHUNK_TILES = 256
WORK_JSON = "work.json"

# Named index types → (faiss factory string, ParameterSpace search parameters); "{nlist}", "{pq}"
# and "{pca}" are filled from the tile count and the descriptor dimension. The parameters were chosen
# with benchmarks/search.py (recall@10 ≥ 0.98 against exact search on clustered 4096-d vectors;
# compact: every query's own tile among its 10 found at 1M tiles, 0.8 GB, 2.2 ms).
INDEX_TYPES = {
    "flat": ("Flat", ""),
    "sqfp16": ("SQfp16", ""),
    "sq8": ("SQ8", ""),
    "hnsw": ("HNSW32,Flat", "efSearch=64"),
    "hnsw-sq8": ("HNSW32,SQ8", "efSearch=64"),
    "ivfpq": (
        "IVF{nlist},PQ{pq}x8np,RFlat",
        "nprobe=16,k_factor_rf=8",
    ),  # np: no polysemous training (slow, unused)
    # 8-bit codes of a PCA-reduced descriptor under an inverted file: 0.8 kB a tile, where the float
    # vectors kept by flat, hnsw and ivfpq's re-ranking are 16 kB (16 GB at 1M 4096-d tiles)
    "compact": ("{pca}IVF{nlist},SQ8", "nprobe=16"),
}
COMPACT_DIM = 768  # the compact type's PCA output; descriptors this short are not reduced
AUTO_FLAT_MAX = 100_000  # beyond this auto picks compact: a companion computer shares 8-16 GB


class BuildConfig(BaseModel):
    """Options of ``index build``; ``None`` means "from the model card" (tile_m) or a derived default."""

    model_config = ConfigDict(extra="forbid")

    tile_m: float | None = Field(None, gt=0, le=100_000)
    stride_m: float | None = Field(None, gt=0, le=100_000)
    scales: tuple[float, ...] = (1.0,)
    crop_px: int | None = Field(None, ge=16, le=4096)
    min_valid: float = Field(DEFAULT_MIN_VALID, gt=0, le=1)
    index_type: str = "auto"
    batch_size: int = Field(32, ge=1, le=4096)
    workers: int = Field(2, ge=1, le=64)
    crs: str | None = None
    nodata: float | None = None
    map_gsd: float | None = Field(None, gt=0, le=1000)


def resolve_tiling(conf: BuildConfig, card) -> TilingConfig:
    tile_m = conf.tile_m or card.tile_m
    if tile_m is None:
        raise GeolinkError("the model card has no tile_m (training tile footprint): pass --tile-m METRES")
    return TilingConfig(
        tile_m=tile_m,
        stride_m=conf.stride_m or tile_m / 2,
        scales=conf.scales,
        crop_px=conf.crop_px or max(max(card.image_size), MIN_CROP_PX),
        min_valid=conf.min_valid,
    )


def choose_index(index_type: str, count: int, dim: int) -> tuple[str, str]:
    """(factory string, search parameters) for a named index type, ``auto`` or a raw factory string."""
    name = index_type.strip()
    if name.lower() == "auto":
        name = "flat" if count <= AUTO_FLAT_MAX else "compact"
    factory, params = INDEX_TYPES.get(name.lower(), (name, ""))
    pq = next(m for m in (dim // 16, dim // 8, dim // 4, dim // 2, dim) if m > 0 and dim % m == 0)
    # a PCA gives at most as many components as it has training vectors
    pca = f"PCA{COMPACT_DIM}," if dim > COMPACT_DIM and count >= 2 * COMPACT_DIM else ""
    return factory.format(nlist=ivf_lists(count), pq=pq, pca=pca), params


def ivf_lists(count: int) -> int:
    """Inverted lists of an IVF index over ``count`` tiles: 4√count, with ≥ 39 tiles a list (faiss's
    least training points per centroid)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def make_faiss(factory: str, dim: int):
    import faiss

    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise GeolinkError(
            f"--index-type {factory!r}: not a valid faiss factory string ({_reason(exc)})"
        ) from None


def _reason(exc: RuntimeError) -> str:
    """What a faiss error says, without its "Error in FUNCTION at FILE:LINE" preamble."""
    return first_line(exc, 1000).rsplit(": ", 1)[-1][:120]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``i/n`` → (i, n); without it, torchrun's RANK / WORLD_SIZE when more than one process runs."""
    if text is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return (int(os.environ.get("RANK", "0")), world) if world > 1 else None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise GeolinkError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise GeolinkError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def _source_identity(layers: list[Layer]) -> list[dict]:
    """Names, sizes and modification times: a changed map invalidates chunks of an earlier run."""
    out = []
    for layer in layers:
        path = getattr(layer, "path", None) or getattr(layer, "root", None)
        stat = Path(path).stat() if path else None
        out.append(
            {
                "name": layer.name,
                "crs": layer.crs,
                "nodata": getattr(layer, "nodata", None),
                "bytes": stat.st_size if stat else None,
                "mtime": stat.st_mtime_ns if stat else None,
            }
        )
    return out


def _plan_key(card, tiling: TilingConfig, layers: list[Layer], georef: Georef, count: int, grid: dict) -> str:
    blob = json.dumps(
        {
            "model": card.weights_hash,
            "map": grid,
            "tiling": tiling.model_dump(mode="json"),
            "sources": _source_identity(layers),
            "origin": None if georef.frame is None else [georef.frame.lat0, georef.frame.lon0],
            "count": count,
            "chunk": CHUNK_TILES,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _prepare_workdir(workdir: Path, info: dict) -> None:
    """Keep a work folder from an identical earlier run; replace one from different inputs."""
    marker = workdir / WORK_JSON
    if marker.is_file():
        if json.loads(marker.read_text()).get("plan_key") == info["plan_key"]:
            return
        shutil.rmtree(workdir)
    elif workdir.exists() and any(workdir.iterdir()):
        raise GeolinkError(f"{workdir} exists and is not an index work folder")
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(marker, info)


def _chunk_file(workdir: Path, chunk: int) -> Path:
    return workdir / f"chunk-{chunk:06d}.npz"


@dataclass(frozen=True)
class TileWork:
    """The tiles a build plans and the imagery they are cut from."""

    layers: list[Layer]
    georef: Georef
    boxes: list
    tiling: TilingConfig
    plan: list


@dataclass(frozen=True)
class ChunkJob:
    """What embedding one chunk needs besides the chunk's number."""

    workdir: Path
    work: TileWork
    embedder: object
    batch_size: int
    pool: Executor
    progress: Callable[[int], None]


def _embed_chunk(job: ChunkJob, chunk: int) -> None:
    work = job.work
    start = chunk * CHUNK_TILES
    planned = work.plan[start : start + CHUNK_TILES]

    def render(i: int):
        return render_tile(work.layers, work.boxes, work.georef, planned[i], work.tiling.crop_px)

    kept, metas, descriptors = [], [], []
    rendered = list(job.pool.map(render, range(len(planned))))
    for i, tile in enumerate(rendered):
        if tile.valid_fraction >= work.tiling.min_valid:
            kept.append(i)
            metas.append(tile.meta)
    for b in range(0, len(kept), job.batch_size):
        batch = [rendered[i].image for i in kept[b : b + job.batch_size]]
        descriptors.append(np.asarray(job.embedder.embed(batch), dtype=np.float32))
        job.progress(len(batch))
    job.progress(len(planned) - len(kept))
    dim = job.embedder.card.descriptor_dim
    with atomic_path(_chunk_file(job.workdir, chunk)) as tmp, tmp.open("wb") as handle:
        np.savez(
            handle,
            plan_ids=np.asarray([start + i for i in kept], np.int64),
            descriptors=np.concatenate(descriptors) if descriptors else np.zeros((0, dim), np.float32),
            tiles=np.asarray(json.dumps(metas)),
        )


@contextlib.contextmanager
def _progress(label: str, total: int):
    """A transient progress bar; yields ``advance(n)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def embed_chunks(workdir: Path, chunks: list[int], work: TileWork, embedder, conf: BuildConfig) -> None:
    """Render, embed and store every chunk not already on disk, with a progress bar."""
    todo = [c for c in chunks if not _chunk_file(workdir, c).is_file()]
    total = sum(len(work.plan[c * CHUNK_TILES : (c + 1) * CHUNK_TILES]) for c in todo)
    with _progress("embedding tiles", total) as advance, ThreadPoolExecutor(conf.workers) as pool:
        job = ChunkJob(workdir, work, embedder, conf.batch_size, pool, advance)
        for chunk in todo:
            _embed_chunk(job, chunk)


def render_map(workdir: Path, grid: dict, rows: list[int], work: TileWork, conf: BuildConfig) -> None:
    """Render the map store's rows not already on disk, with a progress bar."""
    with _progress("writing the map", len(rows)) as advance, ThreadPoolExecutor(conf.workers) as pool:
        render_map_rows(workdir, grid, rows, work.layers, work.boxes, work.georef, pool, advance)


def _load_chunk(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    with np.load(path, allow_pickle=False) as data:
        return data["plan_ids"], data["descriptors"], json.loads(str(data["tiles"]))


def assemble(workdirs: list[Path], out: Path, manifest: dict, index_type: str, force: bool) -> Path:
    """Build the faiss index from finished chunks (streamed) and write the bundle in one move."""
    import faiss

    chunks = sorted((p for w in workdirs for p in w.glob("chunk-*.npz")), key=lambda p: p.name)
    expected = manifest.pop("chunks")
    if len(chunks) != expected:
        raise GeolinkError(f"{len(chunks)} of {expected} chunks are done; run the missing shards first")
    grid = manifest.pop("map")
    map_chunks = finished_chunks(workdirs, grid)
    counts = [len(_load_chunk(p)[0]) for p in chunks]
    count = sum(counts)
    if count == 0:
        raise GeolinkError(
            "no tile is covered by imagery (all outside the rasters, nodata or too small an area)"
        )
    dim = manifest["descriptor_dim"]
    factory, params = choose_index(index_type, count, dim)
    index = make_faiss(factory, dim)
    started = time.perf_counter()
    if not index.is_trained:
        rng = np.random.default_rng(0)
        # a bounded random sample is enough to train PCA/IVF/PQ: 40 a list, as faiss asks
        share = min(1.0, max(100_000, 40 * ivf_lists(count)) / count)
        sample = np.concatenate([d[rng.random(len(d)) < share] for _, d, _ in map(_load_chunk, chunks)])
        try:  # a factory string can parse and still not fit these tiles (a PCA wider than the descriptor)
            index.train(sample)
        except RuntimeError as exc:
            raise GeolinkError(
                f"--index-type {factory!r}: cannot be trained on these tiles ({_reason(exc)})"
            ) from None
    tiles, sources = [], []
    for path in chunks:
        _, descriptors, metas = _load_chunk(path)
        index.add(descriptors)
        tiles.extend(metas)
    with atomic_dir(out, force) as tmp:
        records = []
        for tile_id, meta in enumerate(tiles):
            records.append(Tile.from_dict({"id": tile_id, **meta}))
            if meta["source"] and meta["source"] not in sources:
                sources.append(meta["source"])
        write_map(tmp, grid, map_chunks, _link)
        faiss.write_index(index, str(tmp / INDEX_FAISS))
        manifest.update(
            map_gsd_m=grid["gsd_m"],
            faiss_type=factory,
            faiss_params=params,
            count=count,
            sources=sources,
            build_time_s=round(manifest.pop("embed_time_s", 0.0) + time.perf_counter() - started, 3),
        )
        write_metadata(tmp, manifest, records)
    return out


def _link(src: Path, dst: Path) -> None:
    """Hard-link a map chunk into the new bundle (the work folder stays intact until the bundle exists)."""
    if not src.is_file():
        raise GeolinkError(f"{src}: map chunk missing from the work folder (rebuild with --force)")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def plan_work(conf: BuildConfig, card, ortho, tiles_csv, xyz) -> TileWork:
    """Open the imagery and plan its tiles; imagery smaller than one tile is refused."""
    tiling = resolve_tiling(conf, card)
    layers = open_sources(ortho, tiles_csv, xyz, conf.crs, conf.nodata)
    georef = make_georef(layers)
    boxes = layer_boxes(layers, georef)
    plan = plan_tiles(boxes, tiling)
    if len(plan) == 0:
        raise GeolinkError(f"the imagery is smaller than one {tiling.tile_m:g} m tile: nothing to index")
    return TileWork(layers, georef, boxes, tiling, plan)


def _manifest(card, work: TileWork, n_chunks: int, grid: dict) -> dict:
    """The bundle's description, kept in the work folder until the bundle is assembled."""
    tiling, frame = work.tiling, work.georef.frame
    return {
        "model_hash": card.weights_hash,
        "model_card": card.to_dict(),
        "descriptor_dim": card.descriptor_dim,
        "metric": "ip",
        "crs": ",".join(sorted({layer.crs for layer in work.layers})),
        "origin": None if frame is None else {"lat": frame.lat0, "lon": frame.lon0},
        "tiling": {
            "tile_m": tiling.tile_m,
            "stride_m": tiling.stride_m,
            "scales": list(tiling.scales),
            "min_valid": tiling.min_valid,
        },
        "crop_px": tiling.crop_px,
        "chunks": n_chunks,
        "map": grid,
    }


def _workdir(out: Path, shard_of: tuple[int, int] | None) -> Path:
    """Beside the bundle for a whole build; the shard's own folder under ``out`` for a shard."""
    if shard_of is None:
        return out.parent / f".{out.name}.partial"
    return out / f"shard-{shard_of[0]}-of-{shard_of[1]}"


def main(
    conf: BuildConfig,
    model: Path,
    out: Path,
    ortho: list[Path] | None = None,
    tiles_csv: Path | None = None,
    xyz: Path | None = None,
    force: bool = False,
    shard: str | None = None,
) -> Path:
    """Build a tile index bundle at ``out`` (or, with a shard, that shard's chunks); returns the path."""
    from geolink_edge.backends import load_embedder

    started = time.perf_counter()
    out = Path(out)
    shard_of = parse_shard(shard)
    if shard_of is None:
        check_new_dir(out, force)
    embedder = load_embedder(model)
    card = embedder.card
    work = plan_work(conf, card, ortho, tiles_csv, xyz)
    dim = card.descriptor_dim
    make_faiss(choose_index(conf.index_type, len(work.plan), dim)[0], dim)  # fail before any work
    n_chunks = math.ceil(len(work.plan) / CHUNK_TILES)
    grid = plan_map(work.boxes, conf.map_gsd or native_gsd(work.layers, work.georef))
    manifest = _manifest(card, work, n_chunks, grid)
    plan_key = _plan_key(card, work.tiling, work.layers, work.georef, len(work.plan), grid)
    workdir = _workdir(out, shard_of)
    _prepare_workdir(workdir, {"plan_key": plan_key, "manifest": manifest})
    first, every = shard_of or (0, 1)
    embed_chunks(workdir, list(range(first, n_chunks, every)), work, embedder, conf)
    render_map(workdir, grid, list(range(first, grid["rows"], every)), work, conf)
    unreadable_tiles(work.layers)
    if shard_of is not None:
        return workdir
    manifest["embed_time_s"] = time.perf_counter() - started
    assemble([workdir], out, manifest, conf.index_type, force)
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def merge(shards_root: Path, out: Path, index_type: str = "auto", force: bool = False) -> Path:
    """Join the shard folders under ``shards_root`` (from ``index build --shard i/n``) into one bundle."""
    shards = sorted(Path(shards_root).glob("shard-*-of-*"))
    if not shards:
        raise GeolinkError(
            f"{shards_root}: no shard-i-of-n folders (build them with index build --shard i/n)"
        )
    infos = [json.loads((s / WORK_JSON).read_text()) if (s / WORK_JSON).is_file() else None for s in shards]
    if any(info is None for info in infos) or len({info["plan_key"] for info in infos}) != 1:
        raise GeolinkError(f"{shards_root}: shards come from different inputs or are incomplete")
    total = int(shards[0].name.rsplit("-", 1)[1])
    if len(shards) != total:
        raise GeolinkError(f"{shards_root}: {len(shards)} of {total} shards present")
    check_new_dir(out, force)
    return assemble(shards, Path(out), dict(infos[0]["manifest"]), index_type, force)
