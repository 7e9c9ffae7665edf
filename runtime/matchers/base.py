"""What every matcher does: putative matches between the features of a frame and of a tile."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from geolink_edge.runtime.features.base import Features

Pairs = tuple[np.ndarray, np.ndarray]  # (frame indices, tile indices)
WHOLE_PAIRS = 1 << 21  # a frame × tile matrix this small goes in one block (8 MB of float32 distances)


@dataclass(frozen=True)
class Reach:
    """Where a position prior lets each frame keypoint's match lie: within ``radius[i]`` metres of
    ``centres[i]`` (a negative radius: nowhere), among tile keypoints at ground points ``points``."""

    centres: np.ndarray  # (N, 2) ground metres
    radius: np.ndarray  # (N,)
    points: np.ndarray  # (M, 2) ground metres

    def allows(self, query: np.ndarray, train: np.ndarray) -> np.ndarray:
        """Whether each pair (frame keypoint, tile keypoint) lies within reach."""
        return np.linalg.norm(self.centres[query] - self.points[train], axis=1) <= self.radius[query]

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The reachable pairs, block by block: (frame rows, tile columns, rows × columns mask).

        Frame keypoints are grouped in square cells half their typical reach wide, each group against
        the tile keypoints in its reach's bounding box: a dense frame × window matrix of a high flight
        holds 20M pairs, these blocks a few hundred thousand. A small matrix goes whole: on a low
        flight (300 × 700 keypoints) 25 blocks took 4× the time of one."""
        valid = np.flatnonzero((self.radius >= 0) & np.all(np.isfinite(self.centres), axis=1))
        if not len(valid) or not len(self.points):
            return
        if len(valid) * len(self.points) <= WHOLE_PAIRS:
            every = np.arange(len(self.points))
            yield valid, every, self._within(valid, every)
            return
        cell = max(float(np.median(self.radius[valid])) / 2.0, 1e-6)
        keys = np.floor(self.centres[valid] / cell).astype(np.int64)
        _, group = np.unique(keys, axis=0, return_inverse=True)
        order = np.argsort(group.ravel(), kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(group.ravel()[order]) != 0])
        by_x = np.argsort(self.points[:, 0], kind="stable")
        xs = self.points[by_x, 0]
        for rows in np.split(valid[order], starts[1:]):
            centres, radius = self.centres[rows], self.radius[rows]
            low, high = (centres - radius[:, None]).min(axis=0), (centres + radius[:, None]).max(axis=0)
            start, stop = np.searchsorted(xs, low[0], "left"), np.searchsorted(xs, high[0], "right")
            cols = by_x[start:stop]
            cols = cols[(self.points[cols, 1] >= low[1]) & (self.points[cols, 1] <= high[1])]
            if len(cols):
                yield rows, cols, self._within(rows, cols)

    def _within(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        # in place: every temporary the size of a block costs as much as the arithmetic
        east = self.centres[rows, 0, None] - self.points[None, cols, 0]
        north = self.centres[rows, 1, None] - self.points[None, cols, 1]
        east *= east
        north *= north
        east += north
        return east <= self.radius[rows, None] ** 2


class Matcher(ABC):
    name: str

    def prepare(self, tile: Features) -> None:  # noqa: B027 — most matchers keep nothing per tile
        """Build what later matches against ``tile`` reuse (called once per cached tile)."""

    @abstractmethod
    def match(
        self, frame: Features, tile: Features, aligned: bool = False, reach: Reach | None = None
    ) -> Pairs:
        """Indices into ``frame.xy`` and ``tile.xy`` of the putative matches; ``aligned``: both images
        are north-up at one ground resolution; ``reach``: where a position prior lets each frame
        keypoint's match lie. A matcher may use either to choose among candidates; the verifier drops
        any pair out of reach afterwards."""
