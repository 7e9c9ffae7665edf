"""The structures every dataset reader fills, and small file helpers they share.

:func:`geolink_edge.data.datasets.open_dataset` reads a dataset root into a :class:`CrossViewData`
(paths only; images are read later, by :func:`read_image`, so a bad image is reported when it is
opened). The readers of each layout live in their own modules and import this one, never the
reverse. No torch here: the index builder and the evaluation read datasets too.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from geolink_edge.atomic import read_json
from geolink_edge.errors import GeolinkError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})


@dataclass
class ImageItem:
    path: Path
    location: str
    height: int | None = None  # flight height in metres (SUES-200, DenseUAV)
    latlon: tuple[float, float] | None = None  # this image's own position, where the dataset gives one


@dataclass
class CrossViewData:
    kind: str
    root: Path
    train_drone: dict[str, list[Path]]
    train_satellite: dict[str, list[Path]]
    query_drone: list[ImageItem]
    gallery_satellite: list[ImageItem]
    query_satellite: list[ImageItem]
    gallery_drone: list[ImageItem]
    gps: dict[str, tuple[float, float]] | None
    pointcloud_dir: Path | None
    meta: dict = field(default_factory=dict)

    def drone_views(self) -> dict[str, list[Path]]:
        """Every drone image of each location over all splits (the input of 3D reconstruction)."""
        views: dict[str, list[Path]] = {loc: list(paths) for loc, paths in self.train_drone.items()}
        for item in [*self.query_drone, *self.gallery_drone]:
            paths = views.setdefault(item.location, [])
            if item.path not in paths:
                paths.append(item.path)
        return views

    def test_locations(self) -> set[str]:
        """Locations that have queries; gallery locations outside this set are distractors."""
        return {item.location for item in [*self.query_drone, *self.query_satellite]}


def read_image(path: str | Path) -> np.ndarray:
    """BGR uint8 (H, W, 3); an unreadable or missing file is a one-line GeolinkError naming it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise GeolinkError(f"cannot read image {path} (missing, truncated or not an image)")
    return image


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise GeolinkError(f"missing folder {path}")
    return path


def read_id_folders(folder: Path) -> dict[str, list[Path]]:
    """``folder/<id>/*.img`` → {id: sorted image paths}; an id folder without images is an error."""
    require_dir(folder)
    groups: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = list_images(sub)
        if not images:
            raise GeolinkError(f"no images in {sub}")
        groups[sub.name] = images
    if not groups:
        raise GeolinkError(f"no location folders in {folder}")
    return groups


def as_items(groups: dict[str, list[Path]]) -> list[ImageItem]:
    return [ImageItem(path, loc) for loc, paths in groups.items() for path in paths]


def check_satellite_for_each(drone: dict, satellite: dict, where: Path) -> None:
    for loc in drone:
        if loc not in satellite:
            raise GeolinkError(f"location {loc} has drone images but no satellite image in {where}")


def check_drone_for_each(satellite: dict, drone: dict, where: Path) -> None:
    for loc in satellite:
        if loc not in drone:
            raise GeolinkError(f"location {loc} has a satellite query but no drone images in {where}")


def read_gps_csv(path: Path) -> dict[str, tuple[float, float]]:
    """``location_id,lat,lon`` with a header; a bad line names the file and line number."""
    gps: dict[str, tuple[float, float]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:3]] != ["location_id", "lat", "lon"]:
            raise GeolinkError(f"{path}:1: expected the header 'location_id,lat,lon'")
        for line_no, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            gps[_checked_id(row, path, line_no)] = parse_lat_lon(row[1:3], path, line_no)
    return gps


def _checked_id(row: list[str], path: Path, line_no: int) -> str:
    if len(row) < 3 or not row[0].strip():
        raise GeolinkError(f"{path}:{line_no}: expected 'location_id,lat,lon', got {','.join(row)!r}")
    return row[0].strip()


def parse_lat_lon(fields: list[str], path: Path, line_no: int) -> tuple[float, float]:
    try:
        lat, lon = float(fields[0]), float(fields[1])
    except (ValueError, IndexError):
        raise GeolinkError(f"{path}:{line_no}: latitude/longitude are not numbers: {fields!r}") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise GeolinkError(f"{path}:{line_no}: latitude/longitude out of range: {lat}, {lon}")
    return lat, lon


def read_meta(root: Path) -> dict:
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    meta = read_json(path, "dataset description")
    if not isinstance(meta, dict):
        raise GeolinkError(f"{path} must hold a JSON object")
    return meta
