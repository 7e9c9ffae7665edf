"""XFeat (learned, light; natural matcher: LighterGlue). Not rotation-invariant: north-up or turns."""

from __future__ import annotations

from geolink_edge.runtime.features.learned import LearnedExtractor


class Extractor(LearnedExtractor):
    name = "xfeat"
    matcher = "lighterglue"
