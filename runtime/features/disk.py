"""DISK (learned; natural matcher: LightGlue). Not rotation-invariant: north-up images or turns."""

from __future__ import annotations

from geolink_edge.runtime.features.learned import LearnedExtractor


class Extractor(LearnedExtractor):
    name = "disk"
    matcher = "lightglue"
