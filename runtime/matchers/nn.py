"""Nearest neighbour with Lowe's ratio test: the matcher of the classical descriptors.

Float descriptors of a cached tile are searched through a FLANN k-d forest built once per tile
(exact brute force was 3× slower on SIFT at no gain); binary ones by brute-force Hamming distance.

Between aligned images (a north-up ground view against a map window at the same resolution) a true
float-descriptor match keeps its keypoint's orientation and, give or take parallax, its size. There
the ratio test is replaced by that check: each frame keypoint takes the nearest of its
``ALIGNED_CANDIDATES`` nearest neighbours whose orientation and size agree. Over trees and roofs seen
from 40 m against a 0.5 m/px map the ratio test kept almost no true SIFT match (look-alike crowns are
never distinctly nearest), while the shape check keeps most of them and the position votes discard
the rest.

Guided (``allowed``: the pairs a position prior permits, when tracking): the candidates of a frame
keypoint are few, so the nearest allowed one must also be distinctly nearer than the second
(``guided_ratio``). On the synthetic 40 m flight over a 0.5 m/px map this found agreeing votes on
every frame where unguided matching left a fifth of them under the acceptance bar.
"""

from __future__ import annotations

import cv2
import numpy as np

from geolink_edge.runtime.features.base import Extractor, Features
from geolink_edge.runtime.matchers.base import Matcher as BaseMatcher
from geolink_edge.runtime.matchers.base import Pairs

ALIGNED_CANDIDATES = 8  # nearest neighbours searched for one whose keypoint shape agrees
MAX_TURN_DEG = 20.0  # orientation change of a true match between aligned images
MAX_SIZE_RATIO = 2.0  # size change, either way: roofs and crowns near a low camera look 1.3× larger
GUIDED_RATIO = 0.9  # nearest allowed vs second allowed (0.8 and 1.0 each lost frames on the low flight)
GUIDED_CHUNK = 65536  # pairs whose descriptor distances are computed at once (32 MB of SIFT gaps)


class Matcher(BaseMatcher):
    name = "nn"

    def __init__(self, extractor: Extractor, ratio: float = 0.85, kd_checks: int = 32, **_):
        self.binary = extractor.binary
        self.ratio = ratio
        self.kd_checks = kd_checks
        self.brute = cv2.BFMatcher(cv2.NORM_HAMMING if self.binary else cv2.NORM_L2)

    def prepare(self, tile: Features) -> None:
        if not self.binary and tile.descriptors is not None and len(tile.xy) >= 2:
            forest = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": self.kd_checks})
            forest.add([np.ascontiguousarray(tile.descriptors, dtype=np.float32)])
            forest.train()
            tile.index = forest

    def match(
        self, frame: Features, tile: Features, aligned: bool = False, allowed: Pairs | None = None
    ) -> Pairs:
        empty = np.zeros(0, dtype=np.int64)
        if frame.descriptors is None or tile.descriptors is None or len(frame.xy) < 2 or len(tile.xy) < 2:
            return empty, empty
        if allowed is not None and not self.binary:
            shaped = aligned and frame.shapes is not None and tile.shapes is not None
            return _guided(frame, tile, allowed, shaped)
        # binary descriptors keep the ratio test: their few distinct Hamming distances make look-alikes
        # many, and on the low flight ORB's shape-checked matches agreed on places hundreds of metres off
        shaped = aligned and not self.binary and frame.shapes is not None and tile.shapes is not None
        pairs = self._nearest(frame, tile, min(ALIGNED_CANDIDATES, len(tile.xy)) if shaped else 2)
        if shaped:
            return _first_alike(pairs, frame.shapes, tile.shapes)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        return (
            np.array([m.queryIdx for m in good], dtype=np.int64),
            np.array([m.trainIdx for m in good], dtype=np.int64),
        )

    def _nearest(self, frame: Features, tile: Features, k: int):
        if isinstance(tile.index, cv2.FlannBasedMatcher):
            return tile.index.knnMatch(np.ascontiguousarray(frame.descriptors, dtype=np.float32), k=k)
        return self.brute.knnMatch(frame.descriptors, tile.descriptors, k=k)


def _first_alike(pairs, frame_shapes: np.ndarray, tile_shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame keypoint, the nearest of its candidates (``knnMatch`` rows, nearest first) whose
    keypoint has its orientation and size; keypoints with none are left out."""
    rows = [p for p in pairs if p]
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    k = max(len(p) for p in rows)
    query = np.array([p[0].queryIdx for p in rows], dtype=np.int64)
    train = np.full((len(rows), k), -1, dtype=np.int64)
    for i, p in enumerate(rows):
        train[i, : len(p)] = [m.trainIdx for m in p]
    alike = (train >= 0) & _alike(frame_shapes[query][:, None, :], tile_shapes[train])
    found = alike.any(axis=1)
    first = alike.argmax(axis=1)
    return query[found], train[found, first[found]]


def _alike(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether keypoint shapes (orientation in degrees, size) ``a`` and ``b`` (broadcast) agree."""
    turn = np.abs((a[..., 0] - b[..., 0] + 180.0) % 360.0 - 180.0)
    sized = (a[..., 1] >= b[..., 1] / MAX_SIZE_RATIO) & (a[..., 1] <= b[..., 1] * MAX_SIZE_RATIO)
    return (turn <= MAX_TURN_DEG) & sized


def _guided(frame: Features, tile: Features, allowed: Pairs, shaped: bool) -> Pairs:
    """Per frame keypoint, its nearest allowed tile keypoint (of alike shape when ``shaped``), kept when
    distinctly nearer than the second allowed one. Only the allowed pairs are compared: on a high
    flight they are a twentieth of the frame × window pairs a brute-force search would score."""
    rows, cols = allowed
    if shaped:
        alike = _alike(frame.shapes[rows], tile.shapes[cols])
        rows, cols = rows[alike], cols[alike]
    a = np.asarray(frame.descriptors, dtype=np.float32)
    b = np.asarray(tile.descriptors, dtype=np.float32)
    distance = np.empty(len(rows), dtype=np.float32)
    for lo in range(0, len(rows), GUIDED_CHUNK):
        part = slice(lo, lo + GUIDED_CHUNK)
        gap = a[rows[part]] - b[cols[part]]
        distance[part] = np.einsum("ij,ij->i", gap, gap)
    order = np.lexsort((distance, rows))  # by frame keypoint, nearest first
    rows, cols, distance = rows[order], cols[order], np.sqrt(distance[order])
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, np.int64)
    has_second = np.r_[first[1:], len(rows)] - first > 1
    second = np.where(has_second, distance[np.minimum(first + 1, len(rows) - 1)], np.inf)
    keep = distance[first] < GUIDED_RATIO * second
    return rows[first[keep]].astype(np.int64), cols[first[keep]].astype(np.int64)
