"""ONNX Runtime: the TensorRT or CUDA provider when present, else the CPU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geolink_edge.backends.base import Backend
from geolink_edge.errors import GeolinkError, first_line, require

ORT_HINT = "pip install 'geolink-edge[export]' (or onnxruntime-gpu on a GPU machine)"


class OnnxBackend(Backend):
    PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int = 0):
        ort = require("onnxruntime", ORT_HINT)
        path = Path(path)
        available = ort.get_available_providers()
        chosen = [p for p in (providers or self.PREFERRED) if p in available] or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # ORT raises its own exception types for unreadable models
            raise GeolinkError(f"{path}: not a loadable ONNX model ({first_line(exc, 160)})") from None
        self.path = path
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.provider = self.session.get_providers()[0]
        self.name = f"onnxruntime[{self.provider}]"

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.outputs, feeds)
