"""What the learned extractors share: run the network (torch, or an exported ONNX/TensorRT file),
keep the keypoints it scored, in the image's own pixels.

Through torch the image is padded to the network's divisor; an exported network has one input
size (recorded in its metadata), so the image is shrunk to fit it if larger and padded.
"""

from __future__ import annotations

import cv2
import numpy as np

from geolink_edge.runtime.features.base import Extractor


class LearnedExtractor(Extractor):
    default_features = 1024

    def __init__(self, max_features: int, model=None, weights: str | None = None, spec: dict | None = None):
        if model is None:
            from geolink_edge.backends.torch_checkpoint import ModuleBackend
            from geolink_edge.localnets import EXTRACTOR_IO, create_net, describe_extractor

            net = create_net(self.name, max_features, weights)
            spec = describe_extractor(self.name, net, max_features, input_size=None)
            model = ModuleBackend(net, *EXTRACTOR_IO, device="cpu")
        self.model = model
        self.spec = spec
        self.max_features = max_features

    def detect(self, image, mask):
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
        height, width = rgb.shape[:2]
        scale = 1.0
        if self.spec["input_size"] is None:
            divisor = self.spec["divisor"]
            canvas_h, canvas_w = -(-height // divisor) * divisor, -(-width // divisor) * divisor
        else:
            canvas_h, canvas_w = self.spec["input_size"]
            scale = min(1.0, canvas_h / height, canvas_w / width)
            if scale < 1.0:
                rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas = np.zeros((1, 3, canvas_h, canvas_w), np.float32)
        canvas[0, :, : rgb.shape[0], : rgb.shape[1]] = rgb.transpose(2, 0, 1) / 255.0
        xy, scores, descriptors = (a[0] for a in self.model.run({self.model.inputs[0]: canvas}))
        keep = np.isfinite(scores) & (scores > self.spec["min_score"])
        keep &= (xy[:, 0] <= rgb.shape[1] - 1) & (xy[:, 1] <= rgb.shape[0] - 1)
        xy = xy / scale
        if mask is not None:
            col = np.clip(np.round(xy[:, 0]).astype(int), 0, width - 1)
            row = np.clip(np.round(xy[:, 1]).astype(int), 0, height - 1)
            keep &= mask[row, col] > 0
        keep = np.flatnonzero(keep)[: self.max_features]  # outputs come strongest first
        return (
            xy[keep].astype(np.float32),
            descriptors[keep].astype(np.float32),
            scores[keep].astype(np.float32),
        )
