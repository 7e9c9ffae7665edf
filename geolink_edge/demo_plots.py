"""Pictures of a flown flight: trajectory over the orthophoto, error over time, match panels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from geolink_edge.errors import require


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


def _latlon(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(r[key]["lat"], r[key]["lon"]) for r in records if r.get(key)]
    array = np.array(points, dtype=np.float64).reshape(-1, 2)
    return array[:, 0], array[:, 1]


def draw_trajectory(records: list[dict], ortho: Path, path: Path) -> Path:
    plt = _pyplot()
    rgb, to_pixels = _ortho_preview(ortho)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(rgb)
    truth = _latlon(records, "truth")
    estimate = _latlon(records, "estimate")
    ax.plot(*to_pixels(*truth), "-", color="white", lw=2.5, label="ground truth")
    ax.plot(*to_pixels(*estimate), "o", color="red", ms=3.5, label="estimate sent (accepted fixes)")
    ax.legend(loc="lower right")
    ax.set_title("Flight over the orthophoto: estimate vs ground truth")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_errors(records: list[dict], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    frames = [r["frame"] for r in records if r.get("error_m") is not None]
    errors = [r["error_m"] for r in records if r.get("error_m") is not None]
    ax.plot(frames, errors, ".-", color="tab:blue", label="error of the sent estimate")
    missed = [r["frame"] for r in records if r.get("status") != "accepted"]
    if missed:
        ax.plot(missed, np.zeros(len(missed)), "x", color="tab:red", label="no accepted fix")
    ax.set_xlabel("frame")
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
    return [
        draw_trajectory(records, ortho, pictures / "trajectory.png"),
        draw_errors(records, pictures / "error_over_time.png"),
        draw_match_panels(records, made["flight"], made["index"], pictures / "matches.png"),
    ]
