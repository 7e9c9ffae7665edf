"""LighterGlue: XFeat's six-layer, one-head LightGlue (a few times faster than LightGlue)."""

from __future__ import annotations

from geolink_edge.runtime.matchers.glue import GlueMatcher


class Matcher(GlueMatcher):
    name = "lighterglue"
