"""Read the 3D points of a COLMAP sparse model (``points3D.txt`` or ``points3D.bin``).

Both are COLMAP's documented formats, also written by VGGT's exporter:
text, one point per line: ``POINT3D_ID X Y Z R G B ERROR (IMAGE_ID POINT2D_IDX)*``, ``#`` comments;
binary, little-endian: uint64 count, then per point uint64 id, 3 × float64 xyz, 3 × uint8 rgb,
float64 error, uint64 track length, track length × (uint32 image id, uint32 point2D index).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from geolink_edge.errors import GeolinkError

_POINT_HEAD = struct.Struct("<Q3d3BdQ")  # id, xyz, rgb, error, track length
_TRACK_ENTRY = 8  # uint32 image id + uint32 point2D index
# Where users' models usually are, relative to a location's folder.
MODEL_SUBDIRS = ("", "sparse", "sparse/0", "0")


def read_points3d_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            if len(fields) < 8 or (len(fields) - 8) % 2:
                raise ValueError
            xyz.append([float(v) for v in fields[1:4]])
            rgb.append([int(v) for v in fields[4:7]])
        except ValueError:
            raise GeolinkError(
                f"{path}:{line_no}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK...', "
                f"got {line.strip()[:80]!r}"
            ) from None
    return np.asarray(xyz, np.float64).reshape(-1, 3), np.clip(np.asarray(rgb), 0, 255).astype(
        np.uint8
    ).reshape(-1, 3)


def read_points3d_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    try:
        (count,) = struct.unpack_from("<Q", data, 0)
        xyz = np.empty((count, 3), np.float64)
        rgb = np.empty((count, 3), np.uint8)
        offset = 8
        for i in range(count):
            _, x, y, z, r, g, b, _, track = _POINT_HEAD.unpack_from(data, offset)
            xyz[i] = (x, y, z)
            rgb[i] = (r, g, b)
            offset += _POINT_HEAD.size + track * _TRACK_ENTRY
            if offset > len(data):
                raise struct.error("track runs past the end")
    except (struct.error, MemoryError, ValueError):
        raise GeolinkError(f"{path} is not a COLMAP points3D.bin (truncated or another format)") from None
    if offset != len(data):
        raise GeolinkError(f"{path} has {len(data) - offset} trailing bytes: not a COLMAP points3D.bin")
    return xyz, rgb


def read_points3d(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float64 (N, 3), rgb uint8 (N, 3)) of a ``points3D.bin`` or ``points3D.txt`` file."""
    path = Path(path)
    if not path.is_file():
        raise GeolinkError(f"missing COLMAP model file {path}")
    return read_points3d_binary(path) if path.suffix == ".bin" else read_points3d_text(path)


def find_points3d(location_dir: Path) -> Path:
    """The points3D file of one location's model folder (binary preferred)."""
    for sub in MODEL_SUBDIRS:
        for name in ("points3D.bin", "points3D.txt"):
            candidate = location_dir / sub / name
            if candidate.is_file():
                return candidate
    raise GeolinkError(
        f"no points3D.bin or points3D.txt under {location_dir} (looked in ./, sparse/, sparse/0/, 0/)"
    )
