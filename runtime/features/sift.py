"""SIFT (OpenCV): float descriptors, rotation- and scale-invariant, no extra dependency."""

from __future__ import annotations

import cv2

from geolink_edge.runtime.features.base import OpenCVExtractor


class Extractor(OpenCVExtractor):
    name = "sift"

    def create(self, budget: int) -> cv2.Feature2D:
        # half OpenCV's default contrast threshold: aerial imagery is low-contrast (haze, soft shadows),
        # and on synthetic flights it doubles the inliers against the reference crops
        return cv2.SIFT_create(nfeatures=budget, contrastThreshold=0.02)
