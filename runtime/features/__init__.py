"""Local-feature extractors by name, one module each (``sift``, ``orb``, ``akaze``: OpenCV;
``disk``, ``aliked``, ``xfeat``: learned, through torch or an exported ONNX/TensorRT file)."""

from __future__ import annotations

from geolink_edge.runtime.features.base import Extractor, Features
from geolink_edge.runtime.registry import load_module

EXTRACTORS = ("sift", "orb", "akaze", "disk", "aliked", "xfeat")


def create_extractor(name: str, max_features: int, **options) -> Extractor:
    """The extractor called ``name``; ``options`` go to learned ones (weights file, device)."""
    module = load_module("local features", name, __name__, EXTRACTORS)
    return module.Extractor(max_features, **options)


__all__ = ["EXTRACTORS", "Extractor", "Features", "create_extractor"]
