"""The interface every model backend offers: load a file, run named arrays, close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class Backend(ABC):
    """One loaded model. ``metadata``: the string key/values the exporter recorded (ONNX
    ``metadata_props``, or the engine's sidecar); ``inputs`` / ``outputs``: tensor names in order."""

    name: str
    metadata: dict[str, str]
    inputs: list[str]
    outputs: list[str]

    @classmethod
    def load(cls, path: str | Path, **options) -> Backend:
        return cls(path, **options)

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in ``outputs`` order, for inputs given by name."""

    def close(self) -> None:  # noqa: B027 — most backends hold nothing that outlives the object
        """Release what the backend holds outside Python's memory (GPU buffers, contexts)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
