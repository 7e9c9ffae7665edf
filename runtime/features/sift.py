"""SIFT (OpenCV): float descriptors, rotation- and scale-invariant, no extra dependency."""

from __future__ import annotations

import cv2

from geolink_edge.runtime.features.base import OpenCVExtractor


class Extractor(OpenCVExtractor):
    name = "sift"

    def __init__(self, max_features: int):
        # half OpenCV's default contrast threshold: aerial imagery is low-contrast (haze, soft shadows),
        # and on synthetic flights it doubles the inliers against the reference crops
        super().__init__(cv2.SIFT_create(nfeatures=max_features, contrastThreshold=0.02), max_features)

    def set_budget(self, budget: int) -> None:
        self.detector.setNFeatures(budget)
