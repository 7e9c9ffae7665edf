"""Parity of the exported ONNX with the torch encoder it came from, on real images.

Both run the same preprocessed batch; an export that moves any descriptor's cosine below
``MIN_COSINE`` is broken (a traced branch, a wrong constant) and is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geolink_edge.backends import OnnxEmbedder
from geolink_edge.calib.dataset import iter_batches
from geolink_edge.data.layout import CrossViewData
from geolink_edge.errors import GeolinkError

MIN_COSINE = 0.9999
DEFAULT_IMAGES = 32


def parity_images(data: CrossViewData, n: int = DEFAULT_IMAGES) -> list[Path]:
    """Up to ``n`` images, half drone frames and half satellite tiles, evenly spread over the lists."""
    drone = [i.path for i in data.query_drone] or [p for ps in data.train_drone.values() for p in ps]
    tiles = [i.path for i in data.gallery_satellite] or [
        p for ps in data.train_satellite.values() for p in ps
    ]

    def spread(paths: list[Path], k: int) -> list[Path]:
        if len(paths) <= k:
            return list(paths)
        return [paths[i] for i in np.linspace(0, len(paths) - 1, k).round().astype(int)]

    chosen = spread(tiles, n // 2)
    return spread(drone, n - len(chosen)) + chosen


def check_parity(encoder, onnx_path: Path, paths: list[Path] | None, seed: int = 0) -> dict[str, Any]:
    """Compare torch and ONNX Runtime (CPU) descriptors; ``paths=None`` uses random images."""
    import torch

    embedder = OnnxEmbedder(onnx_path, providers=["CPUExecutionProvider"])
    card = embedder.card
    if paths:
        batches = list(iter_batches(paths, card, batch_size=8))
        source = f"{len(paths)} dataset images"
    else:
        height, width = card.image_size
        rng = np.random.default_rng(seed)
        batches = [rng.standard_normal((4, 3, height, width)).astype(np.float32) for _ in range(2)]
        source = "8 random images (no dataset given)"
    encoder = encoder.eval()
    cosines, max_abs = [], 0.0
    with torch.inference_mode():
        for batch in batches:
            reference = encoder(torch.from_numpy(batch)).float().numpy()
            reference /= np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
            exported = embedder.run(batch)
            cosines.append(np.sum(reference * exported, axis=1))
            max_abs = max(max_abs, float(np.abs(reference - exported).max()))
    cosine = np.concatenate(cosines)
    result = {
        "images": source,
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "max_abs_diff": max_abs,
        "min_cosine_required": MIN_COSINE,
    }
    if result["cosine_min"] < MIN_COSINE:
        raise GeolinkError(
            f"{onnx_path}: ONNX output differs from torch "
            f"(min cosine {result['cosine_min']:.6f} < {MIN_COSINE})"
        )
    return result
