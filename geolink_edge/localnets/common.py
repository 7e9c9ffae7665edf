"""Pieces shared by the learned networks: local maxima, top-K, descriptor sampling, weights, and the
form of the LightGlue-like matchers."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from geolink_edge.errors import GeolinkError, first_line, require


def package_file(package: str, resource: str, hint: str) -> Path:
    """A weights file shipped inside an installed package."""
    import importlib.resources

    require(package, hint)
    return Path(str(importlib.resources.files(package).joinpath(resource)))


def load_state(path: str | Path, key: str | None = None) -> dict:
    """A state dict from a weights file, never unpickling arbitrary objects."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a plain state dict
        raise GeolinkError(f"{path}: not a loadable weights file ({first_line(exc, 120)})") from None
    if key is not None and isinstance(state, dict) and key in state:
        state = state[key]
    if not isinstance(state, dict):
        raise GeolinkError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def top_k_maxima(
    heatmap: torch.Tensor, k: int, window: int, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best local maxima of a (1, 1, H, W) map: pixel xy (1, k, 2) and scores (1, k).

    Maxima are found on ``heatmap`` and ranked by ``heatmap * weight`` when a weight map is given.
    Non-maxima score -inf, so an image with fewer than ``k`` maxima ends in -inf scores the runtime drops.
    """
    width = heatmap.shape[-1]
    peaks = heatmap == F.max_pool2d(heatmap, window, stride=1, padding=window // 2)
    ranked = heatmap if weight is None else heatmap * weight
    masked = torch.where(peaks, ranked, torch.full_like(ranked, float("-inf"))).flatten(1)
    scores, index = torch.topk(masked, k, dim=1)
    xy = torch.stack([index % width, torch.div(index, width, rounding_mode="floor")], dim=-1)
    return xy.to(heatmap.dtype), scores


def sample_descriptors(
    dense: torch.Tensor, xy: torch.Tensor, size: tuple[int, int], mode: str
) -> torch.Tensor:
    """L2-normalised descriptors (1, K, D) of a dense (1, D, h, w) map at pixel ``xy`` of an image
    of ``size`` (H, W); pixel centres map onto the map's grid as in the networks' training."""
    height, width = size
    scale = torch.tensor([width - 1, height - 1], dtype=xy.dtype)
    grid = (2.0 * xy / scale - 1.0)[:, :, None, :]
    sampled = F.grid_sample(dense, grid, mode=mode, align_corners=False)  # (1, D, K, 1)
    return F.normalize(sampled[..., 0].transpose(1, 2), dim=-1)


class GlueNet(nn.Module):
    """A LightGlue-like matcher: attention over both keypoint sets, with weights trained for the
    descriptors of some extractors (``check_trained_for``). Subclasses set ``name`` and ``glue``."""

    name: str
    onnx_export = (True, 18)  # the TorchScript exporter fails on its attention; torch.export does not

    def __init__(self, features: str):
        from geolink_edge.localnets import check_trained_for

        super().__init__()
        check_trained_for(self.name, features)

    def forward(self, keypoints0, keypoints1, descriptors0, descriptors1, size0, size1):
        out = self.glue(
            {
                "image0": {"keypoints": keypoints0, "descriptors": descriptors0, "image_size": size0},
                "image1": {"keypoints": keypoints1, "descriptors": descriptors1, "image_size": size1},
            }
        )
        return out["matches0"], out["matching_scores0"]
