"""Weather on query images (albumentations): fog, rain, snow, wind blur and the paper's pairs."""

from __future__ import annotations

import numpy as np

from geolink_edge.errors import require
from geolink_edge.registry import check_name


def _fog(A, size: int):
    return A.RandomFog(fog_coef_range=(0.35, 0.55), alpha_coef=0.12, p=1.0)


def _rain(A, size: int):
    return A.RandomRain(
        slant_range=(-12, 12),
        drop_length=max(4, size // 20),
        drop_width=1,
        blur_value=3,
        brightness_coefficient=0.8,
        p=1.0,
    )


def _snow(A, size: int):
    return A.RandomSnow(snow_point_range=(0.25, 0.45), brightness_coeff=1.8, method="bleach", p=1.0)


def _wind(A, size: int):
    blur = max(3, size // 40) | 1  # odd kernel that scales with the image
    return A.MotionBlur(blur_limit=(blur, blur + 4), p=1.0)


EFFECTS = {"fog": _fog, "rain": _rain, "snow": _snow, "wind": _wind}
WEATHER = (*EFFECTS, "fog-rain", "fog-snow", "rain-snow")


def apply_weather(image: np.ndarray, name: str, seed: int) -> np.ndarray:
    """``image`` (uint8 H×W×3, BGR or RGB) under weather ``name``; same seed → same result."""
    check_name("weather", name, WEATHER)
    A = require("albumentations", "pip install 'geolink-edge[train]'")
    size = min(image.shape[:2])
    transform = A.Compose([EFFECTS[part](A, size) for part in name.split("-")], seed=int(seed))
    return transform(image=np.ascontiguousarray(image))["image"]
