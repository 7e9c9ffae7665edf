"""Pick an implementation by name: one module per name, imported only when chosen."""

from __future__ import annotations

import importlib
from types import ModuleType

from geolink_edge.errors import GeolinkError


def check_name(kind: str, name: str, names: tuple[str, ...]) -> None:
    """A one-line error listing the names there are, unless ``name`` is one of them."""
    if name not in names:
        raise GeolinkError(f"unknown {kind} {name!r} (choose from {', '.join(names)})")


def load_module(kind: str, name: str, package: str, names: tuple[str, ...]) -> ModuleType:
    """The module ``package.name``, or a one-line error listing the names there are."""
    check_name(kind, name, names)
    return importlib.import_module(f"{package}.{name}")


MODEL_SUFFIXES = (".onnx", ".engine")


def is_model_file(name: str) -> bool:
    """Whether a ``--features`` / ``--matcher`` value names an exported model rather than a module."""
    return name.lower().endswith(MODEL_SUFFIXES)


def open_exported(path: str, kind: str):
    """(backend, description) of an exported extractor or matcher; the file must say it is one."""
    import json

    from geolink_edge.backends import LOCAL_FEATURES_KEY, load_backend

    backend = load_backend(path)
    try:
        spec = json.loads(backend.metadata[LOCAL_FEATURES_KEY])
    except (KeyError, ValueError):
        backend.close()
        raise GeolinkError(
            f"{path}: not an exported {kind} (make one with geolink-edge export-matching)"
        ) from None
    if spec.get("kind") != kind:
        backend.close()
        raise GeolinkError(f"{path}: an exported {spec.get('kind')} where a {kind} is expected")
    return backend, spec
