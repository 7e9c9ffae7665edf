"""Pictures of a flown flight: trajectory over the orthophoto, error over time, match panels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from geolink_edge.errors import require
from geolink_edge.runtime.sinks import tally_text


def _pyplot():
    matplotlib = require("matplotlib", "pip install matplotlib (part of 'geolink-edge[train]')")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ortho_preview(ortho: Path, max_side: int = 1024):
    """A downsampled RGB of the orthophoto and a function mapping lat/lon to its pixels."""
    rasterio = require("rasterio", "pip install rasterio (part of 'geolink-edge[train]')")
    from pyproj import Transformer

    with rasterio.open(ortho) as src:
        scale = max(src.width, src.height) / max_side
        shape = (3, int(src.height / scale), int(src.width / scale))
        rgb = np.moveaxis(src.read([1, 2, 3], out_shape=shape), 0, -1)
        inverse = ~src.transform
        to_crs = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)

    def to_pixels(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = to_crs.transform(lon, lat)
        col, row = inverse * (np.asarray(x), np.asarray(y))
        return np.asarray(col) / scale, np.asarray(row) / scale

    return rgb, to_pixels


def flight_truth(flight: Path) -> np.ndarray:
    """(N, 2) latitude and longitude of every frame of the flight, in order, from its own ``gt.csv``:
    the whole path flown, not only the frames the runtime got to."""
    from geolink_edge.runtime.sources import SimReader

    rows = SimReader(flight).rows
    return np.array([(rows[name][1].lat, rows[name][1].lon) for name in sorted(rows)], dtype=np.float64)


def frame_tally(records: list[dict], total: int) -> dict[str, list[int]]:
    """The frames of a flight of ``total`` frames: ``seen`` (processed), ``dropped`` (never looked at:
    real-time pacing skips stale frames), ``fixed`` (an accepted fix) and ``unfixed`` (seen, no fix)."""
    seen = sorted({r["frame"] for r in records})
    fixed = sorted({r["frame"] for r in records if r.get("status") == "accepted"})
    return {
        "seen": seen,
        "dropped": sorted(set(range(total)) - set(seen)),
        "fixed": fixed,
        "unfixed": sorted(set(seen) - set(fixed)),
    }


def draw_trajectory(records: list[dict], truth: np.ndarray, ortho: Path, path: Path) -> Path:
    """The whole flight's ground truth, the estimates sent, and where frames were dropped or unfixed."""
    plt = _pyplot()
    rgb, to_pixels = _ortho_preview(ortho)
    tally = frame_tally(records, len(truth))
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(rgb)
    # the truth drawn over the marks of the frames it passes, so that its line stays whole
    ax.plot(*to_pixels(truth[:, 0], truth[:, 1]), "-", color="white", lw=1.5, zorder=3, label="ground truth")
    for key, marker, colour, size, label in (
        ("dropped", "o", "black", 5, "dropped: never processed"),
        ("unfixed", "X", "orange", 7, "processed, no accepted fix"),
    ):
        if tally[key]:
            lat, lon = truth[tally[key]].T
            ax.plot(*to_pixels(lat, lon), marker, color=colour, ms=size, zorder=2, label=label)
    estimate = np.array([(r["estimate"]["lat"], r["estimate"]["lon"]) for r in records if r.get("estimate")])
    if len(estimate):
        where = to_pixels(estimate[:, 0], estimate[:, 1])
        ax.plot(*where, "o", color="red", ms=3.5, zorder=4, label="estimate sent")
    ax.legend(loc="lower right")
    counts = tally_text(len(truth), len(tally["seen"]), len(tally["fixed"]))
    ax.set_title(f"Flight over the orthophoto: {counts}", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_errors(records: list[dict], total: int, path: Path) -> Path:
    """Error of each sent estimate over the whole flight; dropped and unfixed frames marked."""
    plt = _pyplot()
    tally = frame_tally(records, total)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    frames = [r["frame"] for r in records if r.get("error_m") is not None]
    errors = [r["error_m"] for r in records if r.get("error_m") is not None]
    ax.plot(frames, errors, ".-", color="tab:blue", label="error of the sent estimate")
    for key, marker, colour, label in (
        ("dropped", "|", "grey", "dropped: never processed"),
        ("unfixed", "x", "tab:red", "processed, no accepted fix"),
    ):
        if tally[key]:
            ax.plot(tally[key], np.zeros(len(tally[key])), marker, color=colour, label=label)
    ax.set_xlim(-1, total)
    ax.set_xlabel(f"frame (of {total})")
    ax.set_ylabel("position error (m)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _side_by_side(frame: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Frame left, map window right, at the same height."""
    height = 360
    fs, ws = height / frame.shape[0], height / window.shape[0]
    left = cv2.resize(frame, (int(frame.shape[1] * fs), height))
    right = cv2.resize(window, (int(window.shape[1] * ws), height))
    return np.concatenate([left, right], axis=1)


def _window_with_marks(index, record: dict) -> np.ndarray:
    """The map window a fix was matched in, the fix (green) and the truth (red) circled on it."""
    x, y, half, gsd = record["fix"]["window"]
    window = index.map_window(x, y, half, gsd)
    image = window.image.copy()
    to_pixel = cv2.invertAffineTransform(window.pixel_to_xy)
    points = [((record["fix"]["x"], record["fix"]["y"]), (0, 200, 0))]
    truth = record.get("truth")
    if truth is not None and index.frame is not None:
        east, north, _ = index.frame.to_enu(truth["lat"], truth["lon"])
        points.append(((float(east), float(north)), (0, 0, 230)))
    radius = max(4, image.shape[0] // 60)
    for (east, north), colour in points:
        u, v = to_pixel @ np.array([east, north, 1.0])
        cv2.circle(image, (int(round(u)), int(round(v))), radius, colour, max(2, radius // 3), cv2.LINE_AA)
    return image


def draw_match_panels(records: list[dict], flight: Path, index_dir: Path, path: Path, count: int = 3) -> Path:
    """Query frame | the map window it was matched against (fix green, truth red), for a few accepted
    frames."""
    from geolink_edge.index.search import TileIndex

    plt = _pyplot()
    index = TileIndex.load(index_dir)
    chosen = [r for r in records if r.get("status") == "accepted" and r["fix"].get("window")]
    picks = [chosen[i] for i in np.linspace(0, len(chosen) - 1, min(count, len(chosen))).astype(int)]
    fig, axes = plt.subplots(max(1, len(picks)), 1, figsize=(9, 3.6 * max(1, len(picks))), squeeze=False)
    for ax, record in zip(axes[: len(picks), 0], picks, strict=True):
        frame = cv2.imread(str(flight / "frames" / f"{record['frame']:06d}.jpg"), cv2.IMREAD_COLOR)
        panel = _side_by_side(frame, _window_with_marks(index, record))
        ax.imshow(cv2.cvtColor(panel, cv2.COLOR_BGR2RGB))
        error = record.get("error_m")
        title = f"frame {record['frame']}: map window, {record['fix']['inliers']} inliers"
        ax.set_title(title + (f", error {error:.1f} m" if error is not None else ""))
        ax.set_axis_off()
    if not picks:
        axes[0, 0].text(0.5, 0.5, "no accepted fix to show", ha="center")
        axes[0, 0].set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_all(out: Path, made: dict) -> list[Path]:
    from geolink_edge.runtime.sinks import read_flight_log

    records, _ = read_flight_log(out / "flight.jsonl")
    pictures = out / "pictures"
    pictures.mkdir(exist_ok=True)
    ortho = made["world"] / "areas" / made["area"] / "ortho.tif"
    truth = flight_truth(made["flight"])
    return [
        draw_trajectory(records, truth, ortho, pictures / "trajectory.png"),
        draw_errors(records, len(truth), pictures / "error_over_time.png"),
        draw_match_panels(records, made["flight"], made["index"], pictures / "matches.png"),
    ]
