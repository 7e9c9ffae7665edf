"""University-1652 layout, and the synthetic world written in the same layout (+ GPS, point clouds).

``train/{drone,satellite}/<id>/*``; ``test/{query_drone,gallery_satellite,query_satellite,
gallery_drone}/<id>/*``. Other folders of the release (street, google, 4K drone) are ignored.
"""

from __future__ import annotations

from pathlib import Path

from geolink_edge.data.layout import (
    CrossViewData,
    as_items,
    check_drone_for_each,
    check_satellite_for_each,
    read_gps_csv,
    read_id_folders,
    read_meta,
    require_dir,
)
from geolink_edge.errors import GeolinkError


def read_test_folders(test: Path) -> dict[str, dict[str, list[Path]]]:
    """The drone→satellite pair of folders is required, the satellite→drone pair optional."""
    folders = {name: {} for name in ("query_drone", "gallery_satellite", "query_satellite", "gallery_drone")}
    for name in ("query_drone", "gallery_satellite"):
        folders[name] = read_id_folders(test / name)
    for name in ("query_satellite", "gallery_drone"):
        if (test / name).is_dir():
            folders[name] = read_id_folders(test / name)
    check_satellite_for_each(folders["query_drone"], folders["gallery_satellite"], test / "gallery_satellite")
    check_drone_for_each(folders["query_satellite"], folders["gallery_drone"], test / "gallery_drone")
    return folders


def read(root: Path, heights: list[int] | None = None, kind: str = "university1652") -> CrossViewData:
    train, test = root / "train", root / "test"
    if not train.is_dir() and not test.is_dir():
        raise GeolinkError(f"missing folder {train} (and {test}): not a University-1652 layout")
    train_drone: dict[str, list[Path]] = {}
    train_satellite: dict[str, list[Path]] = {}
    if train.is_dir():
        train_drone = read_id_folders(require_dir(train / "drone"))
        train_satellite = read_id_folders(train / "satellite")
        check_satellite_for_each(train_drone, train_satellite, train / "satellite")
    folders = read_test_folders(test) if test.is_dir() else {}
    gps_path = root / "gps.csv"
    return CrossViewData(
        kind=kind,
        root=root,
        train_drone=train_drone,
        train_satellite=train_satellite,
        query_drone=as_items(folders.get("query_drone", {})),
        gallery_satellite=as_items(folders.get("gallery_satellite", {})),
        query_satellite=as_items(folders.get("query_satellite", {})),
        gallery_drone=as_items(folders.get("gallery_drone", {})),
        gps=read_gps_csv(gps_path) if gps_path.is_file() else None,
        pointcloud_dir=None,
        meta=read_meta(root),
    )


def read_synthetic(root: Path, heights: list[int] | None = None) -> CrossViewData:
    """The synthetic world: University-1652 folders whose every location has a GPS row."""
    if not (root / "gps.csv").is_file():
        raise GeolinkError(f"missing {root / 'gps.csv'} (a synthetic dataset lists every location's lat/lon)")
    data = read(root, heights, kind="synthetic")
    assert data.gps is not None
    every = set(data.train_satellite) | {item.location for item in data.gallery_satellite}
    missing = sorted(every - set(data.gps))
    if missing:
        raise GeolinkError(f"{root / 'gps.csv'} has no row for location(s) {', '.join(missing[:5])}")
    return data
