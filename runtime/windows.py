"""Map windows for verification: the bundle's map read around a candidate at the matching resolution.

Windows sit on a fixed lattice so that consecutive frames, and candidate tiles close together, are
verified through the same window, whose features are computed once and cached. A window is
``factor`` frame-footprint radii wide on each side of its centre and the lattice spacing is
``2 (factor − 1)`` radii: a drone anywhere in a lattice cell sees ground that lies wholly inside that
cell's window. Footprint radius and resolution are rounded to steps of √2 and 2^¼ so that a
slowly changing height keeps hitting the cache. Windows may be read ahead on a thread of their own
(:meth:`MapWindows.prefetch`), so that a search of many new windows does not hold up the frames.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from geolink_edge.runtime.ground import quantize_up
from geolink_edge.runtime.verify import Features, Verifier


@dataclass(frozen=True)
class WindowKey:
    col: int
    row: int
    radius_m: float  # quantized frame-footprint radius the lattice is made for
    gsd_m: float

    def centre(self, factor: float) -> tuple[float, float]:
        step = 2.0 * (factor - 1.0) * self.radius_m
        return self.col * step, self.row * step

    def half_size(self, factor: float) -> float:
        return factor * self.radius_m


@dataclass
class Window:
    key: WindowKey
    centre: tuple[float, float]
    half_size_m: float
    pixel_to_xy: np.ndarray  # (2, 3) window pixel → index metric frame
    features: Features

    def near(self, x: float, y: float, reach_m: float) -> Features:
        """The window's features within ``reach_m`` (a square) of (x, y): matching only where the
        prior allows keeps the ratio test from failing on look-alikes elsewhere in the window."""
        keep = np.all(np.abs(self.features.ground - (x, y)) <= reach_m, axis=1)
        return self.features if keep.all() else self.features.part(keep)


class MapWindows:
    """Lattice planning and an LRU cache of window features; ``read(x, y, half, gsd)`` returns a
    MapWindow (image, valid mask, pixel_to_xy, gsd_m) as ``TileIndex.map_window`` does."""

    def __init__(
        self,
        read: Callable,
        verifier: Verifier,
        factor: float = 1.5,
        cache: int = 32,
    ):
        self.read = read
        self.verifier = verifier
        self.factor = factor
        self._cache: OrderedDict[WindowKey, Window] = OrderedDict()
        self._size = cache
        self._radius: float | None = None
        self.extract_s = 0.0  # seconds spent reading windows and detecting their features, in all
        self._reading: dict[WindowKey, Future] = {}
        self._pool: ThreadPoolExecutor | None = None

    def cached(self, key: WindowKey) -> bool:
        """Whether ``key``'s window is read: checking it costs no reading."""
        future = self._reading.get(key)
        return key in self._cache or (future is not None and future.done())

    def prefetch(self, keys: list[WindowKey]) -> None:
        """Read the windows of ``keys`` not read yet, in order, on a thread of their own."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="map-windows")
        for key in keys:
            if key not in self._cache and key not in self._reading:
                self._reading[key] = self._pool.submit(self._read, key)

    def keys_near(
        self, x: float, y: float, radius_m: float, footprint_m: float, gsd_m: float
    ) -> list[WindowKey]:
        """Windows whose cells meet the circle (x, y, radius_m), nearest centre first."""
        r = self._lattice_radius(footprint_m)
        step = 2.0 * (self.factor - 1.0) * r
        lo = np.floor((np.array([x, y]) - radius_m) / step + 0.5).astype(int)
        hi = np.floor((np.array([x, y]) + radius_m) / step + 0.5).astype(int)
        keys = []
        for row in range(lo[1], hi[1] + 1):
            for col in range(lo[0], hi[0] + 1):
                # distance from (x, y) to the cell (a square of side `step` about the centre)
                dx = max(abs(col * step - x) - step / 2, 0.0)
                dy = max(abs(row * step - y) - step / 2, 0.0)
                if math.hypot(dx, dy) <= radius_m:
                    keys.append(WindowKey(col, row, r, gsd_m))
        return sorted(keys, key=lambda k: math.hypot(k.col * step - x, k.row * step - y))

    def _lattice_radius(self, footprint_m: float) -> float:
        """The lattice's footprint radius: the last one while it still holds the footprint without
        being more than twice it (a height that wavers about a ladder step keeps its windows)."""
        last = self._radius
        if last is None or not footprint_m <= last <= 2.0 * footprint_m:
            last = self._radius = quantize_up(footprint_m, 2)
        return last

    def keys_for_points(
        self, points: list[tuple[float, float]], footprint_m: float, gsd_m: float
    ) -> list[WindowKey]:
        """The window of each point's cell, in the points' order, each window once."""
        keys: list[WindowKey] = []
        for x, y in points:
            key = self.keys_near(x, y, 0.0, footprint_m, gsd_m)[0]
            if key not in keys:
                keys.append(key)
        return keys

    def cancel_reads(self, keep: list[WindowKey]) -> None:
        """Drop the reads not begun yet of windows other than ``keep`` (a search that ended)."""
        for key in [k for k in self._reading if k not in keep]:
            if self._reading[key].cancel():
                del self._reading[key]

    def window(self, key: WindowKey) -> Window:
        """The window of ``key``: cached, or waited for when it is being read, or read now."""
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        future = self._reading.pop(key, None)
        window = future.result() if future is not None else self._read(key)
        self._cache[key] = window
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return window

    def _read(self, key: WindowKey) -> Window:
        start = time.perf_counter()
        centre, half = key.centre(self.factor), key.half_size(self.factor)
        read = self.read(centre[0], centre[1], half, key.gsd_m)
        mask = np.asarray(read.valid, dtype=np.uint8) * 255
        features = self.verifier.features(read.image, mask, rotations=1)  # maps are north-up
        self.verifier.matcher.prepare(features)
        pixel_to_xy = np.asarray(read.pixel_to_xy, dtype=np.float64)
        features.ground = features.xy.astype(np.float64) @ pixel_to_xy[:, :2].T + pixel_to_xy[:, 2]
        window = Window(key, centre, half, pixel_to_xy, features)
        self.extract_s += time.perf_counter() - start
        return window
