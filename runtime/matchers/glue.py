"""What LightGlue and LighterGlue share: run the network (torch, or an exported ONNX/TensorRT
file) on the keypoints and descriptors of a frame and a tile, keep the pairs it assigns."""

from __future__ import annotations

import numpy as np

from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.features.base import Extractor, Features
from geolink_edge.runtime.matchers.base import Matcher, Pairs, Reach


class GlueMatcher(Matcher):
    def __init__(
        self, extractor: Extractor, model=None, weights: str | None = None, spec: dict | None = None, **_
    ):
        if model is None:
            from geolink_edge.backends.torch_checkpoint import ModuleBackend
            from geolink_edge.localnets import MATCHER_IO, create_net

            # early exit and point pruning: faster through torch, same matches in the common case
            net = create_net(self.name, extractor.name, weights, adaptive=True)
            model = ModuleBackend(net, *MATCHER_IO, device="cpu")
        elif spec["features"] != extractor.name:
            raise GeolinkError(
                f"this {self.name} was exported for {spec['features']} features, not {extractor.name}"
            )
        self.model = model

    def match(
        self, frame: Features, tile: Features, aligned: bool = False, reach: Reach | None = None
    ) -> Pairs:
        empty = np.zeros(0, dtype=np.int64)
        if len(frame.xy) == 0 or len(tile.xy) == 0:
            return empty, empty
        feeds = {
            "keypoints0": frame.xy[None].astype(np.float32),
            "keypoints1": tile.xy[None].astype(np.float32),
            "descriptors0": frame.descriptors[None].astype(np.float32),
            "descriptors1": tile.descriptors[None].astype(np.float32),
            "size0": np.array([frame.size], np.float32),
            "size1": np.array([tile.size], np.float32),
        }
        matches = self.model.run(feeds)[0][0]
        query = np.flatnonzero(matches >= 0)
        return query.astype(np.int64), matches[query].astype(np.int64)
