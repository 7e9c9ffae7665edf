"""MixVPR aggregation: mix each channel's spatial map with MLPs, then project channels and rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureMixer(nn.Module):
    """``x + MLP(LayerNorm(x))`` along the flattened spatial axis (one row per channel)."""

    def __init__(self, spatial: int, mlp_ratio: float):
        super().__init__()
        hidden = max(1, int(round(spatial * mlp_ratio)))
        self.mix = nn.Sequential(
            nn.LayerNorm(spatial),
            nn.Linear(spatial, hidden),
            nn.ReLU(),
            nn.Linear(hidden, spatial),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPR(nn.Module):
    """(B, C, h, w) feature map → L2-normalised (B, out_channels · out_rows) descriptor."""

    def __init__(
        self,
        in_channels: int,
        in_hw: tuple[int, int],
        out_channels: int = 1024,
        out_rows: int = 4,
        mix_depth: int = 2,
        mlp_ratio: float = 1.0,
    ):
        super().__init__()
        spatial = in_hw[0] * in_hw[1]
        self.mixers = nn.Sequential(*(FeatureMixer(spatial, mlp_ratio) for _ in range(mix_depth)))
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(spatial, out_rows)
        self.out_dim = out_channels * out_rows
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        x = self.mixers(feature_map.flatten(2))  # (B, C, hw)
        x = self.channel_proj(x.transpose(1, 2))  # (B, hw, out_channels)
        x = self.row_proj(x.transpose(1, 2))  # (B, out_channels, out_rows)
        return F.normalize(x.flatten(1), dim=-1)
