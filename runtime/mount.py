"""How the camera is mounted: the autopilot's attitude (and a gimbal's report) → the camera's attitude.

Angles follow the camera convention of docs/artifacts.md: ``yaw`` is the heading of the optical
axis (degrees clockwise from north), ``pitch`` its angle below the horizon (90 = straight down)
and ``roll`` the turn of the image about the optical axis, positive when the image's right side
goes down (as seen from behind the camera). They are exactly the ZYX Euler angles of a camera
frame (x forward along the optical axis, y right, z down) in north-east-down, with the pitch's sign
flipped — the same angles MAVLink uses for the vehicle's ATTITUDE and a gimbal's quaternion.

Two mounts:

- ``body``: fixed to the airframe at ``yaw, pitch, roll`` relative to the body (nose, right wing,
  belly). The body's full attitude is composed with it: nose down tilts a downward camera's axis
  *backward*, a right roll swings it to the left.
- ``gimbal``: stabilised. Pitch and roll are those the gimbal reports (GIMBAL_DEVICE_ATTITUDE_STATUS
  or MOUNT_STATUS), or the set ``pitch, roll`` while it reports nothing; yaw is the vehicle's yaw
  plus the set ``yaw`` offset (plus the gimbal's own yaw relative to the vehicle, when reported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geolink_edge.errors import GeolinkError
from geolink_edge.registry import check_name

MOUNTS = ("body", "gimbal")
# (east, north, up) → (north, east, down), its own inverse
ENU_TO_NED = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
# a camera frame (forward, right, down) → OpenCV's (right, down, forward)
FRD_TO_OPENCV = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation body→NED of ZYX Euler angles (radians, MAVLink's sense: pitch positive nose up)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def matrix_to_euler(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) radians of a body→NED rotation; at ±90° pitch the roll is folded into the yaw."""
    r = np.asarray(rotation, dtype=np.float64)
    pitch = math.asin(float(np.clip(-r[2, 0], -1.0, 1.0)))
    if math.hypot(r[0, 0], r[1, 0]) < 1e-9:  # optical axis vertical: only yaw ± roll is defined
        return math.atan2(-r[0, 1], r[1, 1]), pitch, 0.0
    return math.atan2(r[1, 0], r[0, 0]), pitch, math.atan2(r[2, 1], r[2, 2])


def matrix_to_quaternion(rotation: np.ndarray) -> list[float]:
    """(w, x, y, z) of a rotation matrix, w ≥ 0 (MAVLink's quaternion order)."""
    r = np.asarray(rotation, float)
    w = math.sqrt(max(0.0, 1.0 + np.trace(r))) / 2.0
    x = math.copysign(math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2.0, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2.0, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2.0, r[1, 0] - r[0, 1])
    return [w, x, y, z]


def quaternion_to_matrix(q) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = (float(v) for v in q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def camera_to_ned(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Camera (forward, right, down) → NED of camera-convention angles in degrees."""
    return euler_to_matrix(math.radians(yaw), -math.radians(pitch), math.radians(roll))


def camera_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """Camera-convention (yaw in [0, 360), pitch, roll) in degrees of a camera→NED rotation."""
    yaw, pitch, roll = matrix_to_euler(rotation)
    return math.degrees(yaw) % 360.0, -math.degrees(pitch), math.degrees(roll)


def world_to_camera(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """World (east, north, up) → OpenCV camera (right, down, forward) rotation, degrees in."""
    return FRD_TO_OPENCV @ camera_to_ned(yaw, pitch, roll).T @ ENU_TO_NED


@dataclass(frozen=True)
class BodyAttitude:
    """The vehicle's attitude as MAVLink ATTITUDE gives it: radians, NED, pitch positive nose up."""

    roll: float
    pitch: float
    yaw: float


@dataclass(frozen=True)
class GimbalAttitude:
    """A gimbal's report in camera-convention degrees; ``yaw`` from the vehicle's unless ``earth_yaw``."""

    pitch: float
    roll: float
    yaw: float = 0.0
    earth_yaw: bool = False


@dataclass(frozen=True)
class CameraMount:
    kind: str = "body"
    pitch: float = 90.0  # body: below the body's nose-wing plane; gimbal: below the horizon
    yaw: float = 0.0  # right of the nose (body) / offset from the vehicle's heading (gimbal)
    roll: float = 0.0

    def __post_init__(self) -> None:
        check_name("--mount kind", self.kind, MOUNTS)
        if not all(math.isfinite(v) for v in (self.pitch, self.yaw, self.roll)):
            raise GeolinkError(
                f"--mount angles must be finite degrees, got {self.pitch}, {self.yaw}, {self.roll}"
            )

    def __str__(self) -> str:
        """As ``--mount`` spells it (what :meth:`parse` reads)."""
        return f"{self.kind}:{self.pitch:g}:{self.yaw:g}:{self.roll:g}"

    @classmethod
    def parse(cls, text: str) -> CameraMount:
        """``KIND[:PITCH[:YAW[:ROLL]]]``, e.g. ``body``, ``body:90``, ``gimbal:90:0:0``."""
        kind, *angles = text.split(":")
        if len(angles) > 3:
            raise GeolinkError(f"--mount {text}: expected KIND[:PITCH[:YAW[:ROLL]]]")
        try:
            values = [float(a) for a in angles]
        except ValueError:
            raise GeolinkError(f"--mount {text}: angles must be numbers of degrees") from None
        return cls(kind, *values)

    def camera(
        self, body: BodyAttitude | None, gimbal: GimbalAttitude | None = None
    ) -> tuple[float, float, float] | None:
        """Camera (yaw, pitch, roll) in degrees, or None when the vehicle's attitude is unknown."""
        if body is None:
            return None
        if self.kind == "body":
            body_to_ned = euler_to_matrix(body.yaw, body.pitch, body.roll)
            return camera_angles(body_to_ned @ camera_to_ned(self.yaw, self.pitch, self.roll))
        heading = math.degrees(body.yaw)
        if gimbal is None:
            return (heading + self.yaw) % 360.0, self.pitch, self.roll
        yaw = gimbal.yaw if gimbal.earth_yaw else heading + gimbal.yaw
        return (yaw + self.yaw) % 360.0, gimbal.pitch, gimbal.roll
