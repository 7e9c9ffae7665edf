"""torch: a training checkpoint's encoder (``.pt``), or any module built in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geolink_edge.backends.base import Backend
from geolink_edge.backends.metadata import CARD_KEY, PRECISION_KEY
from geolink_edge.errors import require

TORCH_HINT = "the .pt backend needs torch: pip install 'geolink-edge[train]'"


class ModuleBackend(Backend):
    """A torch module called with the named inputs in ``inputs`` order."""

    def __init__(
        self,
        module,
        inputs: list[str],
        outputs: list[str],
        metadata: dict[str, str] | None = None,
        device: str | None = None,
    ):
        self._torch = torch = require("torch", TORCH_HINT)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module = module.to(self.device).eval()
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.metadata = dict(metadata or {})
        self.name = f"torch[{self.device}]"

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(
                *[torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.inputs]
            )
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.cpu().numpy() for o in out]


class TorchBackend(ModuleBackend):
    """The 2D encoder of a training checkpoint (desktop debugging and index building)."""

    def __init__(self, path: str | Path, device: str | None = None):
        require("torch", TORCH_HINT)
        from geolink_edge.models.checkpoint import load_encoder

        encoder, card = load_encoder(path)
        super().__init__(
            encoder, ["images"], ["descriptors"], {CARD_KEY: card.to_json(), PRECISION_KEY: "fp32"}, device
        )
        self.path = Path(path)
