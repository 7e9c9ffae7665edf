"""Local features and matchers by name: a module of this package, or an exported model file."""

from __future__ import annotations

from geolink_edge.errors import GeolinkError

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
