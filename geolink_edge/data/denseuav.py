"""DenseUAV: University-1652-like folders plus ``Dense_GPS_*.txt`` (``path E<lon> N<lat> height``).

Drone images are named by flight height (``H80.JPG``, ``H90.JPG``, ``H100.JPG``); each location
has several satellite images (scales and dates) that all belong to its gallery. The GPS files give
one position per image: each image listed there carries its own (``ImageItem.latlon``, what SDM
and metre errors use); a location's entry in ``gps`` is the mean of its images' positions.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from geolink_edge.data.layout import (
    CrossViewData,
    ImageItem,
    as_items,
    check_satellite_for_each,
    parse_lat_lon,
    read_id_folders,
    read_meta,
    require_dir,
)
from geolink_edge.data.university1652 import read_test_folders
from geolink_edge.errors import GeolinkError

HEIGHTS = (80, 90, 100)
_HEIGHT_NAME = re.compile(r"^H(\d+)$", re.IGNORECASE)


def read_gps_txt(path: Path) -> dict[str, tuple[float, float]]:
    """Image path as written (``/``-separated, relative to the dataset root) → (lat, lon); a bad
    line names file and line."""
    gps: dict[str, tuple[float, float]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        ok = len(fields) == 4 and fields[1][:1] in "Ee" and fields[2][:1] in "Nn" and "/" in fields[0]
        if not ok:
            expected = "expected 'path E<lon> N<lat> height'"
            raise GeolinkError(f"{path}:{line_no}: {expected}, got {line.strip()!r}")
        lat, lon = parse_lat_lon([fields[2][1:], fields[1][1:]], path, line_no)
        gps[_relative_key(fields[0])] = (lat, lon)
    return gps


def _relative_key(path: str) -> str:
    return path.replace("\\", "/").removeprefix("./")


def location_means(image_gps: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Location id (an image's parent folder) → the mean (lat, lon) of its listed images."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for key, latlon in image_gps.items():
        groups.setdefault(key.split("/")[-2], []).append(latlon)
    return {
        loc: (sum(p[0] for p in ps) / len(ps), sum(p[1] for p in ps) / len(ps)) for loc, ps in groups.items()
    }


def _with_positions(items: list[ImageItem], root: Path, image_gps: dict) -> list[ImageItem]:
    """``items`` with the position their GPS line gives (None for an image without one)."""
    return [replace(i, latlon=image_gps.get(i.path.relative_to(root).as_posix())) for i in items]


def _gps_files(root: Path) -> list[Path]:
    all_file = root / "Dense_GPS_ALL.txt"
    return [all_file] if all_file.is_file() else sorted(root.glob("Dense_GPS_*.txt"))


def _height(path: Path) -> int | None:
    match = _HEIGHT_NAME.match(path.stem)
    return int(match.group(1)) if match else None


def _drone(groups: dict[str, list[Path]], heights: tuple[int, ...] | None) -> dict[str, list[ImageItem]]:
    items = {
        loc: [ImageItem(p, loc, _height(p)) for p in paths if heights is None or _height(p) in heights]
        for loc, paths in groups.items()
    }
    return {loc: found for loc, found in items.items() if found}


def _check_heights(heights: list[int] | None) -> tuple[int, ...] | None:
    if heights is not None and (not heights or any(h not in HEIGHTS for h in heights)):
        raise GeolinkError(f"DenseUAV heights are {', '.join(map(str, HEIGHTS))}; got {heights}")
    return None if heights is None else tuple(heights)


def read(root: Path, heights: list[int] | None = None) -> CrossViewData:
    chosen = _check_heights(heights)
    train = require_dir(root / "train")
    train_drone = _drone(read_id_folders(train / "drone"), chosen)
    train_satellite = read_id_folders(train / "satellite")
    check_satellite_for_each(train_drone, train_satellite, train / "satellite")
    test = read_test_folders(require_dir(root / "test"))
    image_gps: dict[str, tuple[float, float]] = {}
    for path in _gps_files(root):
        image_gps.update(read_gps_txt(path))
    return CrossViewData(
        kind="denseuav",
        root=root,
        train_drone={loc: [i.path for i in items] for loc, items in train_drone.items()},
        train_satellite=train_satellite,
        query_drone=_with_positions(
            [i for items in _drone(test["query_drone"], chosen).values() for i in items], root, image_gps
        ),
        gallery_satellite=_with_positions(as_items(test["gallery_satellite"]), root, image_gps),
        query_satellite=_with_positions(as_items(test["query_satellite"]), root, image_gps),
        gallery_drone=_with_positions(
            [i for items in _drone(test["gallery_drone"], chosen).values() for i in items], root, image_gps
        ),
        gps=location_means(image_gps),
        pointcloud_dir=None,
        meta={**read_meta(root), "heights": list(chosen or HEIGHTS)},
    )
