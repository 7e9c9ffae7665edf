"""Structure from motion on one location's drone images with pycolmap (COLMAP 3.10+/4.x API).

SIFT extraction, exhaustive matching (a location has tens of views, so every pair is affordable),
incremental mapping; the largest model is kept. Runs on the CPU unless COLMAP was built with CUDA.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from geolink_edge.data.layout import read_image
from geolink_edge.errors import GeolinkError, require

DEFAULTS = {
    "max_images": 60,  # evenly spaced subset of a location's views; SUES-200 has 200 per location
    "max_image_size": 1024,  # SIFT runs on images downscaled to this longest side
    "max_features": 4096,
    "peak_threshold": 0.004,  # below COLMAP's 0.0067: more features on small (256-512 px) views
    "num_threads": -1,  # all cores
    "seed": 0,
}


def _evenly(paths: list[Path], count: int) -> list[Path]:
    if len(paths) <= count:
        return list(paths)
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count).round()]


def _stage_images(paths: list[Path], folder: Path) -> tuple[list[str], bool]:
    """Link (or copy) the views into one folder under unique names (COLMAP reads one image root);
    also says whether all views have one size (then they share one camera)."""
    folder.mkdir(parents=True)
    names = []
    sizes = set()
    for k, path in enumerate(paths):
        sizes.add(read_image(path).shape[:2])  # an unreadable view fails here, naming its path
        name = f"{k:04d}{path.suffix.lower()}"
        try:
            os.symlink(path.resolve(), folder / name)
        except OSError:
            shutil.copyfile(path, folder / name)
        names.append(name)
    return names, len(sizes) == 1


def sparse_reconstruction(images: list[Path], work_dir: Path, conf: dict | None = None):
    """The largest ``pycolmap.Reconstruction`` of ``images``; GeolinkError when nothing registers."""
    pycolmap = require("pycolmap", "pip install 'geolink-edge[train]' (pycolmap ≥ 3.10)")
    conf = {**DEFAULTS, **(conf or {})}
    pycolmap.logging.minloglevel = 2  # warnings and errors only: one run per location would flood the log
    chosen = _evenly(images, conf["max_images"])
    if len(chosen) < 3:
        raise GeolinkError(f"structure from motion needs at least 3 views, got {len(chosen)}")
    image_dir, database = work_dir / "images", work_dir / "database.db"
    names, same_size = _stage_images(chosen, image_dir)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = conf["max_image_size"]
    extraction.sift.max_num_features = conf["max_features"]
    extraction.sift.peak_threshold = conf["peak_threshold"]
    extraction.num_threads = conf["num_threads"]
    pycolmap.extract_features(
        database,
        image_dir,
        image_names=names,
        camera_mode=pycolmap.CameraMode.SINGLE if same_size else pycolmap.CameraMode.PER_IMAGE,
        extraction_options=extraction,
        device=pycolmap.Device.cpu,
    )
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = conf["num_threads"]
    pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = conf["num_threads"]
    # Drone orbits overlap mostly between neighbouring views: keep points seen by two views only.
    options.triangulation.ignore_two_view_tracks = False
    options.random_seed = conf["seed"]
    (work_dir / "sparse").mkdir()
    models = pycolmap.incremental_mapping(database, image_dir, work_dir / "sparse", options)
    if not models:
        raise GeolinkError(f"no views could be registered ({len(chosen)} views, e.g. {chosen[0]})")
    return max(models.values(), key=lambda rec: (rec.num_reg_images(), rec.num_points3D()))


def reconstruct_points(images: list[Path], conf: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sparse points (xyz float64, rgb uint8) of one location, from a throw-away COLMAP workspace."""
    with tempfile.TemporaryDirectory(prefix="geolink-sfm-") as tmp:
        rec = sparse_reconstruction(images, Path(tmp), conf)
        points = list(rec.points3D.values())
        xyz = np.array([p.xyz for p in points], np.float64).reshape(-1, 3)
        rgb = np.array([p.color for p in points], np.uint8).reshape(-1, 3)
    return xyz, rgb
