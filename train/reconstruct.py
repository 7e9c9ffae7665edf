"""Offline 3D reconstruction: one point cloud per location, used only in training.

``main(conf, data_root, ...)`` writes ``pointclouds/<location_id>.npz`` (see
``geolink_edge.data.pointclouds``) and ``pointclouds/reconstruct.json``. Locations already on disk
are skipped (a rerun resumes); a location that fails is recorded and the run goes on; the run fails
(GeolinkError, exit code 2) only when every location failed. Backends, picked by name from ``CONFS``:

- ``dsm``: the synthetic world's surface model (exact geometry, synthetic datasets only);
- ``colmap``: SfM with pycolmap on the location's drone images;
- ``colmap-model``: COLMAP/VGGT models the user made (``<model_dir>/<id>/[sparse/[0/]]points3D.*``);
- ``vggt``: VGGT's depth + camera prediction (needs the package and local weights).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from geolink_edge import atomic
from geolink_edge.data import pointclouds
from geolink_edge.data.datasets import open_dataset
from geolink_edge.data.layout import require_dir
from geolink_edge.errors import GeolinkError, MissingDependency, describe
from geolink_edge.registry import choose
from geolink_edge.train import colmap_io, sfm, vggt_points

CONFS: dict[str, dict] = {
    "dsm": {"backend": "dsm"},
    "colmap": {"backend": "colmap", **sfm.DEFAULTS},
    "colmap-model": {"backend": "colmap-model", "model_dir": None},
    "vggt": {"backend": "vggt", **vggt_points.DEFAULTS},
}
MIN_POINTS = 32  # fewer points than this is a failed reconstruction, not a shape
REPORT = "reconstruct.json"
BACKEND_KIND = "reconstruction backend"

Source = Callable[[str], tuple[np.ndarray, np.ndarray | None]]


def _dsm_source(conf: dict, root: Path, n_points: int) -> tuple[list[str], Source]:
    data = open_dataset(root)
    if data.kind != "synthetic":
        raise GeolinkError(
            f"--backend dsm needs a synthetic dataset (from 'geolink-edge synth'); {root} is {data.kind}"
        )
    from geolink_edge.data.synthetic.pointcloud import dsm_point_cloud

    return sorted(data.drone_views()), lambda loc: (dsm_point_cloud(root, loc, n_points), None)


def _views_source(root: Path, reconstruct_points, conf: dict) -> tuple[list[str], Source]:
    views = open_dataset(root).drone_views()
    return sorted(views), lambda loc: reconstruct_points(views[loc], conf)


def _colmap_source(conf: dict, root: Path, n_points: int) -> tuple[list[str], Source]:
    return _views_source(root, sfm.reconstruct_points, conf)


def _model_source(conf: dict, root: Path, n_points: int) -> tuple[list[str], Source]:
    model_dir = conf.get("model_dir")
    if model_dir is None:
        raise GeolinkError(
            "--backend colmap-model needs --model-dir DIR holding one model folder per location"
        )
    folder = require_dir(Path(model_dir))
    locations = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not locations:
        raise GeolinkError(f"no location folders in {folder}")
    return locations, lambda loc: colmap_io.read_points3d(colmap_io.find_points3d(folder / loc))


def _vggt_source(conf: dict, root: Path, n_points: int) -> tuple[list[str], Source]:
    vggt_points.check_available(conf.get("weights"))
    return _views_source(root, vggt_points.reconstruct_points, conf)


# Backend name → (conf, dataset root, points per cloud) → (locations, where each one's points come from).
SOURCES: dict[str, Callable[[dict, Path, int], tuple[list[str], Source]]] = {
    "dsm": _dsm_source,
    "colmap": _colmap_source,
    "colmap-model": _model_source,
    "vggt": _vggt_source,
}


def backend_conf(backend: str) -> dict:
    """A copy of the named backend's standard conf, or the one-line error listing the backends."""
    return dict(choose(BACKEND_KIND, backend, CONFS))


def _one(source: Source, location: str, n_points: int, sparse: bool):
    """(points found, (xyz, rgb) ready to store) for one location."""
    xyz, rgb = source(location)
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    if sparse and len(xyz):
        keep = pointclouds.inliers(xyz)
        xyz, rgb = xyz[keep], None if rgb is None else np.asarray(rgb).reshape(-1, 3)[keep]
    if len(xyz) < MIN_POINTS:
        raise GeolinkError(f"only {len(xyz)} 3D points (need at least {MIN_POINTS})")
    return len(xyz), pointclouds.prepare(xyz, n_points, rgb)


def _read_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("locations", {}) if path.is_file() else {}
    except (json.JSONDecodeError, AttributeError):
        return {}  # an unreadable report only loses the history of earlier runs


def _only(locations: list[str], only: list[str] | None, root: Path, backend: str) -> list[str]:
    """The locations asked for with ``only`` (all without it); one that does not exist is refused."""
    if not only:
        return locations
    unknown = sorted(set(only) - set(locations))
    if unknown:
        raise GeolinkError(f"no location {unknown[0]} in {root} for --backend {backend}")
    return sorted(set(only))


def _reconstruct_each(
    todo: list[str], source: Source, out: Path, n_points: int, conf: dict, status: dict, progress: bool
) -> dict[str, str]:
    """Reconstruct and save each location of ``todo``, recording it in ``status``; returns the failures."""
    from rich.progress import Progress

    failures: dict[str, str] = {}
    sparse = conf["backend"] != "dsm"
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"reconstruct ({conf['backend']})", total=len(todo))
        for loc in todo:
            bar.update(task, description=f"reconstruct {loc}")
            start = time.perf_counter()
            try:
                found, (xyz, rgb) = _one(source, loc, n_points, sparse)
            except MissingDependency:
                raise
            except Exception as exc:  # one bad location must not stop the others
                failures[loc] = describe(exc)
                status[loc] = {"status": "failed", "error": failures[loc]}
            else:
                pointclouds.save(out / f"{loc}.npz", xyz, rgb)
                seconds = round(time.perf_counter() - start, 2)
                status[loc] = {
                    "status": "done",
                    "points_found": found,
                    "points": len(xyz),
                    "seconds": seconds,
                }
            bar.advance(task)
    return failures


def _write_report(out: Path, conf: dict, n_points: int, status: dict) -> None:
    report = {"format": "geolink-edge/reconstruct/1", "backend": conf["backend"], "n_points": n_points}
    atomic.write_json(out / REPORT, {**report, "conf": _plain(conf), "locations": status})


def _tell_outcome(out: Path, locations: list[str], todo: list[str], failures: dict[str, str]) -> None:
    """Print the counts and each failure; fail when every location failed."""
    from rich.console import Console

    console = Console(stderr=True)
    console.print(
        f"{len(todo) - len(failures)} reconstructed, {len(locations) - len(todo)} already done, "
        f"{len(failures)} failed → {out}"
    )
    for loc, error in failures.items():
        console.print(f"  failed {loc}: {error}", markup=False)
    if failures and len(failures) == len(locations):
        first = next(iter(failures.items()))
        raise GeolinkError(
            f"all {len(locations)} locations failed (first: {first[0]}: {first[1]}); see {out / REPORT}"
        )


def main(
    conf: dict,
    data_root: str | Path,
    out_dir: str | Path | None = None,
    n_points: int = 1024,
    force: bool = False,
    progress: bool = True,
    only: list[str] | None = None,
) -> Path:
    """Reconstruct every location of ``data_root`` (or those in ``only``) with ``conf`` (one of
    ``CONFS``, maybe edited)."""
    if not 16 <= n_points <= 1_000_000:
        raise GeolinkError(f"--points must be between 16 and 1000000, got {n_points}")
    root = require_dir(Path(data_root))
    out = Path(out_dir) if out_dir is not None else root / "pointclouds"
    locations, source = choose(BACKEND_KIND, conf.get("backend"), SOURCES)(conf, root, n_points)
    locations = _only(locations, only, root, conf["backend"])
    status = _read_report(out / REPORT)
    todo = [loc for loc in locations if force or not (out / f"{loc}.npz").is_file()]
    for loc in set(locations) - set(todo):
        status.setdefault(loc, {"status": "done"})
    try:
        failures = _reconstruct_each(todo, source, out, n_points, conf, status, progress)
    finally:
        if todo:
            _write_report(out, conf, n_points, status)
    _tell_outcome(out, locations, todo, failures)
    return out


def _plain(conf: dict) -> dict:
    return {key: str(value) if isinstance(value, Path) else value for key, value in conf.items()}
