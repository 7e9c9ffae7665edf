"""Open any supported dataset root: the real benchmarks' layouts and the synthetic world."""

from __future__ import annotations

from pathlib import Path

from geolink_edge.data import denseuav, sues200, university1652
from geolink_edge.data.layout import CrossViewData, require_dir
from geolink_edge.errors import GeolinkError
from geolink_edge.registry import check_name

READERS = {
    "university1652": university1652.read,
    "sues200": sues200.read,
    "denseuav": denseuav.read,
    "synthetic": university1652.read_synthetic,
}


def detect_kind(root: Path) -> str:
    if (root / "satellite-view").is_dir():
        return "sues200"
    if any(root.glob("Dense_GPS_*.txt")):
        return "denseuav"
    if (root / "dataset.json").is_file():
        return "synthetic"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "university1652"
    raise GeolinkError(
        f"{root} is not a dataset root: expected train/ and test/ (University-1652 layout), "
        "satellite-view/ (SUES-200) or Dense_GPS_*.txt (DenseUAV)"
    )


def open_dataset(
    root: str | Path,
    kind: str = "auto",
    heights: list[int] | None = None,
    pointcloud_dir: str | Path | None = None,
) -> CrossViewData:
    """Read a dataset root. ``heights`` keeps only drone views flown at those heights (SUES-200:
    150/200/250/300, DenseUAV: 80/90/100). ``pointcloud_dir`` defaults to ``root/pointclouds``."""
    check_name("dataset kind", kind, ("auto", *READERS))
    root = Path(root)
    require_dir(root)
    if kind == "auto":
        kind = detect_kind(root)
    if heights is not None and kind in ("university1652", "synthetic"):
        raise GeolinkError(f"--heights applies to SUES-200 and DenseUAV, not to {kind}")
    data = READERS[kind](root, heights)
    pc_dir = Path(pointcloud_dir) if pointcloud_dir is not None else root / "pointclouds"
    data.pointcloud_dir = pc_dir if pc_dir.is_dir() else None
    return data
