"""Point-cloud files (``pointclouds/<location_id>.npz``) and the geometry that prepares them.

A stored cloud is ``xyz`` float32 (N, 3), centred on its centroid and divided by its largest
distance from it (so it fits the unit ball), optionally ``rgb`` uint8 (N, 3). Read with
``allow_pickle=False``: these files may come from anywhere.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from geolink_edge import atomic
from geolink_edge.errors import GeolinkError


def normalise(xyz: np.ndarray) -> np.ndarray:
    """Centre on the centroid and divide by the max radius (float32)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    centred = xyz - xyz.mean(axis=0)
    radius = float(np.linalg.norm(centred, axis=1).max()) if len(centred) else 0.0
    return (centred / radius if radius > 0 else centred).astype(np.float32)


def farthest_point_sample(xyz: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` points picked greedily to be far from those already picked.

    All points are returned (in FPS order) when there are no more than ``n``.
    """
    count = len(xyz)
    if count <= n:
        return np.random.default_rng(seed).permutation(count)
    pts = np.asarray(xyz, dtype=np.float64)
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = np.random.default_rng(seed).integers(count)
    nearest = np.full(count, np.inf)
    for i in range(1, n):
        nearest = np.minimum(nearest, ((pts - pts[chosen[i - 1]]) ** 2).sum(axis=1))
        chosen[i] = int(nearest.argmax())
    return chosen


def inliers(xyz: np.ndarray, factor: float = 4.0) -> np.ndarray:
    """Mask of points within ``factor`` × the median distance from the median point.

    Sparse reconstructions carry a few far-away points (sky, mismatches) that would otherwise set
    the max radius and squash the scene into a small ball.
    """
    distance = np.linalg.norm(xyz - np.median(xyz, axis=0), axis=1)
    return distance <= factor * max(float(np.median(distance)), 1e-12)


def prepare(xyz: np.ndarray, n_points: int, rgb: np.ndarray | None = None, seed: int = 0):
    """Raw points → (normalised FPS subset, matching colours or None): what reconstruct stores."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    keep = np.isfinite(xyz).all(axis=1)
    xyz = xyz[keep]
    if len(xyz) == 0:
        raise GeolinkError("no finite 3D points to store")
    idx = farthest_point_sample(xyz, n_points, seed)
    colours = None if rgb is None else np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)[keep][idx]
    return normalise(xyz[idx]), colours


def save(path: str | Path, xyz: np.ndarray, rgb: np.ndarray | None = None) -> Path:
    arrays = {"xyz": np.asarray(xyz, dtype=np.float32)}
    if rgb is not None:
        arrays["rgb"] = np.asarray(rgb, dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic.write_bytes(path, buffer.getvalue())


def load(path: str | Path) -> np.ndarray:
    """``xyz`` float32 (N, 3) of a stored cloud; a bad file is a one-line GeolinkError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "xyz" not in npz.files:
                raise GeolinkError(f"{path} has no 'xyz' array (found {', '.join(npz.files) or 'nothing'})")
            xyz = npz["xyz"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise GeolinkError(f"cannot read point cloud {path} ({exc.__class__.__name__}: {exc})") from None
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0 or not np.isfinite(xyz).all():
        raise GeolinkError(f"{path}: 'xyz' must be finite (N, 3) with N > 0, got shape {xyz.shape}")
    return xyz.astype(np.float32, copy=False)
