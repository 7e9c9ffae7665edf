"""The encoder through any backend: BGR images → L2-normalised descriptors, checked by its model card.

Each embedder reads the model card its file records, applies :func:`geolink_edge.preprocess.preprocess`
and returns L2-normalised float32 descriptors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geolink_edge.backends.base import Backend
from geolink_edge.backends.metadata import CARD_KEY, PRECISION_KEY
from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError
from geolink_edge.preprocess import preprocess


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Embedder:
    """``embed(images)``; ``run(batch)`` for an already preprocessed (N, 3, H, W) batch."""

    max_batch: int | None = None  # the engine's profile limit; None: any batch

    def __init__(self, backend: Backend, where: str):
        self.backend = backend
        if CARD_KEY not in backend.metadata:
            raise GeolinkError(
                f"{where}: model has no geolink model card (export it with geolink-edge export)"
            )
        self.card = ModelCard.from_json(backend.metadata[CARD_KEY], source=where)
        self.precision = backend.metadata.get(PRECISION_KEY, "fp32")
        self.input_name = backend.inputs[0]
        self.name = f"{backend.name} {self.precision}"

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.max_batch or max(len(batch), 1)
        parts = [
            self.backend.run({self.input_name: batch[i : i + step]})[0] for i in range(0, len(batch), step)
        ]
        if not parts:
            return np.zeros((0, self.card.descriptor_dim), np.float32)
        return _l2_normalise(np.concatenate(parts, axis=0))

    def embed(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return self.run(preprocess(images_bgr, self.card))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OnnxEmbedder(Embedder):
    """ONNX Runtime (TensorRT or CUDA provider when present, else the CPU)."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int = 0):
        from geolink_edge.backends.ort import OnnxBackend

        backend = OnnxBackend(path, providers, threads)
        super().__init__(backend, str(path))
        self.session = backend.session


class TensorRTEmbedder(Embedder):
    """``encoder.engine`` after its sidecar is checked against this TensorRT and this GPU."""

    def __init__(self, path: str | Path, device: int = 0, warmup_runs: int = 3):
        from geolink_edge.backends.tensorrt_engine import TensorRTBackend

        backend = TensorRTBackend(path, device)
        try:
            super().__init__(backend, str(path))
            self.max_batch = int(backend.sidecar["profile"]["max"])
            height, width = self.card.image_size
            warm = np.zeros((1, 3, height, width), np.float32)
            for _ in range(warmup_runs):  # first runs pay for lazy kernel loading
                self.run(warm)
        except BaseException:
            backend.close()
            raise


class TorchEmbedder(Embedder):
    """A training checkpoint through torch (desktop debugging and index building)."""

    def __init__(self, path: str | Path, device: str | None = None):
        from geolink_edge.backends.torch_checkpoint import TorchBackend

        super().__init__(TorchBackend(path, device), str(path))
        self.device = self.backend.device
