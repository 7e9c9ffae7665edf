"""The tile index bundle on disk: ``index.json``, ``index.faiss``, ``tiles.json`` and the map store
(``map.json`` + ``map/``, :mod:`geolink_edge.index.mapstore`).

Written once by the index builder (inside :func:`geolink_edge.atomic.atomic_dir`), read by the
runtime through :class:`geolink_edge.index.search.TileIndex`. numpy + faiss + stdlib only, so the
runtime can read it without torch or rasterio.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geolink_edge.atomic import read_json, write_json
from geolink_edge.errors import GeolinkError

BUNDLE_FORMAT = "geolink-edge/tile-index/2"
# Format 1 kept a 512-px JPEG crop per tile (crops/<id>.jpg) instead of the map store.
OLD_FORMATS = ("geolink-edge/tile-index/1",)
INDEX_JSON = "index.json"
INDEX_FAISS = "index.faiss"
TILES_JSON = "tiles.json"
BUNDLE_HINT = "not a geolink-edge tile index bundle?"


@dataclass(frozen=True)
class Tile:
    """One reference tile. ``xy`` means metres in the bundle's frame (ENU about ``origin``, or local).

    ``pixel_to_xy`` maps OpenCV pixel coordinates of the tile's north-up crop (integer = pixel
    centre, ``gsd_m`` per pixel, the crop the descriptor was computed from and that
    ``TileIndex.tile_image`` reads from the map store) to xy: ``[x, y] = pixel_to_xy @ [u, v, 1]``.
    ``corners_*`` run TL, TR, BR, BL; ``window`` is ``[col, row, width, height]`` in the source's pixels.
    """

    id: int
    center_lat: float | None
    center_lon: float | None
    center_xy: tuple[float, float]
    corners_latlon: tuple[tuple[float, float], ...] | None
    corners_crs: tuple[tuple[float, float], ...]
    gsd_m: float
    scale: float
    tile_m: float
    source: str
    window: tuple[int, int, int, int]
    pixel_to_xy: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pixel_to_xy"] = np.asarray(self.pixel_to_xy, dtype=float).tolist()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tile:
        def pairs(value):
            return None if value is None else tuple(tuple(float(v) for v in p) for p in value)

        return cls(
            id=int(data["id"]),
            center_lat=data["center_lat"],
            center_lon=data["center_lon"],
            center_xy=tuple(float(v) for v in data["center_xy"]),
            corners_latlon=pairs(data["corners_latlon"]),
            corners_crs=pairs(data["corners_crs"]),
            gsd_m=float(data["gsd_m"]),
            scale=float(data["scale"]),
            tile_m=float(data["tile_m"]),
            source=str(data["source"]),
            window=tuple(int(v) for v in data["window"]),
            pixel_to_xy=np.asarray(data["pixel_to_xy"], dtype=np.float64).reshape(2, 3),
        )


def write_metadata(root: str | Path, manifest: dict[str, Any], tiles: list[Tile]) -> None:
    """Write ``index.json`` and ``tiles.json`` (the builder writes the faiss file and the map store)."""
    root = Path(root)
    write_json(root / INDEX_JSON, {"format": BUNDLE_FORMAT, **manifest})
    # One tile per line keeps a large file readable and diffable without pretty-printing megabytes.
    lines = ",\n".join(json.dumps(t.to_dict(), separators=(",", ":")) for t in tiles)
    (root / TILES_JSON).write_text(f"[\n{lines}\n]\n", encoding="utf-8")


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / INDEX_JSON
    manifest = read_json(path, "index file", BUNDLE_HINT)
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found in OLD_FORMATS:
        raise GeolinkError(
            f"{path}: bundle format {found!r} keeps per-tile crops and no map store; "
            "rebuild it with geolink-edge index build"
        )
    if found != BUNDLE_FORMAT:
        raise GeolinkError(f"{path}: not a {BUNDLE_FORMAT} manifest")
    return manifest


class TileTable(Sequence):
    """The records of ``tiles.json``, kept as their JSON text (one line per tile, as
    :func:`write_metadata` writes them) and parsed into a :class:`Tile` on first access: parsed
    dictionaries would hold ~3 kB per tile resident (2.9 GB at a million tiles), the text ~0.4 kB."""

    def __init__(self, records: list[bytes], path: Path):
        self.path = path
        self.blob = b"".join(records)
        self.ends = np.cumsum([len(r) for r in records], dtype=np.int64)
        ids = np.empty(len(records), np.int64)
        self.centers_xy = np.empty((len(records), 2), np.float64)
        for i, text in enumerate(records):  # one pass for the centres; the dictionaries are dropped
            record = self._parse(text, i)
            try:
                ids[i] = record["id"]
                self.centers_xy[i] = record["center_xy"]
            except (KeyError, TypeError, ValueError) as exc:
                raise GeolinkError(
                    f"{path}: malformed tile record ({exc.__class__.__name__}: {exc})"
                ) from None
        wrong = np.flatnonzero(ids != np.arange(len(ids)))
        if len(wrong):
            position = int(wrong[0])
            raise GeolinkError(
                f"{path}: tile at position {position} has id {ids[position]} (ids must be 0..N-1)"
            )
        self._tiles: dict[int, Tile] = {}

    def _parse(self, text: bytes, position: int) -> dict[str, Any]:
        try:
            record = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GeolinkError(f"{self.path}: tile at position {position} is not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise GeolinkError(f"{self.path}: tile at position {position} is not a JSON object")
        return record

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        key = int(key)
        if key < 0:
            key += len(self)
        if key not in self._tiles:
            start = int(self.ends[key - 1]) if key else 0
            record = self._parse(self.blob[start : int(self.ends[key])], key)
            try:
                self._tiles[key] = Tile.from_dict(record)
            except (KeyError, TypeError, ValueError) as exc:
                raise GeolinkError(
                    f"{self.path}: malformed tile {key} ({exc.__class__.__name__}: {exc})"
                ) from None
        return self._tiles[key]


def _record_lines(path: Path) -> list[bytes]:
    """Each tile's JSON text: the lines between ``[`` and ``]`` as written by :func:`write_metadata`,
    or, for a tiles.json laid out otherwise, every element of the list re-serialised."""
    if not path.is_file():
        raise GeolinkError(f"{path}: index file not found ({BUNDLE_HINT})")
    lines = path.read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) >= 2 and lines[0].strip() == b"[" and lines[-1].strip() == b"]":
        body = [line.rstrip().removesuffix(b",") for line in lines[1:-1]]
        if all(line.startswith(b"{") and line.endswith(b"}") for line in body):
            return body
    data = read_json(path, "index file", BUNDLE_HINT)
    if not isinstance(data, list):
        raise GeolinkError(f"{path}: expected a JSON list of tiles")
    return [json.dumps(record, separators=(",", ":")).encode() for record in data]


def read_tiles(root: str | Path) -> TileTable:
    path = Path(root) / TILES_JSON
    return TileTable(_record_lines(path), path)
