"""Point clouds of a synthetic location: the DSM surface that its drone views actually see.

The same function serves ``synth`` (from the hits it just rendered) and ``reconstruct --backend
dsm`` (re-casting the stored cameras on the stored DSM), so both give the same cloud.
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from pathlib import Path

import numpy as np

from geolink_edge.data import pointclouds
from geolink_edge.data.synthetic.georef import read_geotiff
from geolink_edge.data.synthetic.render import Camera, Surface, cast
from geolink_edge.errors import GeolinkError

VOXEL_M = 0.5


def cloud_from_points(
    points: np.ndarray, centre_en: tuple[float, float], radius_m: float, n_points: int, seed: int
) -> np.ndarray:
    """Seen surface points (area CRS) → normalised (n_points, 3) float32 cloud of the location.

    Only points within ``radius_m`` (horizontal) of the location are kept: the place itself, not
    the far background of oblique views. Voxel thinning makes the density even (near pixels would
    otherwise dominate) and, with about 1.5 ``n_points`` voxels left, a seeded random choice keeps
    ``n_points`` spread over the whole place (as farthest-point sampling would, at a fraction of its cost).
    """
    near = np.hypot(points[:, 0] - centre_en[0], points[:, 1] - centre_en[1]) <= radius_m
    pts = points[near]
    if len(pts) == 0:
        raise GeolinkError(f"no surface point seen within {radius_m:.0f} m of the location")
    rng = np.random.default_rng(seed)
    voxel = VOXEL_M
    while True:  # coarsen the voxels until at most 2 n_points remain
        keys = np.floor((pts - pts.min(0)) / voxel).astype(np.int64)
        _, first = np.unique(keys[:, 0] * 2**42 + keys[:, 1] * 2**21 + keys[:, 2], return_index=True)
        if len(first) <= 2 * n_points:
            break
        voxel *= math.sqrt(len(first) / (1.5 * n_points))  # a surface: count ∝ 1 / voxel²
    pts = pts[np.sort(first)]
    if len(pts) < n_points:  # tiny views: repeat points rather than fail
        pts = pts[rng.choice(len(pts), n_points, replace=True)]
    pts = pts[np.sort(rng.choice(len(pts), n_points, replace=False))]
    return pointclouds.normalise(pts - pts.mean(0))


def location_seed(location_id: str) -> int:
    return zlib.crc32(location_id.encode())


def dsm_point_cloud(dataset_root: Path, location_id: str, n_points: int = 2048) -> np.ndarray:
    """(n_points, 3) float32 cloud of a synthetic location from the stored DSM and drone cameras."""
    root = Path(dataset_root)
    row = _location_row(root, location_id)
    if row["role"] == "distractor":
        raise GeolinkError(f"location {location_id} in {root} is a distractor: it has no drone views")
    folder = root / ("train/drone" if row["split"] == "train" else "test/query_drone") / location_id
    cameras_path = folder / "cameras.json"
    try:
        records = json.loads(cameras_path.read_text())
    except (OSError, ValueError) as exc:
        raise GeolinkError(f"cannot read {cameras_path} ({exc.__class__.__name__})") from None
    dsm, grid = read_geotiff(root / "areas" / row["area"] / "dsm.tif")
    surface = Surface(grid, dsm.astype(np.float32))
    points = np.concatenate([cast(surface, Camera.from_json(r)).crs_points(grid) for r in records])
    tile_m = float(json.loads((root / "dataset.json").read_text())["tile_m"])
    return cloud_from_points(
        points, (float(row["x"]), float(row["y"])), tile_m * 0.75, n_points, location_seed(location_id)
    )


def _location_row(root: Path, location_id: str) -> dict:
    path = root / "locations.csv"
    if not path.is_file():
        raise GeolinkError(f"missing {path} (not a synthetic dataset?)")
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("location_id") == location_id:
                return row
    raise GeolinkError(f"location {location_id} is not listed in {path}")
