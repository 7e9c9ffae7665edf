"""Search a tile index bundle (runtime side: numpy + faiss only, no torch, no rasterio).

Global search uses the bundle's faiss index as built (exact, SQ, HNSW or IVF-PQ with re-ranking).
A search limited to a radius around a prior position (``near=`` / :meth:`TileIndex.search_xy`)
finds the tiles whose centres fall in the circle through a grid on the centres, then scores exactly
those tiles with a faiss ID selector on the index's full-precision (or SQ) storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geolink_edge.card import check_same_model
from geolink_edge.errors import GeolinkError, first_line
from geolink_edge.geo import LocalFrame
from geolink_edge.index.bundle import INDEX_FAISS, Tile, TileTable, read_manifest, read_tiles
from geolink_edge.index.mapstore import MapStore, MapWindow

try:  # the runtime may run on a machine where faiss is missing; say so when an index is opened
    import faiss
except ImportError:  # pragma: no cover - depends on the install
    faiss = None

# A grid row loop costs a few microseconds; past this many rows one vectorised pass over all
# centres is cheaper than walking the grid.
_MAX_GRID_ROWS = 64


@dataclass
class SearchResult:
    """``ids`` and ``scores`` are (Q, k), best first, ``-1`` / ``-inf`` where fewer than k tiles
    qualified; ``tiles[q]`` lists the :class:`Tile` of each valid id of query q."""

    ids: np.ndarray
    scores: np.ndarray
    tiles: list[list[Tile]]


class CentreGrid:
    """Tile centres bucketed in square cells, keys sorted: a radius query touches only the rows of
    cells that the circle's bounding box overlaps (one ``searchsorted`` per row)."""

    def __init__(self, xy: np.ndarray, cell_m: float):
        self.xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        self.cell_m = float(cell_m)
        cells = (
            np.floor(self.xy / self.cell_m).astype(np.int64) if len(self.xy) else np.zeros((0, 2), np.int64)
        )
        self.origin = cells.min(axis=0) if len(cells) else np.zeros(2, np.int64)
        cells -= self.origin
        self.ncols = int(cells[:, 0].max()) + 1 if len(cells) else 1
        keys = cells[:, 1] * self.ncols + cells[:, 0]
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]

    def within(self, x: float, y: float, radius_m: float) -> np.ndarray:
        """Sorted ids of the centres within ``radius_m`` of (x, y)."""
        if radius_m < 0 or not np.isfinite(radius_m):
            raise GeolinkError(
                f"search radius must be a finite non-negative number of metres, got {radius_m}"
            )
        lo = np.floor((np.array([x, y]) - radius_m) / self.cell_m).astype(np.int64) - self.origin
        hi = np.floor((np.array([x, y]) + radius_m) / self.cell_m).astype(np.int64) - self.origin
        lo = np.maximum(lo, 0)
        hi[0] = min(hi[0], self.ncols - 1)
        if len(self.keys) == 0 or hi[0] < lo[0] or hi[1] < lo[1]:
            return np.zeros(0, np.int64)
        if hi[1] - lo[1] + 1 > _MAX_GRID_ROWS:
            candidates = np.arange(len(self.xy))
        else:
            rows = np.arange(lo[1], hi[1] + 1)
            starts = np.searchsorted(self.keys, rows * self.ncols + lo[0], side="left")
            ends = np.searchsorted(self.keys, rows * self.ncols + hi[0], side="right")
            candidates = self.order[
                np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
            ]
        d2 = np.sum((self.xy[candidates] - (x, y)) ** 2, axis=1)
        return np.sort(candidates[d2 <= radius_m * radius_m]).astype(np.int64)


def read_faiss(path: Path, mmap: bool = True):
    """Read a faiss index, memory-mapped where faiss supports it for this type (flat, SQ, HNSW)."""
    if faiss is None:
        raise GeolinkError("faiss is not installed: pip install faiss-cpu (or the Jetson build of faiss)")
    if not path.is_file():
        raise GeolinkError(f"{path}: missing faiss index")
    if mmap:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        except (RuntimeError, AttributeError):  # older faiss or a type without mmap support
            pass
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise GeolinkError(f"{path}: unreadable faiss index ({first_line(exc, 160)})") from None


class _Transformed:
    """Searches ``inner`` with queries passed through an IndexPreTransform's chain (e.g. its PCA)."""

    def __init__(self, outer, inner):
        self.outer = outer  # keeps the chain's transforms alive
        self.chain = [faiss.downcast_VectorTransform(outer.chain.at(i)) for i in range(outer.chain.size())]
        self.inner = inner

    def search(self, queries: np.ndarray, k: int, params=None):
        for transform in self.chain:
            queries = transform.apply(queries)
        return self.inner.search(queries, k, params=params)


def _gated_searcher(index):
    """(index, params factory) that scores a subset of ids with full-precision (or SQ) codes where
    the index keeps them, so a prior-gated search is exact over the tiles it considers (in the
    reduced space, for a PCA-reduced index)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        inner, params = _gated_searcher(index.index)
        return _Transformed(index, inner), params
    if isinstance(index, faiss.IndexRefine):
        return _gated_searcher(index.refine_index)
    if isinstance(index, faiss.IndexHNSW):
        return _gated_searcher(index.storage)
    if isinstance(index, faiss.IndexIVF):
        nlist = index.nlist
        return index, lambda sel: faiss.SearchParametersIVF(sel=sel, nprobe=nlist)
    return index, lambda sel: faiss.SearchParameters(sel=sel)


class TileIndex:
    """A loaded bundle: ``search`` (global or near a prior position), tiles, map windows, model check."""

    def __init__(self, root: Path, manifest: dict, tiles: TileTable, index):
        self.root = root
        self.manifest = manifest
        self.tiles = tiles
        self.index = index
        self.model_hash: str | None = manifest.get("model_hash")
        self.crs: str = manifest.get("crs", "local")
        origin = manifest.get("origin")
        self.frame: LocalFrame | None = LocalFrame(origin["lat"], origin["lon"]) if origin else None
        self.dim = int(index.d)
        self.centers_xy = tiles.centers_xy
        tiling = manifest.get("tiling", {})
        cell = 4.0 * float(tiling.get("stride_m") or tiling.get("tile_m") or 100.0)
        self.grid = CentreGrid(self.centers_xy, cell)
        self._gated, self._gated_params = _gated_searcher(index)
        self._map: MapStore | None = None

    @classmethod
    def load(cls, root: str | Path, mmap: bool = True) -> TileIndex:
        root = Path(root)
        manifest = read_manifest(root)
        tiles = read_tiles(root)
        index = read_faiss(root / INDEX_FAISS, mmap=mmap)
        if index.ntotal != len(tiles):
            raise GeolinkError(
                f"{root}: index.faiss holds {index.ntotal} vectors but tiles.json {len(tiles)} tiles"
            )
        params = manifest.get("faiss_params") or ""
        if params:
            faiss.ParameterSpace().set_index_parameters(index, params)
        return cls(root, manifest, tiles, index)

    def __len__(self) -> int:
        return len(self.tiles)

    def check_model(self, model_hash: str | None) -> None:
        """Refuse descriptors from an encoder other than the one the index was built with."""
        check_same_model(self.model_hash, model_hash, f"the index {self.root}", "the model")

    def tile(self, tile_id: int) -> Tile:
        if not 0 <= int(tile_id) < len(self.tiles):
            raise GeolinkError(f"{self.root}: no tile {tile_id} (index has {len(self.tiles)})")
        return self.tiles[int(tile_id)]

    @property
    def map_store(self) -> MapStore:
        """The bundle's map imagery, opened on first use (search alone never reads it)."""
        if self._map is None:
            self._map = MapStore.load(self.root)
        return self._map

    @property
    def map_gsd_m(self) -> float:
        """The map store's native ground resolution (metres per pixel)."""
        return self.map_store.gsd_m

    def map_window(self, x: float, y: float, half_size_m: float, gsd_m: float | None = None) -> MapWindow:
        """A north-up square of the map centred on (x, y) in the bundle's metric frame, at ``gsd_m``
        (default: native); outside the map it is black and ``valid`` False."""
        return self.map_store.window(x, y, half_size_m, gsd_m)

    def tile_image(self, tile_id: int) -> np.ndarray:
        """A tile's north-up BGR crop (its footprint at its ``gsd_m``, read from the map store)."""
        tile = self.tile(tile_id)
        return self.map_window(*tile.center_xy, tile.tile_m / 2, tile.gsd_m).image

    def ids_within(self, x: float, y: float, radius_m: float) -> np.ndarray:
        return self.grid.within(x, y, radius_m)

    def search(
        self, descriptors: np.ndarray, k: int, near: tuple[float, float, float] | None = None
    ) -> SearchResult:
        """Top-k tiles per descriptor; ``near=(lat, lon, radius_m)`` keeps tiles centred in that circle."""
        if near is None:
            queries = self._queries(descriptors, k)
            scores, ids = self.index.search(queries, min(k, max(len(self.tiles), 1)))
            return self._result(ids, scores, k)
        if self.frame is None:
            raise GeolinkError(
                f"{self.root}: the index has a local frame without geodetic origin; use search_xy"
            )
        lat, lon, radius_m = near
        east, north, _ = self.frame.to_enu(lat, lon)
        return self.search_xy(descriptors, k, float(east), float(north), radius_m)

    def search_xy(self, descriptors: np.ndarray, k: int, x: float, y: float, radius_m: float) -> SearchResult:
        """Top-k among tiles centred within ``radius_m`` of (x, y) in the bundle's metric frame."""
        queries = self._queries(descriptors, k)
        ids = self.ids_within(x, y, radius_m)
        if len(ids) == 0:
            return self._result(
                np.full((len(queries), 0), -1, np.int64), np.zeros((len(queries), 0), np.float32), k
            )
        selector = faiss.IDSelectorBatch(ids)
        scores, found = self._gated.search(queries, min(k, len(ids)), params=self._gated_params(selector))
        return self._result(found, scores, k)

    def _queries(self, descriptors: np.ndarray, k: int) -> np.ndarray:
        queries = np.ascontiguousarray(np.atleast_2d(np.asarray(descriptors, dtype=np.float32)))
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise GeolinkError(
                f"descriptors of shape {queries.shape} do not match the index dimension {self.dim}"
            )
        if int(k) < 1:
            raise GeolinkError(f"k must be at least 1, got {k}")
        return queries

    def _result(self, ids: np.ndarray, scores: np.ndarray, k: int) -> SearchResult:
        pad = k - ids.shape[1]
        if pad > 0:
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = ids.astype(np.int64)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        tiles = [[self.tiles[i] for i in row if i >= 0] for row in ids]
        return SearchResult(ids=ids, scores=scores, tiles=tiles)
