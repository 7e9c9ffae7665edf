"""A small dataset in the University-1652 layout for training tests, written with plain numpy/cv2.

Each location has a smooth random texture; its satellite tile is the texture, its drone views are
rotated, scaled, colour-shifted crops of it, and its point cloud is a random height field. Ids
``L000…``; the last ``distractors`` gallery tiles have no queries.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _drone_view(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = tile.shape[0]
    angle, scale = float(rng.uniform(0, 360)), float(rng.uniform(1.1, 1.4))
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    view = cv2.warpAffine(tile, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
    shift = rng.normal(0, 12, 3)
    return np.clip(view.astype(np.float32) + shift, 0, 255).astype(np.uint8)


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def make_dataset(
    root: Path,
    train: int = 12,
    test: int = 6,
    distractors: int = 2,
    views: int = 3,
    size: int = 48,
    points: int = 300,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    ids = [f"L{i:03d}" for i in range(train + test + distractors)]
    gps = []
    for i, loc in enumerate(ids):
        tile = _texture(rng, size)
        drones = [_drone_view(tile, rng) for _ in range(views)]
        if i < train:
            _write(root / "train/satellite" / loc / "sat.png", tile)
            for v, image in enumerate(drones):
                _write(root / "train/drone" / loc / f"{v}.jpg", image)
        else:
            _write(root / "test/gallery_satellite" / loc / "sat.png", tile)
        if train <= i < train + test:
            _write(root / "test/query_satellite" / loc / "sat.png", tile)
            for v, image in enumerate(drones):
                _write(root / "test/query_drone" / loc / f"{v}.jpg", image)
                _write(root / "test/gallery_drone" / loc / f"{v}.jpg", image)
        xy = rng.uniform(-1, 1, (points, 2))
        z = 0.3 * np.sin(3 * xy[:, :1] + i) * np.cos(2 * xy[:, 1:] - i)
        xyz = np.concatenate([xy, z], axis=1)
        xyz = (xyz - xyz.mean(0)) / np.linalg.norm(xyz - xyz.mean(0), axis=1).max()
        (root / "pointclouds").mkdir(parents=True, exist_ok=True)
        np.savez(root / "pointclouds" / f"{loc}.npz", xyz=xyz.astype(np.float32))
        gps.append(f"{loc},{47.0 + 0.001 * i:.6f},{8.0 + 0.001 * i:.6f}")
    (root / "gps.csv").write_text("location_id,lat,lon\n" + "\n".join(gps) + "\n")
    (root / "dataset.json").write_text(json.dumps({"generator": "test fixture", "tile_m": 120.0}))
    return root
