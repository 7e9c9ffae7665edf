"""LightGlue: attention over both keypoint sets; weights for DISK and ALIKED descriptors."""

from __future__ import annotations

from geolink_edge.runtime.matchers.glue import GlueMatcher


class Matcher(GlueMatcher):
    name = "lightglue"
