"""Local-feature extractors by name, one module each (``sift``, ``orb``, ``akaze``: OpenCV;
``disk``, ``aliked``, ``xfeat``: learned, through torch or an exported ONNX/TensorRT file)."""

from __future__ import annotations

from geolink_edge.errors import GeolinkError
from geolink_edge.registry import load_module
from geolink_edge.runtime.features.base import Extractor, Features
from geolink_edge.runtime.registry import is_model_file, open_exported

EXTRACTORS = ("sift", "orb", "akaze", "disk", "aliked", "xfeat")
CLASSICAL_FEATURES = 3000  # a 512-px reference crop yields more than 1500 SIFT features: keep them all


def create_extractor(
    name: str, max_features: int | None = None, weights: str | None = None, headroom: int = 1
) -> Extractor:
    """The extractor called ``name``, or the exported one in the file ``name`` (.onnx, .engine).

    ``max_features`` None: the extractor's own budget; ``weights``: a state-dict file for a learned one;
    ``headroom``: calls may ask for up to this many times the budget (a learned network run through
    torch has its number of keypoints built in).
    """
    from geolink_edge.runtime.features.learned import LearnedExtractor

    if is_model_file(name):
        model, spec = open_exported(name, "extractor")
        module = load_module("local features", spec["name"], __name__, EXTRACTORS)
        budget = max_features or spec["max_keypoints"]  # each tile of a larger image gives its own
        return module.Extractor(budget, model=model, spec=spec)
    module = load_module("local features", name, __name__, EXTRACTORS)
    if issubclass(module.Extractor, LearnedExtractor):
        budget = max_features or LearnedExtractor.default_features
        return module.Extractor(budget, weights=weights, headroom=headroom)
    if weights is not None:
        raise GeolinkError(f"{name} features take no weights file")
    return module.Extractor(max_features or CLASSICAL_FEATURES)


__all__ = ["EXTRACTORS", "Extractor", "Features", "create_extractor"]
