"""Tile-index search speed and quality: exact vs SQ vs HNSW vs IVF-PQ(+re-rank) vs prior-gated.

Clustered 4096-d descriptors (cluster centres in a low-rank subspace plus noise, L2-normalised),
queries are perturbed database vectors (a drone view of a known tile). Each index is built, written
to a bundle with a synthetic 20 m tile grid and loaded through ``TileIndex`` with and without mmap.
Latency is per single query (the drone's case). Two recalls: "R@10" is the overlap of the 10 found
with the exact top 10 (how faithful the approximate search is, near-ties included); "tile R@10" is
the fraction of queries whose own tile is among the 10 found (the paper's Recall@K: whether the
drone's true tile reaches verification). "GB at 1M"
extrapolates the file's bytes per tile to a million tiles (what a 20 km x 20 km mission at a 20 m
stride needs resident); the compact types (PCA-reduced SQ8 under HNSW or IVF, PQ without re-ranking)
aim at 1 GB there.

    python benchmarks/search.py --sizes 10000 100000 [--only PCA] [--nprobe 32 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from geolink_edge.index.bundle import INDEX_FAISS, Tile, write_metadata
from geolink_edge.index.search import TileIndex

DIM = 4096


class Clustered:
    """Clustered descriptors made chunk by chunk from a seed: a million of them (16 GB as float32)
    never has to be in memory at once, and any row can be made again for the exact search."""

    CHUNK = 10_000

    def __init__(self, n: int, seed: int = 0, clusters: int = 500, rank: int = 256):
        rng = np.random.default_rng(seed)
        self.n, self.seed = n, seed
        self.basis = rng.standard_normal((rank, DIM), dtype=np.float32) / np.float32(np.sqrt(rank))
        self.centres = rng.standard_normal((clusters, rank), dtype=np.float32)

    def chunk(self, start: int) -> np.ndarray:
        m = min(self.CHUNK, self.n - start)
        rng = np.random.default_rng([self.seed, start])
        latent = self.centres[rng.integers(0, len(self.centres), m)]
        latent = latent + 0.6 * rng.standard_normal(latent.shape, dtype=np.float32)
        out = latent @ self.basis + 0.15 * rng.standard_normal((m, DIM), dtype=np.float32)
        faiss.normalize_L2(out)
        return out

    def chunks(self, limit: int | None = None):
        """(first row, rows) of each chunk, up to ``limit`` rows."""
        for start in range(0, min(self.n, limit or self.n), self.CHUNK):
            yield start, self.chunk(start)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), DIM), np.float32)
        for start in np.unique(ids // self.CHUNK * self.CHUNK):
            here = ids // self.CHUNK * self.CHUNK == start
            out[here] = self.chunk(int(start))[ids[here] - start]
        return out

    def exact_top(self, queries: np.ndarray, k: int = 10) -> np.ndarray:
        """Ids of the ``k`` best inner products of each query over all rows, chunk by chunk."""
        best_s = np.full((len(queries), k), -np.inf, np.float32)
        best_i = np.zeros((len(queries), k), np.int64)
        for start, rows in self.chunks():
            scores = np.concatenate([best_s, queries @ rows.T], axis=1)
            ids = np.concatenate(
                [best_i, np.broadcast_to(np.arange(start, start + len(rows)), (len(queries), len(rows)))],
                axis=1,
            )
            top = np.argsort(-scores, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
        return best_i


def index_types(n: int) -> dict[str, tuple[str, str]]:
    nlist = int(4 * np.sqrt(n))
    return {
        "exact Flat": ("Flat", ""),
        "SQ8": ("SQ8", ""),
        "HNSW32": ("HNSW32,Flat", "efSearch=64"),
        "HNSW32,SQ8": ("HNSW32,SQ8", "efSearch=64"),
        f"IVF{nlist},PQ256+re-rank": (f"IVF{nlist},PQ256x8np,RFlat", "nprobe=16,k_factor_rf=8"),
        "PCA512,HNSW32,SQ8": ("PCA512,HNSW32,SQ8", "efSearch=64"),
        f"PCA512,IVF{nlist},SQ8": (f"PCA512,IVF{nlist},SQ8", "nprobe=16"),
        f"PCA768,IVF{nlist},SQ8": (f"PCA768,IVF{nlist},SQ8", "nprobe=16"),
        f"PCA1024,IVF{nlist},SQ8": (f"PCA1024,IVF{nlist},SQ8", "nprobe=16"),
        f"IVF{nlist},PQ512": (f"IVF{nlist},PQ512x8np", "nprobe=16"),
    }


def write_bundle(root: Path, index, xy: np.ndarray, params: str) -> None:
    """A bundle whose tiles sit on the given xy grid (no map store: search does not read it)."""
    root.mkdir(parents=True)
    faiss.write_index(index, str(root / INDEX_FAISS))
    affine = np.eye(2, 3)
    tiles = [
        Tile(
            i,
            None,
            None,
            (float(x), float(y)),
            None,
            ((0.0, 0.0),) * 4,
            0.3,
            1.0,
            20.0,
            "grid",
            (0, 0, 0, 0),
            affine,
        )
        for i, (x, y) in enumerate(xy)
    ]
    manifest = {
        "crs": "local",
        "origin": None,
        "tiling": {"tile_m": 20.0, "stride_m": 20.0},
        "faiss_params": params,
    }
    write_metadata(root, manifest, tiles)


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_both_ways(root: Path) -> tuple[TileIndex, dict[bool, tuple[float, float]]]:
    """Load time and resident-memory growth with and without mmap; returns the mmapped index."""
    loads = {}
    for mmap in (False, True):
        loaded = None  # release the previous copy before measuring the next
        before = rss_mb()
        t0 = time.perf_counter()
        loaded = TileIndex.load(root, mmap=mmap)
        loads[mmap] = (time.perf_counter() - t0, rss_mb() - before)
    return loaded, loads


def timed_queries(fn, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    times, ids = [], []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        ids.append(fn(i, q[None]))
        times.append(time.perf_counter() - t0)
    return np.asarray(times) * 1e3, np.concatenate(ids)


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth, strict=True)]))


def recalls(found: np.ndarray, truth, picks: np.ndarray) -> tuple[float, float]:
    """(overlap with the exact top 10, fraction of queries whose own tile is among the 10 found)."""
    own = np.mean([p in f[:10] for f, p in zip(found, picks, strict=True)])
    return recall_at_10(found, truth), float(own)


def run(n: int, n_queries: int, radius_m: float, rng: np.random.Generator, work: Path, only: str, nprobes=()):
    """Yield one table row per index type (and the prior-gated search, and each IVF type again at each
    of ``nprobes``: recall against latency without a rebuild) as soon as it is measured."""
    data = Clustered(n, seed=int(rng.integers(1 << 31)))
    picks = rng.integers(0, n, n_queries)
    queries = data.rows(picks) + 0.02 * rng.standard_normal((n_queries, DIM), dtype=np.float32)
    faiss.normalize_L2(queries)
    side = int(np.ceil(np.sqrt(n)))
    xy = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1) * 20.0  # a 20 m tile grid
    exact_ids = data.exact_top(queries)
    for name, (factory, params) in index_types(n).items():
        if only not in name:
            continue
        t0 = time.perf_counter()
        index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            # the rows are independent draws, so the first ones are a random sample
            # (faiss wants ~40 per IVF list)
            sample = max(50_000, 40 * int(4 * np.sqrt(n)))
            index.train(np.concatenate([rows for _, rows in data.chunks(sample)]))
        fixed_mb = len(faiss.serialize_index(index)) / 2**20  # trained, empty: PCA matrices, centroids
        for _, rows in data.chunks():
            index.add(rows)
        build_s = time.perf_counter() - t0
        root = work / f"{n}-{name.replace(',', '_').replace(' ', '_')}"
        write_bundle(root, index, xy, params)
        del index
        tile_index, loads = load_both_ways(root)
        ms, found = timed_queries(lambda i, q, index=tile_index: index.search(q, 10).ids, queries)
        size_mb = (root / "index.faiss").stat().st_size / 2**20
        at_1m_gb = (fixed_mb + (size_mb - fixed_mb) / n * 1e6) / 1024
        yield (n, name, ms, recalls(found, exact_ids, picks), size_mb, loads, build_s, at_1m_gb)
        for nprobe in nprobes if "IVF" in factory else ():
            faiss.ParameterSpace().set_index_parameters(tile_index.index, f"nprobe={nprobe}")
            ms, found = timed_queries(lambda i, q, index=tile_index: index.search(q, 10).ids, queries)
            row = (n, f"{name} nprobe={nprobe}", ms, recalls(found, exact_ids, picks), size_mb, loads)
            yield (*row, build_s, at_1m_gb)
        if factory == "Flat":
            gated_ms, gated_found = timed_queries(
                lambda i, q, index=tile_index: index.search_xy(q, 10, *xy[picks[i]], radius_m).ids, queries
            )
            gated_recall = _gated_recall(tile_index, data, queries, xy, picks, radius_m, gated_found)
            gated = f"prior-gated r={radius_m:.0f} m"
            yield (n, gated, gated_ms, gated_recall, size_mb, loads, build_s, at_1m_gb)
        del tile_index


def _gated_recall(tile_index, data, queries, xy, picks, radius_m, found) -> tuple[float, float]:
    """Recalls of the gated search, its overlap against exact search restricted to the same circle."""
    truth = []
    for q, p in zip(queries, picks, strict=True):
        ids = tile_index.ids_within(*xy[p], radius_m)
        order = np.argsort(-(data.rows(ids) @ q))[:10]
        truth.append(ids[order])
    return recalls(found, truth, picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--radius-m", type=float, default=300.0)
    parser.add_argument("--only", default="", help="measure only index types whose name holds this")
    parser.add_argument("--nprobe", type=int, nargs="*", default=[], help="IVF types again at these nprobe")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs, dim {DIM}"
    )
    columns = ["N", "index", "median ms", "p95 ms", "R@10", "tile R@10", "file MB", "load s", "load s mmap"]
    columns += ["RSS MB", "RSS MB mmap", "build s", "GB at 1M"]
    header = f"{columns[0]:>7} {columns[1]:<28} " + " ".join(f"{c:>11}" for c in columns[2:])
    print(header)
    with tempfile.TemporaryDirectory() as work:
        for n in args.sizes:
            for n_, name, ms, recall, size_mb, loads, build_s, at_1m_gb in run(
                n, args.queries, args.radius_m, rng, Path(work), args.only, args.nprobe
            ):
                values = [
                    np.median(ms),
                    np.percentile(ms, 95),
                    *recall,
                    size_mb,
                    loads[False][0],
                    loads[True][0],
                ]
                values += [loads[False][1], loads[True][1], build_s, at_1m_gb]
                print(f"{n_:>7} {name:<28} " + " ".join(f"{v:>11.3f}" for v in values), flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
