"""Matchers by name, one module each: a module here whose ``Matcher`` class says
``name = "<the module's name>"`` is one (``nn``: nearest neighbour + ratio test; the learned
``lightglue``, ``lighterglue``, through torch or an exported ONNX/TensorRT file)."""

from __future__ import annotations

from geolink_edge.registry import implementations, load_module
from geolink_edge.runtime.features.base import Extractor
from geolink_edge.runtime.matchers.base import Matcher
from geolink_edge.runtime.registry import is_model_file, open_exported


def matcher_class(name: str) -> type[Matcher]:
    """The matcher class called ``name``, or the one-line error that lists them."""
    return load_module("matcher", name, __name__).Matcher


def learned_matchers() -> dict[str, type[Matcher]]:
    """The matchers that run a network (each has a torch module of its name in ``localnets``)."""
    from geolink_edge.runtime.matchers.glue import GlueMatcher

    return implementations("matcher", __name__, "Matcher", GlueMatcher)


def create_matcher(name: str | None, extractor: Extractor, **options) -> Matcher:
    """The matcher called ``name`` (None: the extractor's natural one), or the exported one in the
    file ``name`` (.onnx, .engine), for ``extractor``'s features."""
    if name is not None and is_model_file(name):
        model, spec = open_exported(name, "matcher")
        return matcher_class(spec["name"])(extractor, model=model, spec=spec)
    return matcher_class(name or extractor.matcher)(extractor, **options)


__all__ = ["Matcher", "create_matcher", "learned_matchers", "matcher_class"]
