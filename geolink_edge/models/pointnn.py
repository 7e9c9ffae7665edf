"""Point-NN: a non-parametric point-cloud encoder (FPS, k-NN, trigonometric encodings, pooling).

The function of the reference implementation (ZrrSkywalker/Point-NN, run in eval mode): sin/cos
channels interleaved per frequency, and after each stage's pooling its untrained BatchNorm (in eval
mode, x / sqrt(1 + 1e-5)) and a GELU. Two departures, both so that a cloud's feature is its own:
FPS starts from the point farthest from the centroid (the reference starts from the first stored
point, so its output depends on the storage order), and the neighbourhood spread that normalises
each stage is one scalar per cloud (the reference takes one over the whole batch). For a single
cloud whose first point is the farthest from the centroid the two functions are the same.
Pure torch (the farthest point sampling of the original is a CUDA extension). Nothing is learned,
so train and eval mode give the same output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geolink_edge.errors import GeolinkError

# an untrained BatchNorm1d in eval mode (running mean 0, variance 1, eps 1e-5) only scales
EVAL_BATCHNORM_SCALE = (1 + 1e-5) ** -0.5


def farthest_point_sample(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (B, count) of points picked one by one as far as possible from those already picked.

    Starts from the point farthest from the centroid rather than from index 0, so the chosen set
    does not depend on the order the points are stored in.
    """
    batch, n, _ = xyz.shape
    rows = torch.arange(batch, device=xyz.device)
    chosen = torch.empty(batch, count, dtype=torch.long, device=xyz.device)
    centroid = xyz.mean(dim=1, keepdim=True)
    current = ((xyz - centroid) ** 2).sum(-1).argmax(-1)
    nearest = torch.full((batch, n), float("inf"), device=xyz.device, dtype=xyz.dtype)
    for i in range(count):
        chosen[:, i] = current
        step = ((xyz - xyz[rows, current].unsqueeze(1)) ** 2).sum(-1)
        nearest = torch.minimum(nearest, step)
        current = nearest.argmax(-1)
    return chosen


def knn_indices(points: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, G, k) of the ``k`` points nearest to each centre."""
    return torch.cdist(centres, points).topk(k, dim=-1, largest=False).indices


def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values`` (B, N, C) picked at ``index`` (B, ...) → (B, ..., C)."""
    batch = values.shape[0]
    flat = index.reshape(batch, -1)
    picked = values.gather(1, flat.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return picked.reshape(*index.shape, values.shape[-1])


def trig_encoding(xyz: torch.Tensor, dim: int, alpha: float, beta: float) -> torch.Tensor:
    """Sin/cos of ``beta·x / alpha^(i/f)`` for each coordinate, f = dim/6 frequencies → (..., dim).

    Channels per coordinate, then per frequency, then sin before cos: x sin₀, x cos₀, x sin₁, …
    """
    if dim % 6:
        raise GeolinkError(f"Point-NN feature dims must be multiples of 6, got {dim}")
    freqs = dim // 6
    scale = alpha ** (torch.arange(freqs, device=xyz.device, dtype=xyz.dtype) / freqs)
    angles = beta * xyz.unsqueeze(-1) / scale  # (..., 3, f)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-3)


def _per_cloud_std(x: torch.Tensor) -> torch.Tensor:
    """One scalar spread per cloud, broadcastable to ``x`` (B, ...)."""
    return x.flatten(1).std(dim=1).reshape(-1, *([1] * (x.ndim - 1)))


class PointNN(nn.Module):
    """Point clouds (B, N, 3) → global features (B, embed_dim · 2^stages), 1152-d with the defaults."""

    def __init__(
        self,
        stages: int = 4,
        embed_dim: int = 72,
        k: int = 90,
        alpha: float = 1000.0,
        beta: float = 100.0,
    ):
        super().__init__()
        if stages < 1 or k < 1 or embed_dim < 6:
            raise GeolinkError(f"invalid Point-NN settings: stages={stages}, k={k}, embed_dim={embed_dim}")
        self.stages, self.embed_dim, self.k = stages, embed_dim, k
        self.alpha, self.beta = alpha, beta
        self.out_dim = embed_dim * 2**stages

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        if xyz.ndim != 3 or xyz.shape[-1] != 3:
            raise GeolinkError(f"Point-NN expects (B, N, 3) points, got {tuple(xyz.shape)}")
        smallest = xyz.shape[1] >> (self.stages - 1)  # points available to the last stage
        if smallest < self.k or xyz.shape[1] >> self.stages < 1:
            raise GeolinkError(
                f"Point-NN with {self.stages} stages and k={self.k} needs at least "
                f"{max(self.k, 2) << (self.stages - 1)} points, got {xyz.shape[1]}"
            )
        xyz = xyz.float()
        feats = trig_encoding(xyz, self.embed_dim, self.alpha, self.beta)
        for _ in range(self.stages):
            xyz, feats = self._stage(xyz, feats)
        return feats.max(dim=1).values + feats.mean(dim=1)

    def _stage(self, xyz: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Halve the points: group k neighbours around FPS centres, encode their geometry, pool,
        then the reference's BatchNorm (eval) + GELU."""
        centre_idx = farthest_point_sample(xyz, xyz.shape[1] // 2)
        centres, centre_feats = gather(xyz, centre_idx), gather(feats, centre_idx)
        group = knn_indices(xyz, centres, self.k)
        rel_xyz = gather(xyz, group) - centres.unsqueeze(2)  # (B, G, k, 3)
        rel_feats = gather(feats, group) - centre_feats.unsqueeze(2)
        rel_xyz = rel_xyz / (_per_cloud_std(rel_xyz) + 1e-5)
        rel_feats = rel_feats / (_per_cloud_std(rel_feats) + 1e-5)
        grouped = torch.cat([rel_feats, centre_feats.unsqueeze(2).expand_as(rel_feats)], dim=-1)
        geometry = trig_encoding(rel_xyz, grouped.shape[-1], self.alpha, self.beta)
        weighted = (grouped + geometry) * geometry
        pooled = weighted.max(dim=2).values + weighted.mean(dim=2)
        return centres, F.gelu(pooled * EVAL_BATCHNORM_SCALE)
