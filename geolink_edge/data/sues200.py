"""SUES-200: ``satellite-view/<id>/0.png`` and ``drone-view/<id>/<150|200|250|300>/*.jpg``.

The official protocol: 120 training ids, 80 test ids (``sues200_split``); both galleries hold all
200 ids, so the 120 training ids act as distractors at test time. Results are reported per height,
so every drone item carries its height.
"""

from __future__ import annotations

from pathlib import Path

from geolink_edge.data.layout import (
    CrossViewData,
    ImageItem,
    as_items,
    check_satellite_for_each,
    list_images,
    read_id_folders,
    read_meta,
)
from geolink_edge.data.sues200_split import HEIGHTS, TEST_IDS, TRAIN_IDS
from geolink_edge.errors import GeolinkError

# The first name is the paper's; the 512 px release names the folder differently.
DRONE_FOLDERS = ("drone-view", "drone_view_512")


def _drone_root(root: Path) -> Path:
    for name in DRONE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise GeolinkError(f"missing folder {root / DRONE_FOLDERS[0]}")


def _check_heights(heights: list[int] | None) -> tuple[int, ...]:
    if heights is None:
        return HEIGHTS
    bad = [h for h in heights if h not in HEIGHTS]
    if bad or not heights:
        raise GeolinkError(f"SUES-200 heights are {', '.join(map(str, HEIGHTS))}; got {heights}")
    return tuple(heights)


def _drone_items(drone_root: Path, heights: tuple[int, ...]) -> dict[str, list[ImageItem]]:
    items: dict[str, list[ImageItem]] = {}
    for sub in sorted(p for p in drone_root.iterdir() if p.is_dir()):
        for height in heights:
            folder = sub / str(height)
            if not folder.is_dir():
                raise GeolinkError(f"missing folder {folder}")
            images = list_images(folder)
            if not images:
                raise GeolinkError(f"no images in {folder}")
            items.setdefault(sub.name, []).extend(ImageItem(p, sub.name, height) for p in images)
    if not items:
        raise GeolinkError(f"no location folders in {drone_root}")
    return items


def read(root: Path, heights: list[int] | None = None) -> CrossViewData:
    chosen = _check_heights(heights)
    drone_root = _drone_root(root)
    satellite = read_id_folders(root / "satellite-view")
    drone = _drone_items(drone_root, chosen)
    check_satellite_for_each(drone, satellite, root / "satellite-view")
    unknown = sorted(set(drone) - TRAIN_IDS - TEST_IDS)
    if unknown:
        raise GeolinkError(f"{drone_root} holds ids outside the official 0001-0200: {', '.join(unknown[:5])}")
    test = sorted(set(drone) & TEST_IDS)
    return CrossViewData(
        kind="sues200",
        root=root,
        train_drone={loc: [i.path for i in drone[loc]] for loc in sorted(set(drone) & TRAIN_IDS)},
        train_satellite={loc: satellite[loc] for loc in sorted(set(drone) & TRAIN_IDS)},
        query_drone=[item for loc in test for item in drone[loc]],
        gallery_satellite=as_items(satellite),
        query_satellite=as_items({loc: satellite[loc] for loc in test}),
        gallery_drone=[item for loc in sorted(drone) for item in drone[loc]],
        gps=None,
        pointcloud_dir=None,
        meta={**read_meta(root), "heights": list(chosen)},
    )
