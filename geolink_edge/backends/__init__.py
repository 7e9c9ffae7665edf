"""Load any exported model by its file, AutoBackend-style: the suffix picks the backend.

``.onnx`` ONNX Runtime, ``.engine`` TensorRT (with its JSON sidecar), ``.pt`` torch (a training
checkpoint's encoder). Each backend offers ``run`` (named arrays in, arrays out), ``metadata``
and ``close``; heavy libraries are imported only by the backend that needs them, so this package
imports on a machine without torch, onnx, tensorrt or pycuda.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from geolink_edge.backends.base import Backend
from geolink_edge.backends.embedder import Embedder, OnnxEmbedder, TensorRTEmbedder, TorchEmbedder
from geolink_edge.backends.metadata import CARD_KEY, LOCAL_FEATURES_KEY, PRECISION_KEY
from geolink_edge.errors import GeolinkError
from geolink_edge.registry import choose

# suffix → (module, backend class, embedder class)
SUFFIXES = {
    ".onnx": ("ort", "OnnxBackend", OnnxEmbedder),
    ".engine": ("tensorrt_engine", "TensorRTBackend", TensorRTEmbedder),
    ".pt": ("torch_checkpoint", "TorchBackend", TorchEmbedder),
}


def _backend_of(path: Path, what: str) -> tuple[str, str, type[Embedder]]:
    if not path.is_file():
        raise GeolinkError(f"{path}: {what} file not found")
    try:
        return choose("model type", path.suffix.lower(), SUFFIXES)
    except GeolinkError as exc:
        raise GeolinkError(f"{path}: {exc}") from None


def load_backend(path: str | Path, **options) -> Backend:
    """Open a model file with the backend its suffix calls for."""
    path = Path(path)
    module, cls, _ = _backend_of(path, "model")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls).load(path, **options)


def load_embedder(path: str | Path, **options) -> Embedder:
    """The encoder in a model file, through the backend its suffix calls for."""
    path = Path(path)
    return _backend_of(path, "model")[2](path, **options)


__all__ = [
    "CARD_KEY",
    "LOCAL_FEATURES_KEY",
    "PRECISION_KEY",
    "SUFFIXES",
    "Backend",
    "Embedder",
    "OnnxEmbedder",
    "TensorRTEmbedder",
    "TorchEmbedder",
    "load_backend",
    "load_embedder",
]
