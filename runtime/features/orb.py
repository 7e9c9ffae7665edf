"""ORB (OpenCV): binary descriptors, the fastest of the classical extractors."""

from __future__ import annotations

import cv2

from geolink_edge.runtime.features.base import OpenCVExtractor


class Extractor(OpenCVExtractor):
    name = "orb"
    binary = True

    def create(self, budget: int) -> cv2.Feature2D:
        return cv2.ORB_create(nfeatures=budget, scaleFactor=1.2, nlevels=8, fastThreshold=10)
