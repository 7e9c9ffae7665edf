"""What every matcher does: putative matches between the features of a frame and of a tile."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from geolink_edge.runtime.features.base import Features

Pairs = tuple[np.ndarray, np.ndarray]  # (frame indices, tile indices)


class Matcher(ABC):
    name: str

    def prepare(self, tile: Features) -> None:  # noqa: B027 — most matchers keep nothing per tile
        """Build what later matches against ``tile`` reuse (called once per cached tile)."""

    @abstractmethod
    def match(
        self, frame: Features, tile: Features, aligned: bool = False, allowed: Pairs | None = None
    ) -> Pairs:
        """Indices into ``frame.xy`` and ``tile.xy`` of the putative matches; ``aligned``: both images
        are north-up at one ground resolution; ``allowed`` (frame indices, tile indices): the only
        pairs a position prior permits. A matcher may use either to choose among candidates; the
        verifier drops any pair outside ``allowed`` afterwards."""
