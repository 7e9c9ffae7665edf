"""Tiny datasets written in the exact folder layouts of the real benchmarks (for loader tests)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Ids of the official SUES-200 split: 0001, 0002 train; 0008, 0012 test.
SUES_TRAIN, SUES_TEST = ("0001", "0002"), ("0008", "0012")


def write_image(path: Path, seed: int, size: int = 24) -> Path:
    """A small random image; the seed makes each one distinct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def write_university1652(
    root: Path,
    train_ids=("0001", "0002", "0003"),
    test_ids=("0100", "0101"),
    distractors=("0900",),
    drone_per_id: int = 3,
) -> Path:
    seed = 0
    for loc in train_ids:
        for k in range(drone_per_id):
            write_image(root / "train" / "drone" / loc / f"image-{k + 1:02d}.jpeg", seed := seed + 1)
        write_image(root / "train" / "satellite" / loc / f"{loc}.jpg", seed := seed + 1)
    for loc in test_ids:
        for k in range(drone_per_id):
            write_image(root / "test" / "query_drone" / loc / f"image-{k + 1:02d}.jpeg", seed := seed + 1)
        write_image(root / "test" / "query_satellite" / loc / f"{loc}.jpg", seed := seed + 1)
    for loc in (*test_ids, *distractors):
        write_image(root / "test" / "gallery_satellite" / loc / f"{loc}.jpg", seed := seed + 1)
        for k in range(drone_per_id):
            write_image(root / "test" / "gallery_drone" / loc / f"image-{k + 1:02d}.jpeg", seed := seed + 1)
    return root


def write_sues200(root: Path, ids=(*SUES_TRAIN, *SUES_TEST), per_height: int = 2) -> Path:
    seed = 1000
    for loc in ids:
        write_image(root / "satellite-view" / loc / "0.png", seed := seed + 1)
        for height in (150, 200, 250, 300):
            for k in range(per_height):
                write_image(root / "drone-view" / loc / str(height) / f"{k}.jpg", seed := seed + 1)
    return root


def _denseuav_location(root: Path, folder: str, loc: str, view: str, seed: int) -> int:
    if view == "drone":
        for height in (80, 90, 100):
            write_image(root / folder / loc / f"H{height}.JPG", seed := seed + 1)
    else:
        for height in (80, 90, 100):
            write_image(root / folder / loc / f"H{height}.tif", seed := seed + 1)
            write_image(root / folder / loc / f"H{height}_old.tif", seed := seed + 1)
    return seed


def write_denseuav(root: Path, train_ids=("000000", "000001"), test_ids=("002256", "002257")) -> Path:
    seed = 2000
    lines = []
    for i, loc in enumerate((*train_ids, *test_ids)):
        split, drone = ("train", "drone") if loc in train_ids else ("test", "query_drone")
        for height in (80, 90, 100):
            lon, lat = 120.38 + i * 1e-3, 30.32 + i * 1e-3
            lines.append(f"{split}/{drone}/{loc}/H{height}.JPG E{lon:.8f} N{lat:.8f} {height}.0")
    for loc in train_ids:
        seed = _denseuav_location(root, "train/drone", loc, "drone", seed)
        seed = _denseuav_location(root, "train/satellite", loc, "satellite", seed)
    for loc in test_ids:
        seed = _denseuav_location(root, "test/query_drone", loc, "drone", seed)
        seed = _denseuav_location(root, "test/query_satellite", loc, "satellite", seed)
    for loc in (*train_ids, *test_ids):
        seed = _denseuav_location(root, "test/gallery_satellite", loc, "satellite", seed)
        seed = _denseuav_location(root, "test/gallery_drone", loc, "drone", seed)
    (root / "Dense_GPS_ALL.txt").write_text("\n".join(lines) + "\n")
    return root
