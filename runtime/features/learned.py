"""What the learned extractors share: run the network (torch, or an exported ONNX/TensorRT file),
keep the keypoints it scored, in the image's own pixels.

Through torch the image is padded to the network's divisor. An exported network has one input
size (recorded in its metadata, static for TensorRT and for XFeat's keypoint head): a larger image
is cut into overlapping tiles of that size, never shrunk, so that a map window keeps the ground
resolution the frame was resampled to (shrinking a 1500-px window into 640 px matched the map at
2.4 times the frame's GSD). Each tile keeps the keypoints of its core (away from the overlap, where
the network sees a cut-off neighbourhood), and the strongest are kept over all tiles.
"""

from __future__ import annotations

import cv2
import numpy as np

from geolink_edge.runtime.features.base import Extractor


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of tiles of ``tile`` px that cover ``length`` px, neighbours sharing ``overlap`` px
    or more (the last tile flush with the end)."""
    if length <= tile:
        return [0]
    count = 1 + -(-(length - tile) // (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


class LearnedExtractor(Extractor):
    default_features = 1024

    def __init__(
        self,
        max_features: int,
        model=None,
        weights: str | None = None,
        spec: dict | None = None,
        headroom: int = 1,
    ):
        """``headroom``: a network run through torch finds this many times ``max_features`` keypoints,
        for the calls that ask for more (an exported network finds its own number per tile)."""
        if model is None:
            from geolink_edge.backends.torch_checkpoint import ModuleBackend
            from geolink_edge.localnets import EXTRACTOR_IO, create_net, describe_extractor

            net = create_net(self.name, max_features * headroom, weights)
            spec = describe_extractor(self.name, net, max_features * headroom, input_size=None)
            model = ModuleBackend(net, *EXTRACTOR_IO, device="cpu")
        self.model = model
        self.spec = spec
        self.max_features = max_features

    def detect(self, image, mask, budget=None):
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
        height, width = rgb.shape[:2]
        if self.spec["input_size"] is None:
            divisor = self.spec["divisor"]
            xy, scores, descriptors = self._run(
                rgb, (-(-height // divisor) * divisor, -(-width // divisor) * divisor)
            )
        else:
            xy, scores, descriptors = self._tiled(rgb, tuple(self.spec["input_size"]))
        keep = np.isfinite(scores) & (scores > self.spec["min_score"])
        if mask is not None:
            col = np.clip(np.round(xy[:, 0]).astype(int), 0, width - 1)
            row = np.clip(np.round(xy[:, 1]).astype(int), 0, height - 1)
            keep &= mask[row, col] > 0
        keep = np.flatnonzero(keep)
        strongest = keep[np.argsort(-scores[keep], kind="stable")]
        keep = strongest[: budget or self.max_features]
        return (
            xy[keep].astype(np.float32),
            descriptors[keep].astype(np.float32),
            scores[keep].astype(np.float32),
            None,  # the networks give no orientation or size
        )

    def _run(self, rgb: np.ndarray, canvas_size: tuple[int, int]):
        """The network on ``rgb`` padded to ``canvas_size`` (H, W): keypoints inside ``rgb`` only."""
        canvas = np.zeros((1, 3, *canvas_size), np.float32)
        canvas[0, :, : rgb.shape[0], : rgb.shape[1]] = rgb.transpose(2, 0, 1) / 255.0
        xy, scores, descriptors = (a[0] for a in self.model.run({self.model.inputs[0]: canvas}))
        inside = (xy[:, 0] <= rgb.shape[1] - 1) & (xy[:, 1] <= rgb.shape[0] - 1)
        return xy[inside], scores[inside], descriptors[inside]

    def _tiled(self, rgb: np.ndarray, size: tuple[int, int]):
        """The network on each tile of ``size`` (H, W); keypoints of each tile's core, in ``rgb``'s pixels."""
        height, width = rgb.shape[:2]
        overlap = min(size) // 4  # the network's view near a tile's edge is cut off
        rows, row_cores = _cores(height, size[0], overlap)
        cols, col_cores = _cores(width, size[1], overlap)
        parts = []
        for top, (y0, y1) in zip(rows, row_cores, strict=True):
            for left, (x0, x1) in zip(cols, col_cores, strict=True):
                xy, scores, descriptors = self._run(rgb[top : top + size[0], left : left + size[1]], size)
                xy = xy + np.array([left, top], dtype=xy.dtype)
                core = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
                parts.append((xy[core], scores[core], descriptors[core]))
        return (np.concatenate(p) for p in zip(*parts, strict=True))


def _cores(length: int, tile: int, overlap: int) -> tuple[list[int], list[tuple[float, float]]]:
    """Tile offsets along one axis and each tile's core: neighbours split their overlap in the middle."""
    origins = tile_origins(length, tile, overlap)
    cuts = [(a + tile + b) / 2.0 for a, b in zip(origins[:-1], origins[1:], strict=True)]
    return origins, list(zip([0.0, *cuts], [*cuts, float(length)], strict=True))
