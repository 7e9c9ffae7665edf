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

Guided (``reach``: where a position prior lets each frame keypoint's match lie, when tracking): the
candidates of a frame keypoint are few, so the nearest one in reach must also be distinctly nearer
than the second (``GUIDED_RATIO``). On the synthetic 40 m flight over a 0.5 m/px map this found
agreeing votes on every frame where unguided matching left a fifth of them under the acceptance bar.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from threadpoolctl import ThreadpoolController

from geolink_edge.runtime.features.base import Extractor, Features
from geolink_edge.runtime.matchers.base import Matcher as BaseMatcher
from geolink_edge.runtime.matchers.base import Pairs, Reach

ALIGNED_CANDIDATES = 8  # nearest neighbours searched for one whose keypoint shape agrees
MAX_TURN_DEG = 20.0  # orientation change of a true match between aligned images
MAX_SIZE_RATIO = 2.0  # size change, either way: roofs and crowns near a low camera look 1.3× larger
# the same rule on shape codes (Features.shape_codes): a turn's cosine and a log size change
MIN_TURN_COSINE = math.cos(math.radians(MAX_TURN_DEG))
MAX_LOG_SIZE_CHANGE = math.log(MAX_SIZE_RATIO)
# one BLAS thread for the distance products: on two cores OpenBLAS's idle workers spin for a while
# after each product and slowed SIFT and the encoder by a third (low flight: 45 → 75 ms a frame)
BLAS = ThreadpoolController()
GUIDED_RATIO = 0.9  # nearest allowed vs second allowed (0.8 and 1.0 each lost frames on the low flight)


class Matcher(BaseMatcher):
    name = "nn"

    def __init__(self, extractor: Extractor, ratio: float = 0.85, kd_checks: int = 32, **_):
        self.binary = extractor.binary
        self.ratio = ratio
        self.kd_checks = kd_checks
        self.brute = cv2.BFMatcher(cv2.NORM_HAMMING if self.binary else cv2.NORM_L2)

    def prepare(self, tile: Features) -> None:
        if not self.binary and tile.descriptors is not None and len(tile.xy) >= 2:
            # the forest's random splits come from OpenCV's RNG (per thread): seeded, a tile's matches
            # no longer depend on what else the process has matched before
            cv2.setRNGSeed(0)
            forest = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": self.kd_checks})
            forest.add([np.ascontiguousarray(tile.descriptors, dtype=np.float32)])
            forest.train()
            tile.index = forest

    def match(
        self, frame: Features, tile: Features, aligned: bool = False, reach: Reach | None = None
    ) -> Pairs:
        empty = np.zeros(0, dtype=np.int64)
        if frame.descriptors is None or tile.descriptors is None or len(frame.xy) < 2 or len(tile.xy) < 2:
            return empty, empty
        if reach is not None and not self.binary:
            shaped = aligned and frame.shapes is not None and tile.shapes is not None
            return _guided(frame, tile, reach, shaped)
        # binary descriptors keep the ratio test: their few distinct Hamming distances make look-alikes
        # many, and on the low flight ORB's shape-checked matches agreed on places hundreds of metres off
        shaped = aligned and not self.binary and frame.shapes is not None and tile.shapes is not None
        pairs = self._nearest(frame, tile, min(ALIGNED_CANDIDATES, len(tile.xy)) if shaped else 2)
        if shaped:
            return _first_alike(pairs, frame.shape_codes(), tile.shape_codes())
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        return (
            np.array([m.queryIdx for m in good], dtype=np.int64),
            np.array([m.trainIdx for m in good], dtype=np.int64),
        )

    def _nearest(self, frame: Features, tile: Features, k: int):
        if isinstance(tile.index, cv2.FlannBasedMatcher):
            return tile.index.knnMatch(np.ascontiguousarray(frame.descriptors, dtype=np.float32), k=k)
        return self.brute.knnMatch(frame.descriptors, tile.descriptors, k=k)


def _first_alike(pairs, frame_codes, tile_codes) -> tuple[np.ndarray, np.ndarray]:
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
    (frame_turn, frame_size), (tile_turn, tile_size) = frame_codes, tile_codes
    cosine = np.einsum("nk,nmk->nm", frame_turn[query], tile_turn[train])
    alike = (train >= 0) & _alike(cosine, frame_size[query, None] - tile_size[train])
    found = alike.any(axis=1)
    first = alike.argmax(axis=1)
    return query[found], train[found, first[found]]


def _alike(cosine: np.ndarray, log_size_change: np.ndarray) -> np.ndarray:
    """Whether keypoints agree in shape, from their directions' dot products and log size differences."""
    return (cosine >= MIN_TURN_COSINE) & (np.abs(log_size_change) <= MAX_LOG_SIZE_CHANGE)


def _guided(frame: Features, tile: Features, reach: Reach, shaped: bool) -> Pairs:
    """Per frame keypoint, its nearest tile keypoint in reach (of alike shape when ``shaped``), kept
    when distinctly nearer than the second one in reach. Distances are computed block by block (see
    :meth:`Reach.blocks`) as |a|² + |b|² − 2a·b: one matrix product per block instead of a gather of
    every reachable pair's descriptors, 3–4× faster on a high flight's frame."""
    a = np.asarray(frame.descriptors, dtype=np.float32)
    b = np.asarray(tile.descriptors, dtype=np.float32)
    a_norm, b_norm = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    query, train = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    if shaped:
        (frame_turn, frame_size), (tile_turn, tile_size) = frame.shape_codes(), tile.shape_codes()
    with BLAS.limit(limits=1, user_api="blas"):
        for rows, cols, allowed in reach.blocks():
            if shaped:
                cosine = frame_turn[rows] @ tile_turn[cols].T
                allowed &= _alike(cosine, frame_size[rows, None] - tile_size[cols])
            distance = a[rows] @ b[cols].T
            distance *= -2.0
            distance += a_norm[rows, None]
            distance += b_norm[None, cols]
            np.maximum(distance, 0.0, out=distance)
            distance[~allowed] = np.inf
            keep, best = _ratio_tested(distance)
            query.append(rows[keep])
            train.append(cols[best[keep]])
    query, train = np.concatenate(query), np.concatenate(train)
    order = np.argsort(query, kind="stable")
    return query[order], train[order]


def _ratio_tested(distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of squared distances (inf: not a candidate), whether its nearest candidate is distinctly
    nearer than its second, and which column that is. Overwrites ``distance``."""
    rows = np.arange(len(distance))
    best = distance.argmin(axis=1)
    nearest = distance[rows, best]
    distance[rows, best] = np.inf
    return np.isfinite(nearest) & (nearest < GUIDED_RATIO**2 * distance.min(axis=1)), best
