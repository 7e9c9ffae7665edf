"""ORB (OpenCV): binary descriptors, the fastest of the classical extractors."""

from __future__ import annotations

import cv2

from geolink_edge.runtime.features.base import OpenCVExtractor


class Extractor(OpenCVExtractor):
    name = "orb"
    binary = True

    def __init__(self, max_features: int):
        orb = cv2.ORB_create(nfeatures=max_features, scaleFactor=1.2, nlevels=8, fastThreshold=10)
        super().__init__(orb, max_features)

    def set_budget(self, budget: int) -> None:
        self.detector.setMaxFeatures(budget)
