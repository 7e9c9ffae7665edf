"""The bundle's map store: the reference imagery at its native resolution, read by windows.

``index build`` resamples the sources once into the bundle's metric frame (ENU north-up about
``origin``, or local metres) at one ground resolution and cuts the result into square chunks:
``map/<row>_<col>.jpg`` (BGR imagery) plus ``map/<row>_<col>.png`` (validity, 255 = imagery) for
the chunks where some pixel holds none. Chunks without imagery are not stored. ``map.json`` says
where pixel (0, 0) lies, the GSD, the chunk size and which chunks exist. Reading needs numpy and
OpenCV only, so the runtime can read windows on the drone.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from geolink_edge.atomic import read_json
from geolink_edge.errors import GeolinkError

MAP_JSON = "map.json"
MAP_DIR = "map"
# Decoded chunks kept per level: a 1024-px chunk is 4 MB decoded, so 32 of them bound the cache at
# ~130 MB while a window with its neighbours (the verifier's usual walk) stays resident.
CACHED_CHUNKS = 32
# A window is resampled from at most about twice its own pixels; this bounds it on a small computer.
MAX_WINDOW_PX = 16384
# JPEG decoders scale by 1/2, 1/4 and 1/8 in the DCT domain, much faster than decoding and averaging.
_REDUCED_READ = {0: cv2.IMREAD_COLOR, 1: cv2.IMREAD_REDUCED_COLOR_2, 2: cv2.IMREAD_REDUCED_COLOR_4}
_REDUCED_READ[3] = cv2.IMREAD_REDUCED_COLOR_8


@dataclass
class MapWindow:
    """A north-up window of the map: ``[x, y] = pixel_to_xy @ [u, v, 1]`` (OpenCV pixel centres)."""

    image: np.ndarray  # (H, W, 3) BGR uint8
    valid: np.ndarray  # (H, W) bool, False where there is no imagery
    pixel_to_xy: np.ndarray  # (2, 3) float64
    gsd_m: float


def chunk_stem(row: int, col: int) -> str:
    return f"{row}_{col}"


def window_affine(x: float, y: float, gsd_m: float, size_px: int) -> np.ndarray:
    """Pixel → xy of a north-up square of ``size_px`` pixels centred on (x, y)."""
    half = (size_px - 1) / 2 * gsd_m
    return np.array([[gsd_m, 0.0, x - half], [0.0, -gsd_m, y + half]])


class MapStore:
    """Reads square north-up windows of the stored map at any GSD (chunks decoded on demand, cached)."""

    def __init__(self, root: Path, description: dict):
        self.root = Path(root)
        try:
            self.gsd_m = float(description["gsd_m"])
            self.pixel_to_xy = np.asarray(description["pixel_to_xy"], dtype=np.float64).reshape(2, 3)
            self.chunk_px = int(description["chunk_px"])
            self.chunks = {(int(r), int(c)): bool(masked) for r, c, masked in description["chunks"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise GeolinkError(f"{self.root / MAP_JSON}: malformed map description ({exc})") from None
        # xy of the top-left corner of pixel (0, 0)
        self.left = self.pixel_to_xy[0, 2] - self.gsd_m / 2
        self.top = self.pixel_to_xy[1, 2] + self.gsd_m / 2
        self._cache: OrderedDict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, root: str | Path) -> MapStore:
        description = read_json(Path(root) / MAP_JSON, "map store description", "rebuild the index")
        return cls(Path(root), description)

    def window(self, x: float, y: float, half_size_m: float, gsd_m: float | None = None) -> MapWindow:
        """The square of side ``2 * half_size_m`` centred on (x, y), at ``gsd_m`` (default: the store's).

        Downsampling averages (whole powers of two per chunk, decoded reduced by the JPEG decoder up
        to 1/8, then INTER_AREA); upsampling is linear.
        Imagery is resampled premultiplied by its validity (black where there is none) and divided
        by the resampled validity, so edges keep their colour; a pixel is valid when at least half
        of it comes from imagery. Pixels outside the map or without imagery are black, ``valid`` False.
        """
        gsd = self.gsd_m if gsd_m is None else float(gsd_m)
        if not (math.isfinite(gsd) and gsd > 0 and math.isfinite(half_size_m) and half_size_m > 0):
            raise GeolinkError(f"map window: need a positive size and GSD, got {half_size_m} m at {gsd} m/px")
        size = max(1, round(2 * half_size_m / gsd))
        if size > MAX_WINDOW_PX:
            raise GeolinkError(f"map window of {size} px exceeds {MAX_WINDOW_PX}: ask for a coarser GSD")
        affine = window_affine(x, y, gsd, size)
        level = self._level(gsd)
        step = self.gsd_m * 2**level  # metres per pixel at that level
        # Window pixel → level pixel (both OpenCV centres): u_l = (x - left) / step - 0.5.
        to_level = np.array(
            [
                [affine[0, 0] / step, 0.0, (affine[0, 2] - self.left) / step - 0.5],
                [0.0, -affine[1, 1] / step, (self.top - affine[1, 2]) / step - 0.5],
            ]
        )
        u0 = math.floor(to_level[0, 2] - 0.5 * to_level[0, 0]) - 1
        v0 = math.floor(to_level[1, 2] - 0.5 * to_level[1, 1]) - 1
        u1 = math.ceil(to_level[0, 2] + (size - 0.5) * to_level[0, 0]) + 2
        v1 = math.ceil(to_level[1, 2] + (size - 0.5) * to_level[1, 1]) + 2
        image, valid = self._mosaic(level, u0, v0, u1 - u0, v1 - v0)
        to_region = to_level - np.array([[0.0, 0.0, u0], [0.0, 0.0, v0]])
        shrink = to_level[0, 0]  # level pixels per window pixel, in [1, 2) unless upsampling
        if shrink > 1.0 + 1e-9:
            w, h = max(1, round(image.shape[1] / shrink)), max(1, round(image.shape[0] / shrink))
            sx, sy = w / image.shape[1], h / image.shape[0]
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            valid = cv2.resize(valid, (w, h), interpolation=cv2.INTER_AREA)
            # region pixel p ↔ resized pixel (p + 0.5) * s - 0.5
            to_region = np.array(
                [
                    [to_region[0, 0] * sx, 0.0, (to_region[0, 2] + 0.5) * sx - 0.5],
                    [0.0, to_region[1, 1] * sy, (to_region[1, 2] + 0.5) * sy - 0.5],
                ]
            )
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        out = cv2.warpAffine(image, to_region, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        inside = cv2.warpAffine(valid, to_region, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        ok = inside >= 0.5
        edge = ok & (inside < 1.0)
        out[edge] = np.clip(out[edge] / inside[edge, None] + 0.5, 0, 255).astype(np.uint8)
        out[~ok] = 0
        return MapWindow(image=out, valid=ok, pixel_to_xy=affine, gsd_m=gsd)

    def _level(self, gsd: float) -> int:
        """The coarsest power-of-two reduction of the chunks still at least as fine as ``gsd``."""
        level = max(0, math.floor(math.log2(gsd / self.gsd_m) + 1e-9))
        return min(level, int(math.log2(self.chunk_px)))

    def _mosaic(self, level: int, u0: int, v0: int, width: int, height: int):
        """Level pixels [u0, u0+width) × [v0, v0+height): (BGR uint8, validity float32 in [0, 1])."""
        size = self.chunk_px >> level
        image = np.zeros((height, width, 3), np.uint8)
        valid = np.zeros((height, width), np.float32)
        for row in range(max(v0, 0) // size, (v0 + height - 1) // size + 1):
            for col in range(max(u0, 0) // size, (u0 + width - 1) // size + 1):
                if (row, col) not in self.chunks:
                    continue
                chunk, chunk_valid = self._chunk(row, col, level)
                c0, r0 = max(u0, col * size), max(v0, row * size)
                c1, r1 = min(u0 + width, (col + 1) * size), min(v0 + height, (row + 1) * size)
                src = np.s_[r0 - row * size : r1 - row * size, c0 - col * size : c1 - col * size]
                image[r0 - v0 : r1 - v0, c0 - u0 : c1 - u0] = chunk[src]
                valid[r0 - v0 : r1 - v0, c0 - u0 : c1 - u0] = chunk_valid[src]
        return image, valid

    def _chunk(self, row: int, col: int, level: int) -> tuple[np.ndarray, np.ndarray]:
        key = (row, col, level)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if level in _REDUCED_READ:
            entry = self._decode(row, col, level)
        else:
            image, valid = self._chunk(row, col, level - 1)
            half = (image.shape[1] // 2, image.shape[0] // 2)
            entry = (
                cv2.resize(image, half, interpolation=cv2.INTER_AREA),
                cv2.resize(valid, half, interpolation=cv2.INTER_AREA),
            )
        with self._lock:
            self._cache[key] = entry
            while len(self._cache) > CACHED_CHUNKS:
                self._cache.popitem(last=False)
        return entry

    def _decode(self, row: int, col: int, level: int) -> tuple[np.ndarray, np.ndarray]:
        """A chunk decoded at 1 / 2**level of its size (levels in ``_REDUCED_READ``)."""
        stem = self.root / MAP_DIR / chunk_stem(row, col)
        size = self.chunk_px >> level
        image = cv2.imread(str(stem.with_suffix(".jpg")), _REDUCED_READ[level])
        if image is None or image.shape[:2] != (size, size):
            raise GeolinkError(f"{stem.with_suffix('.jpg')}: missing or unreadable map chunk")
        if not self.chunks[(row, col)]:
            return image, np.ones((size, size), np.float32)
        mask = cv2.imread(str(stem.with_suffix(".png")), cv2.IMREAD_GRAYSCALE)
        if mask is None or mask.shape != (self.chunk_px, self.chunk_px):
            raise GeolinkError(f"{stem.with_suffix('.png')}: missing or unreadable map chunk mask")
        valid = cv2.resize((mask > 127).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        image[valid == 0] = 0  # JPEG rings into the empty part; premultiplied resampling needs it black
        return image, valid
