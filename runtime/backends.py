"""Embedders chosen by the model file's suffix (``.onnx``, ``.engine``, ``.pt``), one interface for all.

Each embedder reads the model card of its file, applies :func:`geolink_edge.preprocess.preprocess`
and returns L2-normalised float32 descriptors. Heavy libraries are imported only by the backend
that needs them, so this module imports on a machine without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError, require
from geolink_edge.preprocess import preprocess

ONNX_CARD_KEY = "geolink_model_card"
ONNX_PRECISION_KEY = "geolink_precision"


class Embedder(Protocol):
    card: ModelCard
    name: str

    def embed(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray: ...


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class OnnxEmbedder:
    """ONNX Runtime; uses the TensorRT or CUDA provider when present, else the CPU."""

    PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int = 0):
        ort = require(
            "onnxruntime", "pip install 'geolink-edge[export]' (or onnxruntime-gpu on a GPU machine)"
        )
        path = Path(path)
        available = ort.get_available_providers()
        chosen = [p for p in (providers or self.PREFERRED) if p in available] or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            raise GeolinkError(
                f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:160]})"
            ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if ONNX_CARD_KEY not in meta:
            raise GeolinkError(
                f"{path}: ONNX model has no geolink model card (export it with geolink-edge export)"
            )
        self.card = ModelCard.from_json(meta[ONNX_CARD_KEY], source=str(path))
        self.precision = meta.get(ONNX_PRECISION_KEY, "fp32")
        self.input_name = self.session.get_inputs()[0].name
        self.name = f"onnxruntime[{self.session.get_providers()[0]}] {self.precision}"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Descriptors of an already preprocessed (N, 3, H, W) batch."""
        return _l2_normalise(self.session.run(None, {self.input_name: batch})[0])

    def embed(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return self.run(preprocess(images_bgr, self.card))


class TorchEmbedder:
    """A training checkpoint through torch (desktop debugging and index building)."""

    def __init__(self, path: str | Path, device: str | None = None):
        torch = require("torch", "the .pt backend needs torch: pip install 'geolink-edge[train]'")
        from geolink_edge.models.checkpoint import load_encoder

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        encoder, self.card = load_encoder(path)
        self.encoder = encoder.to(self.device).eval()
        self.name = f"torch[{self.device}]"
        self._torch = torch

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.encoder(self._torch.from_numpy(batch).to(self.device))
        return _l2_normalise(out.float().cpu().numpy())

    def embed(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return self.run(preprocess(images_bgr, self.card))


def load_embedder(path: str | Path, **kwargs) -> Embedder:
    """Open a model file with the backend its suffix calls for."""
    path = Path(path)
    if not path.is_file():
        raise GeolinkError(f"{path}: model file not found")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxEmbedder(path, **kwargs)
    if suffix == ".pt":
        return TorchEmbedder(path, **kwargs)
    if suffix == ".engine":
        from geolink_edge.runtime.tensorrt_backend import TensorRTEmbedder

        return TensorRTEmbedder(path, **kwargs)
    raise GeolinkError(f"{path}: unknown model type {suffix!r} (expected .onnx, .engine or .pt)")
