"""Image preprocessing, defined once and used identically by training, export and every backend."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from geolink_edge.card import ModelCard


def preprocess_one(image_bgr: np.ndarray, card: ModelCard) -> np.ndarray:
    """BGR uint8 (H, W, 3) → float32 (3, h, w) in the encoder's input space."""
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    height, width = card.image_size
    resized = cv2.resize(image_bgr[..., :3], (width, height), interpolation=cv2.INTER_AREA)
    rgb = resized[..., ::-1].astype(np.float32) * (1.0 / 255.0)
    rgb -= np.asarray(card.mean, dtype=np.float32)
    rgb /= np.asarray(card.std, dtype=np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def preprocess(images_bgr: Sequence[np.ndarray], card: ModelCard) -> np.ndarray:
    """A batch of BGR images of any sizes → float32 (N, 3, h, w)."""
    height, width = card.image_size
    batch = np.empty((len(images_bgr), 3, height, width), dtype=np.float32)
    for i, image in enumerate(images_bgr):
        batch[i] = preprocess_one(image, card)
    return batch
