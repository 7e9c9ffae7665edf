"""Helpers for the runtime tests: a textured ground image and exact pinhole views of it."""

from __future__ import annotations

import math

import cv2
import numpy as np

# no estimate of the small synthetic flights (tiny random encoder) may be further from the truth
MAX_SENT_ERROR_M = 50.0


def textured_ground(size: int = 800, seed: int = 0) -> np.ndarray:
    """A BGR image with varied, non-repeating texture (blobs, boxes, lines) that local features lock on."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.float32)
    for cell in (64, 16, 4):
        small = rng.random((size // cell + 2, size // cell + 2, 3)).astype(np.float32)
        image += cv2.resize(small, (size + 2 * cell, size + 2 * cell), interpolation=cv2.INTER_CUBIC)[
            :size, :size
        ]
    image = image / 3.0 * 160
    for _ in range(size // 2):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(4, 30, 2)
        colour = [int(c) for c in rng.integers(0, 255, 3)]
        if rng.random() < 0.5:
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), colour, -1)
        else:
            cv2.circle(image, (int(x), int(y)), int(w // 2), colour, -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def world_to_camera(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """R of the camera convention in docs/artifacts.md (rows: right, down, forward)."""
    psi, theta = math.radians(yaw_deg), math.radians(pitch_deg)
    right = np.array([math.cos(psi), -math.sin(psi), 0.0])
    forward = np.array([math.sin(psi) * math.cos(theta), math.cos(psi) * math.cos(theta), -math.sin(theta)])
    return np.stack([right, np.cross(forward, right), forward])


def ortho_affine(gsd: float, x0: float, y0: float) -> np.ndarray:
    """pixel_to_xy of a north-up image whose pixel (0, 0) centre is at (x0, y0)."""
    return np.array([[gsd, 0.0, x0], [0.0, -gsd, y0]])


def render_view(
    ortho: np.ndarray,
    affine: np.ndarray,
    k: np.ndarray,
    centre,
    yaw_deg: float,
    pitch_deg: float,
    size: tuple[int, int] = (640, 480),
    slope: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """What a pinhole camera at ``centre`` (east, north, up) sees of the ground in ``ortho``, the
    ground being the plane ``up = slope[0] * east + slope[1] * north`` (level by default)."""
    rotation = world_to_camera(yaw_deg, pitch_deg)
    cx, cy, cz = np.asarray(centre, float)
    plane_to_offset = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [slope[0], slope[1], -cz]])
    ground_to_image = k @ rotation @ plane_to_offset
    pixel_to_ground = np.vstack([affine, [0.0, 0.0, 1.0]])
    return cv2.warpPerspective(ortho, ground_to_image @ pixel_to_ground, size, flags=cv2.INTER_LINEAR)


def build_index(ortho, model, out):
    """A tile index of ``ortho`` for ``model``, tiles as wide as a synthetic frame's footprint (the tiny
    model's card has no training tile size)."""
    from geolink_edge.index.build import BuildConfig, main

    return main(BuildConfig(tile_m=80.0, workers=1), model, out, ortho=[ortho])


def synthetic_flight_world(root, model, flight_frames: int, area_px: int = 1024, **options):
    """``(flight folder, index folder, model)``: a small synthetic world with a flight and its index;
    ``options``: more of ``SynthConfig`` (another season for the map, a lower flight, …)."""
    import json

    from geolink_edge.data.synthetic import writer

    conf = writer.SynthConfig(
        locations=2, views=1, size=64, flight_frames=flight_frames, area_px=area_px, workers=1, **options
    )
    writer.main(conf, root / "synth")
    flight = root / "synth" / "flight"
    area = json.loads((flight / "flight.json").read_text())["area"]
    index = build_index(root / "synth" / "areas" / area / "ortho.tif", model, root / "index")
    return flight, index, model
