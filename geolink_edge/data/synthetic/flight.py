"""A simulated flight over one area: a smooth closed path at constant altitude, rendered frame by frame.

The path is a Lissajous figure (long straights, turns both ways) walked at constant speed, with a
heading that follows the track plus a slow yaw swing. It is shrunk until every frame's ground
footprint stays inside the area with a margin, so the runtime never looks off the orthophoto.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geolink_edge import atomic
from geolink_edge.data.synthetic.georef import AreaGrid
from geolink_edge.data.synthetic.look import encode_jpeg
from geolink_edge.data.synthetic.render import Surface, intrinsics, make_camera, render
from geolink_edge.errors import GeolinkError

MARGIN_M = 15.0


@dataclass(frozen=True)
class FlightSpec:
    frames: int
    size: int = 320
    altitude: float = 130.0  # above the area's mean ground
    pitch: float = 90.0
    hfov: float = 60.0
    fps: float = 2.0
    speed: float = 10.0  # m/s


def footprint_radius(altitude: float, pitch: float, hfov: float) -> float:
    """Largest horizontal distance from the drone to a ground point at an image corner."""
    K = intrinsics(64, 64, hfov)
    worst = 0.0
    for u, v in ((0, 0), (63, 0), (0, 63), (63, 63)):
        ray = make_camera((0, 0, altitude), 0.0, pitch, 64, 64, hfov).R.T @ np.linalg.solve(K, [u, v, 1.0])
        if ray[2] > -0.05:
            raise GeolinkError(f"flight pitch {pitch}° sees the horizon; use a steeper pitch")
        worst = max(worst, altitude / -ray[2] * math.hypot(ray[0], ray[1]))
    return worst


def trajectory(grid: AreaGrid, spec: FlightSpec, rng: np.random.Generator):
    """Local (x, y) positions and headings (deg) of every frame."""
    half = min(grid.size_m) / 2
    amp = half - footprint_radius(spec.altitude, spec.pitch, spec.hfov) - MARGIN_M
    if amp < 30:
        raise GeolinkError(f"a flight at {spec.altitude} m does not fit in a {2 * half:.0f} m area")
    tau = np.linspace(0, 2 * np.pi, 4001)
    phase = rng.uniform(0, 2 * np.pi)
    ax, ay = (amp, amp * rng.uniform(0.7, 1.0)) if rng.random() < 0.5 else (amp * rng.uniform(0.7, 1.0), amp)
    path = np.stack([half + ax * np.sin(tau + phase), half + ay * np.sin(2 * tau)], 1)
    arc = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    s = (rng.uniform(0, arc[-1]) + np.arange(spec.frames) * spec.speed / spec.fps) % arc[-1]
    x, y = np.interp(s, arc, path[:, 0]), np.interp(s, arc, path[:, 1])
    ahead = (s + 1.0) % arc[-1]
    dx, dy = np.interp(ahead, arc, path[:, 0]) - x, np.interp(ahead, arc, path[:, 1]) - y
    heading = np.degrees(np.arctan2(dx, -dy))  # local y runs south
    swing = 20 * np.sin(2 * np.pi * np.arange(spec.frames) / 37 + rng.uniform(0, 6.3))
    return x, y, (heading + swing) % 360


def write_flight(
    out: Path, surface: Surface, area: str, spec: FlightSpec, rng: np.random.Generator, on_frame=None
) -> Path:
    """``out/frames/*.jpg``, ``gt.csv``, ``camera.yaml`` and ``flight.json`` (docs/artifacts.md)."""
    grid = surface.grid
    ground = float(np.mean(surface.ground if surface.ground is not None else surface.dsm))
    x, y, yaw = trajectory(grid, spec, rng)
    east, north = grid.local_to_crs(x, y)
    lat, lon = grid.to_latlon(east, north)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["frame", "timestamp", "lat", "lon", "alt", "yaw", "pitch", "roll"])
    for i in range(spec.frames):
        cam = make_camera(
            (east[i], north[i], ground + spec.altitude), yaw[i], spec.pitch, spec.size, spec.size, spec.hfov
        )
        image, _ = render(surface, cam)
        atomic.write_bytes(out / "frames" / f"{i:06d}.jpg", encode_jpeg(image, 90))
        writer.writerow(
            [
                i,
                f"{i / spec.fps:.3f}",
                f"{lat[i]:.8f}",
                f"{lon[i]:.8f}",
                f"{spec.altitude:.2f}",
                f"{yaw[i]:.3f}",
                f"{spec.pitch:.3f}",
                "0.000",
            ]
        )
        if on_frame:
            on_frame()
    atomic.write_text(out / "gt.csv", rows.getvalue())
    K = intrinsics(spec.size, spec.size, spec.hfov)
    atomic.write_text(
        out / "camera.yaml",
        (
            f"image_width: {spec.size}\nimage_height: {spec.size}\ncamera_name: synthetic\n"
            f"camera_matrix:\n  rows: 3\n  cols: 3\n  data: [{', '.join(f'{v:.6f}' for v in K.ravel())}]\n"
            "distortion_model: plumb_bob\n"
            "distortion_coefficients:\n  rows: 1\n  cols: 5\n  data: [0, 0, 0, 0, 0]\n"
        ),
    )
    atomic.write_json(
        out / "flight.json",
        {
            "fps": spec.fps,
            "area": area,
            "epsg": grid.epsg,
            "ground_height_m": round(ground, 3),
            "frames": spec.frames,
            "altitude_m": spec.altitude,
            "pitch_deg": spec.pitch,
            "hfov_deg": spec.hfov,
            "speed_mps": spec.speed,
        },
    )
    return out
