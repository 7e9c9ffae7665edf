"""A frame resampled to the ground: north-up, at one matching ground resolution shared with the map.

A :class:`GroundView` is a canvas whose pixel (u, v) shows the ground at ``gsd_m`` metres a pixel,
east along u and north against v, plus the homography back to the frame's own pixels. Two ways to
make one:

- :func:`nadir_view` — attitude, height and intrinsics known: every pixel's ray is cut with level
  ground, so an oblique frame becomes the orthophoto it would be; the canvas origin is the point
  below the camera, and each canvas pixel's offset from it in metres is what a position vote needs.
- :func:`scaled_view` — only a guess of the frame's ground resolution (and maybe its heading) is
  known: the frame is scaled (and turned north-up) about its centre.

Keypoints found on the canvas are mapped back to frame pixels (:meth:`GroundView.frame_pixels`), so
the pose is still solved from the original pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from geolink_edge.runtime.intrinsics import Intrinsics


def quantize_up(value: float, steps_per_octave: int) -> float:
    """The smallest power of 2^(1/steps) at or above ``value``: resolutions and sizes on a
    coarse ladder, so that a slowly changing height keeps hitting cached map windows."""
    return float(2.0 ** (math.ceil(math.log2(value) * steps_per_octave - 1e-9) / steps_per_octave))


@dataclass
class GroundView:
    image: np.ndarray  # canvas, BGR or gray, north-up
    mask: np.ndarray  # uint8, 255 where the canvas shows the frame (edges eroded)
    gsd_m: float
    canvas_to_frame: np.ndarray  # 3×3: canvas pixel → ideal (undistorted) frame pixel
    origin_px: (
        np.ndarray
    )  # canvas pixel of the reference ground point (below the camera, or the frame centre)
    intrinsics: Intrinsics | None = None  # to distort mapped pixels back, when the frame has distortion

    @property
    def radius_m(self) -> float:
        """Largest ground distance from the reference point to a corner of the canvas."""
        h, w = self.mask.shape[:2]
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
        return float(np.max(np.linalg.norm(corners - self.origin_px, axis=1)) * self.gsd_m)

    def offsets_m(self, canvas_xy: np.ndarray) -> np.ndarray:
        """East/north metres of canvas pixels from the reference ground point."""
        d = (np.asarray(canvas_xy, dtype=np.float64).reshape(-1, 2) - self.origin_px) * self.gsd_m
        return np.c_[d[:, 0], -d[:, 1]]

    def frame_pixels(self, canvas_xy: np.ndarray) -> np.ndarray:
        """Canvas pixels → the frame pixels they were sampled from (distortion put back)."""
        pts = np.asarray(canvas_xy, dtype=np.float64).reshape(-1, 1, 2)
        ideal = cv2.perspectiveTransform(pts, self.canvas_to_frame).reshape(-1, 2)
        cam = self.intrinsics
        if cam is None or not any(cam.dist) or len(ideal) == 0:
            return ideal
        rays = np.c_[(ideal[:, 0] - cam.cx) / cam.fx, (ideal[:, 1] - cam.cy) / cam.fy, np.ones(len(ideal))]
        projected, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), cam.K, cam.dist_array)
        return projected.reshape(-1, 2)


def _canvas(
    image: np.ndarray,
    frame_to_ground: np.ndarray,
    box: tuple[float, float, float, float],
    gsd_m: float,
    intrinsics: Intrinsics | None = None,
    detail_m: float | None = None,
) -> GroundView:
    """Resample ``image`` onto the ground box (west, south, east, north) in metres at ``gsd_m``.

    ``frame_to_ground`` maps ideal frame pixels to ground metres (east, north) about the reference point;
    ``detail_m``: the finest ground detail kept (default and least: ``gsd_m``).
    """
    west, south, east, north = box
    width = max(1, math.ceil((east - west) / gsd_m - 1e-6))
    height = max(1, math.ceil((north - south) / gsd_m - 1e-6))
    canvas_to_ground = np.array([[gsd_m, 0.0, west], [0.0, -gsd_m, north], [0.0, 0.0, 1.0]])
    canvas_to_frame = np.linalg.inv(frame_to_ground) @ canvas_to_ground
    canvas_to_frame /= abs(canvas_to_frame[2, 2])  # keep the sign: w > 0 in front of the camera
    if intrinsics is not None and any(intrinsics.dist):
        image = cv2.undistort(image, intrinsics.K, intrinsics.dist_array)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    source, source_from_canvas = _prefiltered(image, canvas_to_frame, max(detail_m or gsd_m, gsd_m) / gsd_m)
    canvas = cv2.warpPerspective(source, source_from_canvas, (width, height), flags=flags)
    inside = np.full(image.shape[:2], 255, np.uint8)
    mask = cv2.warpPerspective(
        inside, canvas_to_frame, (width, height), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    )
    # ground behind the camera maps to frame pixels too (through a negative w): not seen
    w_row = canvas_to_frame[2]
    u, v = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    mask[w_row[0] * u + w_row[1] * v + w_row[2] <= 0] = 0
    # keypoints on the canvas border would describe the black outside: keep them a few pixels in
    mask = cv2.erode(mask, np.ones((7, 7), np.uint8))
    origin = np.array([-west / gsd_m, north / gsd_m])
    return GroundView(canvas, mask, gsd_m, canvas_to_frame, origin, intrinsics)


def linear_scale(linear: np.ndarray) -> float:
    """The length scale of a 2×2 linear map: the square root of the factor it scales areas by."""
    return math.sqrt(abs(float(np.linalg.det(linear))))


def _prefiltered(
    image: np.ndarray, canvas_to_frame: np.ndarray, cell_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` area-averaged to one pixel per detail cell of ``cell_px`` canvas pixels (only ever
    shrunk), and the canvas → averaged-image homography. Warping a frame finer than the canvas
    without it aliases; the map's windows are averaged the same way. One factor, measured at the
    frame centre: an oblique frame's far side is averaged more than it needs, its near side less."""
    h, w = image.shape[:2]
    centre = cv2.perspectiveTransform(np.array([[[w / 2.0, h / 2.0]]]), np.linalg.inv(canvas_to_frame))[0, 0]
    probe = np.array([[centre, centre + (1.0, 0.0), centre + (0.0, 1.0)]])
    a, b, c = cv2.perspectiveTransform(probe, canvas_to_frame)[0]
    factor = linear_scale(np.c_[b - a, c - a]) * cell_px  # frame pixels per detail cell
    if not np.isfinite(factor) or factor <= 1.05:
        return image, canvas_to_frame
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    scale = np.array([size[0] / w, size[1] / h])
    to_small = np.eye(3)
    to_small[[0, 1], [0, 1]] = scale
    to_small[:2, 2] = 0.5 * (scale - 1.0)  # pixel centres: x_small + 0.5 = (x + 0.5) · scale
    return small, to_small @ canvas_to_frame


def ground_to_image(intrinsics: Intrinsics, world_to_camera: np.ndarray, altitude: float) -> np.ndarray:
    """3×3 homography from level ground (east, north in metres about the point below the camera)
    to ideal frame pixels, for a camera ``altitude`` metres above it."""
    lift = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -altitude]])
    return intrinsics.K @ world_to_camera @ lift


def nadir_view(
    image: np.ndarray,
    intrinsics: Intrinsics,
    world_to_camera: np.ndarray,
    altitude: float,
    gsd_m: float,
    max_px: int = 1024,
    max_range: float = 3.0,
    detail_m: float | None = None,
) -> GroundView | None:
    """The frame as a north-up orthophoto at ``gsd_m`` (level ground ``altitude`` below the camera),
    coarser (up the :func:`quantize_up` ladder) when the canvas would be longer than ``max_px``.

    Ground farther than ``max_range`` × altitude from the point below is left out (rays near the
    horizon stretch without bound); None when no part of the frame sees the ground. ``detail_m`` as
    for :func:`scaled_view`.
    """
    height, width = image.shape[:2]
    to_image = ground_to_image(intrinsics, world_to_camera, altitude)
    to_ground = np.linalg.inv(to_image)
    # sample the frame's border: its ground outline, clipped where rays pass the horizon
    t = np.linspace(0.0, 1.0, 9)
    border = np.concatenate(
        [
            np.c_[t * width, 0 * t],
            np.c_[width + 0 * t, t * height],
            np.c_[t * width, height + 0 * t],
            np.c_[0 * t, t * height],
        ]
    )
    projected = np.c_[border, np.ones(len(border))] @ to_ground.T
    ahead = projected[:, 2] > 1e-9
    if not np.any(ahead):
        return None
    ground = projected[ahead, :2] / projected[ahead, 2:]
    reach = max_range * altitude
    ground = np.clip(ground, -reach, reach)
    west, south = ground.min(axis=0)
    east, north = ground.max(axis=0)
    extent = max(east - west, north - south)
    if extent <= 0:
        return None
    gsd_m = max(gsd_m, quantize_up(extent / max_px, 4))
    return _canvas(image, to_ground, (west, south, east, north), gsd_m, intrinsics, detail_m)


def scaled_view(
    image: np.ndarray,
    frame_gsd_m: float,
    gsd_m: float,
    heading_deg: float | None = None,
    detail_m: float | None = None,
) -> GroundView:
    """The frame scaled from ``frame_gsd_m`` to ``gsd_m`` and, with a heading (of the frame's top,
    clockwise from north), turned north-up; the reference point is the frame centre. ``detail_m``:
    the finest ground detail kept (default and least: ``gsd_m``), the frame averaged to it first."""
    height, width = image.shape[:2]
    psi = math.radians(heading_deg or 0.0)
    # frame pixel (u, v) → ground: u grows along the heading's right, v against the heading
    right = np.array([math.cos(psi), -math.sin(psi)])
    up = np.array([math.sin(psi), math.cos(psi)])
    linear = frame_gsd_m * np.c_[right, -up]
    centre = np.array([width / 2.0, height / 2.0])
    to_ground = np.eye(3)
    to_ground[:2, :2] = linear
    to_ground[:2, 2] = -linear @ centre
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    ground = (corners - centre) @ linear.T
    west, south = ground.min(axis=0)
    east, north = ground.max(axis=0)
    return _canvas(image, to_ground, (west, south, east, north), gsd_m, detail_m=detail_m)
