"""Lighting and the two looks of one place: the drone's (sun A) and the satellite's (sun B, another
date: colour grade, shadows elsewhere, lower resolution, JPEG).

The satellite look changes colours and shadows but keeps the ground texture, so local features
still match between a drone frame and a satellite crop — the runtime depends on that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from geolink_edge.data.synthetic.georef import AreaGrid
from geolink_edge.data.synthetic.world import World


@dataclass(frozen=True)
class Grade:
    """A colour grade: per-channel gain, gamma, saturation and a haze veil."""

    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    saturation: float = 1.0
    haze: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> Grade:
        return cls(
            tuple(rng.uniform(0.88, 1.1, 3)),
            rng.uniform(0.85, 1.2),
            rng.uniform(0.65, 0.95),
            rng.uniform(0.04, 0.12),
        )

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        out = np.clip(rgb * np.asarray(self.gain, np.float32), 0, 1) ** np.float32(self.gamma)
        grey = out.mean(axis=-1, keepdims=True)
        out = grey + (out - grey) * np.float32(self.saturation)
        return np.clip(
            out * (1 - self.haze) + np.float32(self.haze) * np.array([0.78, 0.82, 0.88], np.float32), 0, 1
        )


def lighting(world: World, sun: tuple[float, float], shadow_strength: float = 0.5) -> np.ndarray:
    """Per-pixel light (float32): Lambert shading of the DSM plus cast shadows for ``sun`` (az, el)."""
    az, el = map(math.radians, sun)
    g = world.gsd
    dz_dx = cv2.Sobel(world.dsm, cv2.CV_32F, 1, 0, ksize=3) / (8 * g)
    dz_dy = -cv2.Sobel(world.dsm, cv2.CV_32F, 0, 1, ksize=3) / (8 * g)  # rows run south
    s = np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)], np.float32)
    lambert = (-dz_dx * s[0] - dz_dy * s[1] + s[2]) / np.sqrt(dz_dx**2 + dz_dy**2 + 1)
    direct = np.clip(lambert / s[2], 0, 1.6) * (1 - _cast_shadow(world, az, el))
    return (1 - shadow_strength) + shadow_strength * direct


def _cast_shadow(world: World, az: float, el: float, factor: int = 4) -> np.ndarray:
    """Soft shadow mask in [0, 1], marched toward the sun on a grid ``factor`` times coarser."""
    n = world.dsm.shape[0] // factor
    small = cv2.resize(world.dsm, (n, n), interpolation=cv2.INTER_AREA)
    step_m = world.gsd * factor
    rise = step_m * math.tan(el)
    k_max = int(math.ceil((small.max() - small.min()) / rise))
    dx, dy = math.sin(az), -math.cos(az)  # toward the sun, in columns and rows
    occluder = np.full_like(small, -np.inf)
    for k in range(1, k_max + 1):
        m = np.float32([[1, 0, k * dx], [0, 1, k * dy]])
        shifted = cv2.warpAffine(
            small, m, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
        )
        np.maximum(occluder, shifted - k * rise, out=occluder)
    shadow = (occluder > small + 0.3).astype(np.float32)
    shadow = cv2.resize(shadow, world.dsm.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(shadow, (0, 0), 1.2)


def drone_colour(world: World, sun: tuple[float, float]) -> np.ndarray:
    return np.clip(world.albedo * lighting(world, sun)[..., None] * 1.1, 0, 1)


def satellite_colour(world: World, sun: tuple[float, float], grade: Grade) -> np.ndarray:
    return grade.apply(np.clip(world.albedo * lighting(world, sun, 0.4)[..., None] * 1.05, 0, 1))


def pyramid(rgb: np.ndarray, levels: int = 6) -> list[np.ndarray]:
    out = [rgb.astype(np.float32)]
    for _ in range(levels - 1):
        out.append(cv2.pyrDown(out[-1]))
    return out


def satellite_tile(
    ortho_rgb: np.ndarray,
    grid: AreaGrid,
    x: float,
    y: float,
    tile_m: float,
    px: int,
    rng: np.random.Generator,
    quality: int = 70,
) -> bytes:
    """JPEG of a north-up ``tile_m`` crop centred on local (x, y), softened like a satellite product."""
    scale = px / tile_m * grid.gsd  # output pixels per grid pixel
    half = int(tile_m / grid.gsd * 0.75) + 8  # crop with room for the pre-filter
    c0, r0 = int(x / grid.gsd) - half, int(y / grid.gsd) - half
    src = _crop(ortho_rgb, c0, r0, 2 * half)
    if scale < 1:  # pre-filter to the output resolution, as INTER_AREA would
        src = cv2.GaussianBlur(src, (0, 0), 0.5 / scale)
    cx, cy = x / grid.gsd - 0.5 - c0, y / grid.gsd - 0.5 - r0
    m = np.float32([[scale, 0, (px - 1) / 2 - scale * cx], [0, scale, (px - 1) / 2 - scale * cy]])
    tile = cv2.warpAffine(src, m, (px, px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    low = max(16, int(px * rng.uniform(0.6, 0.8)))  # a coarser sensor
    tile = cv2.resize(
        cv2.resize(tile, (low, low), interpolation=cv2.INTER_AREA), (px, px), interpolation=cv2.INTER_CUBIC
    )
    bgr = cv2.cvtColor(np.clip(tile * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    return encode_jpeg(bgr, quality)


def _crop(image: np.ndarray, c0: int, r0: int, size: int) -> np.ndarray:
    """A ``size`` square window at (c0, r0), mirrored where it leaves the image."""
    h, w = image.shape[:2]
    pad = max(0, -c0, -r0, c0 + size - w, r0 + size - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    return image[r0 + pad : r0 + pad + size, c0 + pad : c0 + pad + size]


def encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
