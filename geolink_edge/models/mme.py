"""The Mixture of Multi-Expert block that turns a global 3D feature into the 2D descriptor's size."""

from __future__ import annotations

import torch
from torch import nn

from geolink_edge.errors import GeolinkError


class Expert(nn.Module):
    """Mixes neighbouring feature channels with a dilated 1D convolution, then projects.

    Treating the global feature vector as a 1D signal gives each expert its own receptive field
    (kernel 3 with dilation 1, 2, 3... sees 3, 5, 7... channels).
    """

    def __init__(self, in_dim: int, out_dim: int, dilation: int):
        super().__init__()
        self.mix = nn.Conv1d(1, 1, kernel_size=3, dilation=dilation, padding=dilation)
        self.proj = nn.Sequential(nn.GELU(), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.mix(x.unsqueeze(1)).squeeze(1))


class MixtureOfExperts(nn.Module):
    """(B, in_dim) → (B, out_dim): gated experts and a shared 1x1 expert, concatenated.

    The gate gives each sample its own softmax weights over the experts; each weighted expert output
    and the shared expert's output fill one slice of the result.
    """

    def __init__(self, in_dim: int = 1152, out_dim: int = 4096, num_experts: int = 3):
        super().__init__()
        if num_experts < 1 or out_dim < num_experts + 1:
            raise GeolinkError(f"MME needs >= 1 expert and out_dim > experts, got {num_experts}, {out_dim}")
        part = out_dim // (num_experts + 1)
        sizes = [part] * num_experts + [out_dim - part * num_experts]
        self.norm = nn.LayerNorm(in_dim)  # Point-NN features are unscaled sums of trig terms
        self.experts = nn.ModuleList(Expert(in_dim, size, d + 1) for d, size in enumerate(sizes[:-1]))
        self.gate = nn.Linear(in_dim, num_experts)
        self.shared = nn.Linear(in_dim, sizes[-1])  # a 1x1 convolution over a vector
        self.out_dim = out_dim

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample expert weights (B, num_experts), each row summing to 1."""
        return self.gate(self.norm(x)).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate_weights(x)
        x = self.norm(x)
        parts = [weights[:, i : i + 1] * expert(x) for i, expert in enumerate(self.experts)]
        return torch.cat([*parts, self.shared(x)], dim=-1)
