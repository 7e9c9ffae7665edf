"""Image representations for area correlation that survive season, sun and exposure.

Correlating raw intensity fails across seasons (snow turns a dark lawn white) and exposures; the
layout of edges (roads, roof outlines, field borders) stays. Each representation turns a gray image
into a stack of float channels, zero where the image has no data, to be compared by the normalized
cross-correlation of :mod:`correlate`:

- ``orientation``: the gradient orientation, doubled (so that an edge whose contrast flips, dark on
  light in summer and light on dark in winter, keeps its value) as a unit complex number, weighted
  by the gradient's magnitude over its local average (exposure and contrast cancel) — two channels,
  its real and imaginary parts;
- ``channels``: the same weighted orientation soft-binned into ``bins`` unsigned orientation channels
  (a dense histogram of oriented gradients, one cell per pixel);
- ``intensity``: the gray level less its local mean over its local spread (the classic area
  correlation, kept to compare against).

All are smoothed by ``blur_px`` so that parallax and resampling shifts of a pixel still overlap.
"""

from __future__ import annotations

import cv2
import numpy as np

from geolink_edge.registry import check_name

FIELDS = ("orientation", "channels", "intensity")
LOCAL_PX = 9  # side of the box the gradient magnitude (or intensity) is normalized over
MAX_WEIGHT = 3.0  # a lone strong edge counts at most this many times its neighbourhood's average


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image.astype(np.float32) / 255.0


def _local_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over the valid pixels of a LOCAL_PX box (the image border and nodata excluded)."""
    size = (LOCAL_PX, LOCAL_PX)
    total = cv2.boxFilter(values * mask, -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT)
    count = cv2.boxFilter(mask, -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT)
    return total / np.maximum(count, 1.0)


def _weighted_gradient(gray: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gx, gy, weight): the gradient and its magnitude over the local average magnitude."""
    gx = cv2.Scharr(gray, cv2.CV_32F, 1, 0) / 32.0
    gy = cv2.Scharr(gray, cv2.CV_32F, 0, 1) / 32.0
    magnitude = np.sqrt(gx * gx + gy * gy)
    # a floor: flat ground (a lawn, fresh snow) has noise, not edges, and must not be blown up
    floor = 0.02
    weight = np.minimum(magnitude / (_local_mean(magnitude, valid) + floor), MAX_WEIGHT)
    return gx, gy, weight * valid


def edge_field(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    kind: str = "orientation",
    blur_px: float = 1.0,
    bins: int = 6,
) -> np.ndarray:
    """(H, W, C) float32 channels of ``image`` (BGR or gray) in the representation ``kind``;
    ``valid`` (nonzero where the image has data, default everywhere) zeroes the rest."""
    check_name("correlation field", kind, FIELDS)
    gray = _gray(image)
    mask = np.ones(gray.shape, np.float32) if valid is None else (np.asarray(valid) > 0).astype(np.float32)
    # the edge of the valid area is an edge in the image but not on the ground: two pixels in
    inner = cv2.erode(mask, np.ones((5, 5), np.uint8))
    if kind == "intensity":
        mean = _local_mean(gray, mask)
        spread = np.sqrt(np.maximum(_local_mean(gray * gray, mask) - mean * mean, 0.0))
        channels = ((gray - mean) / (spread + 0.02))[..., None]
    else:
        gx, gy, weight = _weighted_gradient(gray, mask)
        angle = np.arctan2(gy, gx)
        if kind == "orientation":
            channels = np.stack([weight * np.cos(2 * angle), weight * np.sin(2 * angle)], axis=-1)
        else:
            # unsigned orientation in [0, bins): each pixel shares its weight between two neighbour bins
            position = (angle % np.pi) / np.pi * bins
            low = np.floor(position).astype(np.int64) % bins
            share = (position - np.floor(position)).astype(np.float32)
            channels = np.zeros((*gray.shape, bins), np.float32)
            rows, cols = np.indices(gray.shape)
            channels[rows, cols, low] = weight * (1.0 - share)
            channels[rows, cols, (low + 1) % bins] += weight * share
    channels = channels.astype(np.float32) * inner[..., None]
    if blur_px > 0:
        blurred = cv2.GaussianBlur(channels, (0, 0), blur_px)
        channels = blurred.reshape(channels.shape) * inner[..., None]
    return np.ascontiguousarray(channels)
