"""Where a frame is looked for, and the index it is looked for in.

- no region (a cold start, a lost track): the index's ``k_global`` tiles nearest the frame's global
  descriptor, each standing for the map window around it (more candidates than near a prediction:
  a descriptor search alone is unreliable);
- a region (a track's prediction, or ``--near``): the map windows that cover it, whatever their
  descriptors (:func:`candidates.candidate_keys`); no descriptor search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError

Region = tuple[float, float, float]  # (x, y, radius_m) in the index frame


class Search(str, Enum):
    GLOBAL = "global"  # the whole index by descriptor
    NEAR = "near"  # a track's prediction
    AREA = "area"  # every candidate of a known area


@dataclass
class Candidates:
    search: Search
    ids: list[int] = field(default_factory=list)  # tiles by descriptor (none for a region)
    scores: list[float] = field(default_factory=list)


def retrieve(index, descriptor: np.ndarray, k: int) -> Candidates:
    """The ``k`` tiles whose descriptors are nearest the frame's, best first."""
    result = index.search(np.asarray(descriptor, dtype=np.float32).reshape(1, -1), k)
    ids = [int(i) for i in np.asarray(result.ids).reshape(-1) if int(i) >= 0]
    scores = [float(s) for s in np.asarray(result.scores).reshape(-1)[: len(ids)]]
    return Candidates(Search.GLOBAL, ids, scores)


def near_region(index, near: tuple[float, float, float]) -> Region:
    """(lat, lon, radius_m) → (x, y, radius_m) in the index frame."""
    lat, lon, radius = near
    if index.frame is None:
        raise GeolinkError("--near needs an index with a geodetic origin (this one has a local frame)")
    east, north, _ = index.frame.to_enu(lat, lon)
    return float(east), float(north), float(radius)


def open_index(index_dir: str | Path, card: ModelCard, model: str | Path):
    """Load the tile index and refuse it if it was built with another encoder."""
    from geolink_edge.index.search import TileIndex

    index = TileIndex.load(index_dir)
    try:
        index.check_model(card.weights_hash)
    except GeolinkError:
        raise GeolinkError(
            f"model {model} (hash {card.short_hash}) does not match index {index_dir} "
            f"(built with model hash {str(index.model_hash)[:12]})"
        ) from None
    return index
