"""Local-feature extractors by name, one module each: a module here whose ``Extractor`` class says
``name = "<the module's name>"`` is one (OpenCV's ``sift``, ``orb``, ``akaze``; the learned
``disk``, ``aliked``, ``xfeat``, through torch or an exported ONNX/TensorRT file)."""

from __future__ import annotations

from geolink_edge.errors import GeolinkError
from geolink_edge.registry import implementations, load_module
from geolink_edge.runtime.features.base import Extractor, Features
from geolink_edge.runtime.registry import is_model_file, open_exported

CLASSICAL_FEATURES = 3000  # a 512-px reference crop yields more than 1500 SIFT features: keep them all


def extractor_class(name: str) -> type[Extractor]:
    """The extractor class called ``name``, or the one-line error that lists them."""
    return load_module("local features", name, __name__).Extractor


def learned_extractors() -> dict[str, type[Extractor]]:
    """The extractors that run a network (each has a torch module of its name in ``localnets``)."""
    from geolink_edge.runtime.features.learned import LearnedExtractor

    return implementations("local features", __name__, "Extractor", LearnedExtractor)


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
        budget = max_features or spec["max_keypoints"]  # each tile of a larger image gives its own
        return extractor_class(spec["name"])(budget, model=model, spec=spec)
    cls = extractor_class(name)
    if issubclass(cls, LearnedExtractor):
        return cls(max_features or LearnedExtractor.default_features, weights=weights, headroom=headroom)
    if weights is not None:
        raise GeolinkError(f"{name} features take no weights file")
    return cls(max_features or CLASSICAL_FEATURES)


__all__ = [
    "Extractor",
    "Features",
    "create_extractor",
    "extractor_class",
    "learned_extractors",
]
