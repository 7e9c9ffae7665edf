"""Camera intrinsics (fx, fy, cx, cy, distortion) from OpenCV or ROS camera_info YAML files.

Accepted layouts: ROS ``camera_info`` (``camera_matrix: {rows, cols, data}``,
``distortion_coefficients``), the ROS 2 message fields ``k``/``d``, OpenCV ``FileStorage`` YAML
(``%YAML:1.0`` with ``!!opencv-matrix`` entries such as ``camera_matrix``/``cameraMatrix`` and
``distortion_coefficients``/``dist_coeffs``) and plain ``fx, fy, cx, cy`` keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import yaml

from geolink_edge.errors import GeolinkError

_MATRIX_KEYS = ("camera_matrix", "cameraMatrix", "K", "k", "intrinsics")
_DIST_KEYS = ("distortion_coefficients", "dist_coeffs", "distCoeffs", "D", "d", "distortion")
_WIDTH_KEYS = ("image_width", "width", "imageWidth")
_HEIGHT_KEYS = ("image_height", "height", "imageHeight")


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, ...] = ()
    width: int | None = None
    height: int | None = None

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the usual name of the camera matrix
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist_array(self) -> np.ndarray:
        return np.asarray(self.dist, dtype=np.float64) if self.dist else np.zeros(0)

    def for_size(self, width: int, height: int) -> Intrinsics:
        """The same camera delivering frames of another size (a resized stream scales K)."""
        if self.width is None or self.height is None or (self.width, self.height) == (width, height):
            return self
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
            width=width,
            height=height,
        )

    def undistort_points(self, pts: np.ndarray) -> np.ndarray:
        """Pixel points (N, 2) → the pixels an ideal pinhole camera with the same K would see."""
        if not any(self.dist):
            return np.asarray(pts, dtype=np.float64)
        out = cv2.undistortPoints(
            np.asarray(pts, np.float64).reshape(-1, 1, 2), self.K, self.dist_array, P=self.K
        )
        return out.reshape(-1, 2)


def _first(data: dict, keys: tuple[str, ...]):
    return next((data[k] for k in keys if k in data and data[k] is not None), None)


def _values(entry, path: Path, what: str) -> list[float]:
    """A matrix given as {rows, cols, data}, a flat list or a nested list → flat floats."""
    if isinstance(entry, dict):
        entry = entry.get("data")
    try:
        values = [float(v) for v in np.asarray(entry, dtype=np.float64).ravel()]
    except (TypeError, ValueError):
        raise GeolinkError(f"{path}: {what} is not a list of numbers") from None
    if not all(np.isfinite(values)):
        raise GeolinkError(f"{path}: {what} has non-finite values")
    return values


def _from_mapping(data: dict, path: Path) -> Intrinsics:
    matrix = _first(data, _MATRIX_KEYS)
    if matrix is not None:
        k = _values(matrix, path, "camera matrix")
        if len(k) != 9:
            raise GeolinkError(f"{path}: camera matrix has {len(k)} values, expected 9")
        fx, cx, fy, cy = k[0], k[2], k[4], k[5]
    elif all(key in data for key in ("fx", "fy", "cx", "cy")):
        fx, fy, cx, cy = (float(data[key]) for key in ("fx", "fy", "cx", "cy"))
    else:
        raise GeolinkError(f"{path}: no camera matrix (expected camera_matrix, K or fx/fy/cx/cy)")
    dist_entry = _first(data, _DIST_KEYS)
    dist = tuple(_values(dist_entry, path, "distortion")) if dist_entry is not None else ()
    if len(dist) not in (0, 4, 5, 8, 12, 14):
        raise GeolinkError(f"{path}: {len(dist)} distortion coefficients (expected 4, 5, 8, 12 or 14)")
    width, height = _first(data, _WIDTH_KEYS), _first(data, _HEIGHT_KEYS)
    if fx <= 0 or fy <= 0 or not (np.isfinite(cx) and np.isfinite(cy)):
        raise GeolinkError(f"{path}: focal lengths must be positive (fx={fx}, fy={fy})")
    return Intrinsics(fx, fy, cx, cy, dist, int(width) if width else None, int(height) if height else None)


def _read_opencv(path: Path) -> dict:
    """OpenCV FileStorage YAML (with ``%YAML:1.0`` and ``!!opencv-matrix``), which pyyaml refuses."""
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as exc:
        raise GeolinkError(
            f"{path}: unreadable OpenCV YAML ({str(exc).strip().splitlines()[-1][:120]})"
        ) from None
    data = {}
    try:
        for key in (*_MATRIX_KEYS, *_DIST_KEYS, *_WIDTH_KEYS, *_HEIGHT_KEYS, "fx", "fy", "cx", "cy"):
            node = fs.getNode(key)
            if node.empty() or node.isNone():
                continue
            if node.isMap():
                data[key] = node.mat()
            elif node.isSeq():
                data[key] = [node.at(i).real() for i in range(node.size())]
            else:
                data[key] = node.real()
    finally:
        fs.release()
    return data


def load_intrinsics(path: str | Path) -> Intrinsics:
    """Read an OpenCV or ROS camera YAML; anything unusable is a one-line GeolinkError."""
    path = Path(path)
    if not path.is_file():
        raise GeolinkError(f"{path}: intrinsics file not found")
    text = path.read_text(errors="replace")
    if text.lstrip().startswith("%YAML:") or "!!opencv-matrix" in text:
        return _from_mapping(_read_opencv(path), path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise GeolinkError(
            f"{path}:{where} not valid YAML ({getattr(exc, 'problem', None) or 'parse error'})"
        ) from None
    if not isinstance(data, dict):
        raise GeolinkError(f"{path}: camera YAML must be a mapping")
    return _from_mapping(data, path)
