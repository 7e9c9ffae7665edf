"""The representative calibration set: drone frames and satellite tiles, spread over locations and heights.

Calibration ranges come from these images only, so they must look like what the encoder sees in
flight (oblique drone frames at every height) and when the index is built (nadir tiles). Images
are taken from the training split; the fidelity check uses the test split, so the two never share
an image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np

from geolink_edge.card import ModelCard
from geolink_edge.data.layout import CrossViewData, read_image
from geolink_edge.errors import GeolinkError
from geolink_edge.preprocess import preprocess

DEFAULT_IMAGES = 512
FEW_IMAGES = 300


@dataclass
class CalibrationSet:
    drone: list[Path]
    satellite: list[Path]
    locations: int
    warnings: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        """Drone frames and tiles interleaved, so any prefix holds both kinds."""
        mixed = zip_longest(self.drone, self.satellite)
        return [p for pair in mixed for p in pair if p is not None]

    def summary(self) -> dict:
        return {
            "images": len(self.drone) + len(self.satellite),
            "drone": len(self.drone),
            "satellite": len(self.satellite),
            "locations": self.locations,
            "warnings": self.warnings,
        }


def _spread(paths: Sequence[Path], rng: np.random.Generator) -> list[Path]:
    """One location's images, alternating between sub-folders (the flight heights of SUES-200)."""
    groups: dict[Path, list[Path]] = defaultdict(list)
    for path in paths:
        groups[path.parent].append(path)
    for group in groups.values():
        rng.shuffle(group)
    return [p for tier in zip_longest(*groups.values()) for p in tier if p is not None]


def _round_robin(
    per_location: dict[str, list[Path]], n: int, rng: np.random.Generator
) -> tuple[list[Path], int]:
    """Up to ``n`` images taking one per location in turn; also the number of locations used."""
    locations = sorted(per_location)
    rng.shuffle(locations)
    queues = [_spread(per_location[loc], rng) for loc in locations]
    chosen: list[Path] = []
    used: set[int] = set()
    for tier in zip_longest(*queues):
        for i, path in enumerate(tier):
            if path is not None and len(chosen) < n:
                chosen.append(path)
                used.add(i)
    return chosen, len(used)


def calibration_set(data: CrossViewData, n: int = DEFAULT_IMAGES, seed: int = 0) -> CalibrationSet:
    """Pick ``n`` training images: half satellite tiles (as many as exist), the rest drone frames."""
    if n < 1:
        raise GeolinkError(f"--calib-images must be >= 1, got {n}")
    if not data.train_drone or not data.train_satellite:
        raise GeolinkError(
            f"{data.root}: calibration needs the training split (train/drone and train/satellite)"
        )
    rng = np.random.default_rng(seed)
    satellite, sat_locations = _round_robin(data.train_satellite, n // 2, rng)
    drone, drone_locations = _round_robin(data.train_drone, n - len(satellite), rng)
    if len(drone) + len(satellite) < n:  # fewer drone frames than asked: top up with more tiles
        more, _ = _round_robin(data.train_satellite, n - len(drone), np.random.default_rng(seed))
        satellite = more
    chosen = CalibrationSet(drone, satellite, max(drone_locations, sat_locations))
    total = len(drone) + len(satellite)
    if total < FEW_IMAGES:
        chosen.warnings.append(
            f"only {total} calibration images (fewer than {FEW_IMAGES}): "
            "INT8 ranges may not represent flight data"
        )
    return chosen


def iter_batches(paths: Sequence[Path], card: ModelCard, batch_size: int = 16) -> Iterator[np.ndarray]:
    """Preprocessed float32 (B, 3, H, W) batches of the images at ``paths``, in order."""
    for start in range(0, len(paths), batch_size):
        yield preprocess([read_image(p) for p in paths[start : start + batch_size]], card)
