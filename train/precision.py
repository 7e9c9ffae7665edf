"""Device and mixed-precision choices: bf16 where the GPU has it, fp16 with loss scaling otherwise."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from geolink_edge.errors import GeolinkError


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GeolinkError(f"--device {name}: no CUDA device is visible")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GeolinkError(f"--device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (None = fp32) on a device, and whether gradients need scaling (fp16)."""

    device: torch.device
    dtype: torch.dtype | None

    @classmethod
    def choose(cls, mode: str, device: torch.device) -> Precision:
        if device.type != "cuda":
            if mode in ("bf16", "fp16"):
                raise GeolinkError(f"--amp {mode} needs a CUDA device (training on {device})")
            return cls(device, None)
        if mode == "auto":
            mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return cls(device, {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode])

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """Active only for fp16; a disabled scaler still saves and restores its (empty) state."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
