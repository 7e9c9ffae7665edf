"""Matchers by name, one module each (``nn``: nearest neighbour + ratio test; ``lightglue``,
``lighterglue``: learned, through torch or an exported ONNX/TensorRT file)."""

from __future__ import annotations

from geolink_edge.registry import load_module
from geolink_edge.runtime.features.base import Extractor
from geolink_edge.runtime.matchers.base import Matcher
from geolink_edge.runtime.registry import is_model_file, open_exported

MATCHERS = ("nn", "lightglue", "lighterglue")


def create_matcher(name: str | None, extractor: Extractor, **options) -> Matcher:
    """The matcher called ``name`` (None: the extractor's natural one), or the exported one in the
    file ``name`` (.onnx, .engine), for ``extractor``'s features."""
    if name is not None and is_model_file(name):
        model, spec = open_exported(name, "matcher")
        module = load_module("matcher", spec["name"], __name__, MATCHERS)
        return module.Matcher(extractor, model=model, spec=spec)
    module = load_module("matcher", name or extractor.matcher, __name__, MATCHERS)
    return module.Matcher(extractor, **options)


__all__ = ["MATCHERS", "Matcher", "create_matcher"]
