"""AKAZE (OpenCV): binary descriptors over a nonlinear scale space."""

from __future__ import annotations

import cv2
import numpy as np

from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.features.base import OpenCVExtractor


class Extractor(OpenCVExtractor):
    name = "akaze"
    binary = True

    def create(self, budget: int) -> cv2.Feature2D:
        # OpenCV 5 moved AKAZE to the contrib modules; 4.x has it in the main package
        create = getattr(cv2, "AKAZE_create", None) or getattr(
            getattr(cv2, "xfeatures2d", None), "AKAZE_create", None
        )
        if create is None:
            raise GeolinkError(
                f"this OpenCV ({cv2.__version__}) has no AKAZE; use sift or orb, or opencv-contrib"
            )
        return create(threshold=5e-4)

    def detect(self, image, mask, budget=None):
        # AKAZE has no feature budget of its own: keep the strongest responses
        budget = budget or self.max_features
        xy, descriptors, scores, shapes = super().detect(image, mask, budget)
        if len(xy) > budget:
            keep = np.argsort(-scores, kind="stable")[:budget]
            xy, descriptors, scores, shapes = xy[keep], descriptors[keep], scores[keep], shapes[keep]
        return xy, descriptors, scores, shapes
