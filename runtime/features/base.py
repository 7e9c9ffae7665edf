"""What every local-feature extractor gives and how it is called."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np


@dataclass
class Features:
    xy: np.ndarray  # (N, 2) float32 pixel coordinates in the original image
    descriptors: np.ndarray | None  # (N, D): float32, or uint8 rows of bits for binary descriptors
    size: tuple[int, int]  # (width, height) of the original image
    index: Any = None  # the matcher's search structure over these descriptors (cached reference tiles)
    scores: np.ndarray | None = None  # (N,) detection scores, when the extractor gives them
    kind: str = ""  # the extractor that made them: a learned matcher is trained for one kind
    shapes: np.ndarray | None = None  # (N, 2) orientation (degrees) and size (px), OpenCV detectors only
    turns: list[slice] = field(
        default_factory=list
    )  # parts detected on the image turned (each matched alone)
    ground: np.ndarray | None = None  # (N, 2) metres of each keypoint, for a georeferenced image
    codes: tuple[np.ndarray, np.ndarray] | None = None  # shape_codes(), kept: a window serves many frames

    def shape_codes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``shapes`` as unit direction vectors (N, 2) and log sizes (N,), so that matchers compare
        orientations and sizes by products and differences."""
        if self.codes is None and self.shapes is not None:
            turn = np.radians(self.shapes[:, 0].astype(np.float64))
            directions = np.c_[np.cos(turn), np.sin(turn)].astype(np.float32)
            self.codes = directions, np.log(self.shapes[:, 1]).astype(np.float32)
        return self.codes

    def part(self, rows: slice | np.ndarray) -> Features:
        """The keypoints ``rows`` (a slice, indices or a mask) picks, without the search structure; the
        shape codes come from the whole, computed once however many parts are taken."""
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return Features(
            self.xy[rows],
            pick(self.descriptors),
            self.size,
            scores=pick(self.scores),
            kind=self.kind,
            shapes=pick(self.shapes),
            ground=pick(self.ground),
            codes=None if self.shapes is None else tuple(c[rows] for c in self.shape_codes()),
        )


class Extractor(ABC):
    """Keypoints and descriptors of one image at the size it is handed.

    ``name`` picks the module, ``matcher`` is the natural matcher of these descriptors and ``binary``
    says they are compared by Hamming distance. ``max_features`` is the budget a call gets unless
    it asks for another (a map window keeps more keypoints than a frame, from the same extractor).
    """

    max_features: int

    name: str
    matcher: str = "nn"
    binary: bool = False
    grayscale: bool = False  # detects on intensity only: the verifier converts before it shrinks the image
    rotation_invariant: bool = False  # descriptors of a turned image match: no turned tries needed

    @abstractmethod
    def detect(
        self, image: np.ndarray, mask: np.ndarray | None, budget: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``(xy (N, 2) float32, descriptors (N, D) or None, scores (N,) or None, shapes (N, 2) or
        None)`` of a BGR or gray uint8 image, ``shapes`` being each keypoint's orientation (degrees)
        and size (px) where the detector gives them; keypoints only where ``mask`` (uint8, same
        size) is non-zero; at most ``budget`` of them (default ``max_features``)."""


def gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


class OpenCVExtractor(Extractor):
    """An OpenCV ``Feature2D`` detector-descriptor (oriented keypoints: rotation-invariant).

    OpenCV detectors hold their budget as state: each thread keeps its own per budget (map windows
    may be read on a thread of their own while frames are detected)."""

    grayscale = True
    rotation_invariant = True

    def __init__(self, max_features: int):
        self.max_features = max_features
        self._local = threading.local()
        self.create(max_features)  # an OpenCV without this detector fails here, not on the first frame

    @abstractmethod
    def create(self, budget: int) -> cv2.Feature2D:
        """A detector that keeps up to ``budget`` keypoints."""

    def detect(self, image, mask, budget=None):
        budget = budget or self.max_features
        detectors = self._local.__dict__.setdefault("detectors", {})
        if budget not in detectors:
            detectors[budget] = self.create(budget)
        keypoints, descriptors = detectors[budget].detectAndCompute(gray(image), mask)
        xy = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
        scores = np.array([kp.response for kp in keypoints], dtype=np.float32)
        shapes = np.array([(kp.angle, kp.size) for kp in keypoints], dtype=np.float32).reshape(-1, 2)
        return xy, descriptors, scores, shapes
