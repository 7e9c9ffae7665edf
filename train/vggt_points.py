"""VGGT (facebookresearch/vggt), the paper's reconstructor: depth maps + cameras → world points.

Needs the ``vggt`` package and its weights as a local file (``model.pt``, a plain state dict);
nothing is downloaded. Points of low depth confidence are dropped, as in VGGT's own demos.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from geolink_edge.errors import GeolinkError, require

DEFAULTS = {
    "weights": None,  # path to VGGT-1B model.pt
    "max_images": 32,  # VGGT's memory grows with the number of frames
    "conf_percentile": 50.0,  # keep points above this percentile of depth confidence
}


def check_available(weights: str | Path | None) -> Path:
    """One line naming what is missing: the package or the weights file."""
    require(
        "vggt", "install it from github.com/facebookresearch/vggt (pip install -e .) to use --backend vggt"
    )
    if weights is None:
        raise GeolinkError("--backend vggt needs --weights PATH (VGGT-1B model.pt downloaded beforehand)")
    path = Path(weights)
    if not path.is_file():
        raise GeolinkError(f"VGGT weights not found: {path}")
    return path


@lru_cache(maxsize=1)
def _model(weights: Path, device: str):
    import torch
    from vggt.models.vggt import VGGT

    model = VGGT()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval().to(device)


def reconstruct_points(images: list[Path], conf: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from vggt.utils.geometry import unproject_depth_map_to_point_map
    from vggt.utils.load_fn import load_and_preprocess_images
    from vggt.utils.pose_enc import pose_encoding_to_extri_intri

    conf = {**DEFAULTS, **(conf or {})}
    weights = check_available(conf["weights"])
    chosen = images[:: max(1, -(-len(images) // conf["max_images"]))]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = load_and_preprocess_images([str(p) for p in chosen]).to(device)
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
        predictions = _model(weights, device)(batch)
    extrinsic, intrinsic = pose_encoding_to_extri_intri(predictions["pose_enc"], batch.shape[-2:])
    depth = predictions["depth"].float().squeeze(0).cpu().numpy()
    confidence = predictions["depth_conf"].float().squeeze(0).cpu().numpy()
    world = unproject_depth_map_to_point_map(
        depth, extrinsic.squeeze(0).float().cpu().numpy(), intrinsic.squeeze(0).float().cpu().numpy()
    )
    keep = confidence > np.percentile(confidence, conf["conf_percentile"])
    colours = (batch.permute(0, 2, 3, 1).float().cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
    return world[keep].astype(np.float64), colours[keep]
