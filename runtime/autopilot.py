"""What each autopilot target is told, as plain message fields (the link is :mod:`mavlink`).

- ``ardupilot-gps``: GPS_INPUT for ``GPSn_TYPE = 14``. Velocity is withheld (ignore flags) until the
  track's velocity has converged, since ArduPilot rejects a GPS whose speed accuracy exceeds
  1 m/s; without an altitude above sea level the fix is 2D (``fix_type`` 2), never a 3D fix with
  a made-up height. The horizontal accuracy is the prediction's, so it grows between fixes.
- ``ardupilot-odometry``: ODOMETRY for ``VISO_TYPE = 1`` (LOCAL_FRD/BODY_FRD; our LOCAL_FRD is
  north-aligned). ArduPilot folds the three position (and velocity) variances into one error and
  turns any NaN into a NaN error, so nothing unknown is NaN here: an unknown height or vertical
  speed gets the worst horizontal variance (neither inflating nor shrinking that error), angles we
  do not measure get π².
- ``px4-odometry``: ODOMETRY in LOCAL_NED for EKF2, position and velocity; NaN wherever we know
  nothing (PX4 then skips that part or uses its own noise parameter).

:class:`TrackPredictor` turns the track filter into the ``predict(t_unix)`` the stream calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geolink_edge.registry import check_name
from geolink_edge.runtime.filter import TrackFilter
from geolink_edge.runtime.mount import BodyAttitude, euler_to_matrix, matrix_to_quaternion

TARGETS = ("ardupilot-gps", "ardupilot-odometry", "px4-odometry")


def check_target(target: str) -> str:
    """The target's name, or a one-line error listing the ones there are."""
    check_name("--mavlink-target", target, TARGETS)
    return target


GPS_EPOCH_UNIX = 315964800  # 1980-01-06T00:00:00Z
GPS_LEAP_SECONDS = 18  # GPS − UTC since 2017
NOMINAL_DOP = 1.0  # vision fixes have no satellite geometry; their accuracy goes in the accuracy fields
NOMINAL_SATELLITES = 10  # ArduPilot's GPS checks want a satellite count; the fix is as good as its accuracy
# GPS_INPUT ignore flags (MAVLink GPS_INPUT_IGNORE_FLAGS)
IGNORE_ALT, IGNORE_HDOP, IGNORE_VDOP, IGNORE_VEL_HORIZ, IGNORE_VEL_VERT = 1, 2, 4, 8, 16
IGNORE_SPEED_ACC, IGNORE_H_ACC, IGNORE_V_ACC = 32, 64, 128
FIX_NONE, FIX_2D, FIX_3D = 1, 2, 3
FRAME_LOCAL_NED, FRAME_BODY_FRD, FRAME_LOCAL_FRD = 1, 12, 20
ESTIMATOR_VISION = 2
UNMEASURED_VZ_VAR = 100.0  # (m/s)²: vertical speed is not measured; said so by a variance, not a zero
MAX_GPS_DELAY_S = 0.25  # ArduPilot's GPSn_DELAY_MS and VISO_DELAY_MS stop at 250 ms
NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """The track at one time: what may be told to the autopilot."""

    t_unix: float  # the time the position refers to
    lat: float
    lon: float
    east: float  # metres in the index's ENU frame
    north: float
    v_east: float
    v_north: float
    cov_en: np.ndarray  # 2×2 position covariance (east, north), m²
    cov_v_en: np.ndarray  # 2×2 velocity covariance, (m/s)²
    age_s: float = 0.0  # time since the last accepted fix
    velocity_converged: bool = False
    heading: float | None = None  # degrees clockwise from north, as measured by the vision
    alt: float | None = None  # metres above the ground (PnP), None when not estimated
    alt_sigma: float = 5.0
    quality: int = 100  # 0..100
    reset_counter: int = 0

    def finite(self) -> bool:
        values = [self.t_unix, self.lat, self.lon, self.east, self.north, self.v_east, self.v_north]
        values += [*np.ravel(self.cov_en), *np.ravel(self.cov_v_en), self.age_s, self.alt_sigma]
        values += [v for v in (self.heading, self.alt) if v is not None]
        return bool(np.all(np.isfinite(values)))


@dataclass(frozen=True)
class FlightState:
    """What the autopilot reported, for the parts of a message the track does not know."""

    body: BodyAttitude | None = None
    alt_msl: float | None = None  # home altitude + height above home
    height: float | None = None  # above the ground


def gps_time(t_unix: float) -> tuple[int, int]:
    """(GPS week, milliseconds of the week) of a unix time."""
    seconds = t_unix - GPS_EPOCH_UNIX + GPS_LEAP_SECONDS
    week = int(seconds // 604800)
    return week, int(round((seconds - week * 604800) * 1000.0))


def sigma(cov: np.ndarray) -> float:
    """1-sigma of the worst direction of a covariance."""
    return float(math.sqrt(max(float(np.max(np.linalg.eigvalsh(np.asarray(cov, float)))), 0.0)))


def upper_triangle(matrix: np.ndarray) -> list[float]:
    rows, cols = np.triu_indices(matrix.shape[0])
    return [float(v) for v in matrix[rows, cols]]


def gps_input(e: Estimate, state: FlightState, gps_id: int) -> dict:
    """GPS_INPUT fields of an estimate (pymavlink ``gps_input_send`` keywords)."""
    ignore = IGNORE_VEL_VERT | IGNORE_V_ACC  # we measure neither vertical speed nor a height accuracy
    if not e.velocity_converged:
        ignore |= IGNORE_VEL_HORIZ | IGNORE_SPEED_ACC
    if state.alt_msl is None:
        ignore |= IGNORE_ALT
    week, week_ms = gps_time(e.t_unix)
    velocity = e.velocity_converged
    return dict(
        time_usec=int(e.t_unix * 1e6),
        gps_id=gps_id,
        ignore_flags=ignore,
        time_week_ms=week_ms,
        time_week=week,
        fix_type=FIX_3D if state.alt_msl is not None else FIX_2D,
        lat=int(round(e.lat * 1e7)),
        lon=int(round(e.lon * 1e7)),
        alt=float(state.alt_msl or 0.0),
        hdop=NOMINAL_DOP,
        vdop=NOMINAL_DOP,
        vn=float(e.v_north) if velocity else 0.0,
        ve=float(e.v_east) if velocity else 0.0,
        vd=0.0,
        speed_accuracy=sigma(e.cov_v_en) if velocity else 0.0,
        horiz_accuracy=sigma(e.cov_en),
        vert_accuracy=0.0,
        satellites_visible=NOMINAL_SATELLITES,
        yaw=0,  # our heading mostly echoes the autopilot's own: never offer it back as a GPS yaw
    )


def no_fix_gps_input(t_unix: float, gps_id: int) -> dict:
    """GPS_INPUT saying "no fix": keeps the message rate (ArduPilot's GPS health) with nothing to use."""
    week, week_ms = gps_time(t_unix)
    unused = ("alt", "hdop", "vdop", "vn", "ve", "vd", "speed_accuracy", "horiz_accuracy", "vert_accuracy")
    return dict.fromkeys(unused, 0.0) | dict(
        time_usec=int(t_unix * 1e6),
        gps_id=gps_id,
        ignore_flags=255,
        time_week_ms=week_ms,
        time_week=week,
        fix_type=FIX_NONE,
        lat=0,
        lon=0,
        satellites_visible=0,
        yaw=0,
    )


def odometry(e: Estimate, state: FlightState, target: str) -> dict:
    """ODOMETRY fields for ``ardupilot-odometry`` or ``px4-odometry`` (``odometry_send`` keywords)."""
    px4 = target == "px4-odometry"
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # (east, north) → (north, east)
    cov_ne = swap @ np.asarray(e.cov_en, float) @ swap.T
    worst = float(np.max(np.linalg.eigvalsh(cov_ne)))
    # height: ours when PnP measured it; otherwise unknown (PX4) or the autopilot's own (ArduPilot)
    if e.alt is not None:
        z, var_z = -e.alt, e.alt_sigma**2
    elif px4:
        z, var_z = NAN, NAN
    else:
        z, var_z = -(state.height or 0.0), worst
    # attitude: echoed from the autopilot (we measure at most the heading), so its variance is π²
    if state.body is not None:
        body_to_ned = euler_to_matrix(state.body.yaw, state.body.pitch, state.body.roll)
    elif e.heading is not None:
        body_to_ned = euler_to_matrix(math.radians(e.heading), 0.0, 0.0)
    else:
        body_to_ned = np.eye(3)
    known_attitude = state.body is not None or e.heading is not None
    q = matrix_to_quaternion(body_to_ned) if known_attitude or not px4 else [NAN, NAN, NAN, NAN]
    angle_var = NAN if px4 else math.pi**2
    pose = np.diag([0.0, 0.0, var_z, angle_var, angle_var, angle_var])
    pose[:2, :2] = cov_ne
    velocity_ned = np.array([e.v_north, e.v_east, 0.0])
    cov_v = np.zeros((3, 3))
    cov_v[:2, :2] = swap @ np.asarray(e.cov_v_en, float) @ swap.T
    cov_v[2, 2] = UNMEASURED_VZ_VAR if px4 else float(np.max(np.linalg.eigvalsh(cov_v[:2, :2])))
    if px4:
        frame, child = FRAME_LOCAL_NED, FRAME_LOCAL_NED
        velocity = velocity_ned if e.velocity_converged else np.full(3, NAN)
    else:  # ArduPilot wants the velocity in the body frame of the quaternion it is sent with
        frame, child = FRAME_LOCAL_FRD, FRAME_BODY_FRD
        velocity = body_to_ned.T @ velocity_ned
        cov_v = body_to_ned.T @ cov_v @ body_to_ned
    vel_cov = np.full((6, 6), NAN if px4 else 0.0)
    if not px4 or e.velocity_converged:
        vel_cov[:3, :3] = cov_v
    return dict(
        time_usec=int(e.t_unix * 1e6),
        frame_id=frame,
        child_frame_id=child,
        x=float(e.north),
        y=float(e.east),
        z=float(z),
        q=q,
        vx=float(velocity[0]),
        vy=float(velocity[1]),
        vz=float(velocity[2]),
        rollspeed=NAN,
        pitchspeed=NAN,
        yawspeed=NAN,
        pose_covariance=upper_triangle(pose),
        velocity_covariance=upper_triangle(vel_cov),
        reset_counter=e.reset_counter % 256,
        estimator_type=ESTIMATOR_VISION,
        quality=int(np.clip(e.quality, 0, 100)),
    )


def delay_parameters(target: str, gps_id: int, delay_s: float, link_ms: float = 5.0) -> dict[str, int]:
    """The autopilot's delay parameter for our output, to be written in the flight log.

    GPS_INPUT is stamped by ArduPilot when it arrives, so ``GPSn_DELAY_MS`` is the age of the
    position when sent (``delay_s``) plus the link. ODOMETRY carries the position's own time
    (ArduPilot corrects it for jitter, PX4 through TIMESYNC), so only the link remains.
    """
    if target == "ardupilot-gps":
        return {f"GPS{gps_id + 1}_DELAY_MS": int(round(min(delay_s * 1e3 + link_ms, 250.0)))}
    name = "VISO_DELAY_MS" if target == "ardupilot-odometry" else "EKF2_EV_DELAY"
    return {name: int(round(link_ms))}


def delay_advice(target: str, gps_id: int, delay_s: float, latency_ms: dict) -> dict:
    """For the flight log: the delay parameter matching this run, the measured age of a fix when it
    reached the filter (capture wait + processing, medians), and the settings that age suggests."""
    age_ms = sum((latency_ms.get(stage) or {}).get("median") or 0.0 for stage in ("age", "total"))
    suggested_s = round(min(age_ms / 1e3, MAX_GPS_DELAY_S), 3)
    return {
        "parameters": delay_parameters(target, gps_id, delay_s),
        "fix_age_ms": age_ms,
        "suggested": {"--mavlink-delay": suggested_s, **delay_parameters(target, gps_id, suggested_s)},
    }


class TrackPredictor:
    """``predict(t_unix) -> Estimate | None`` over a :class:`TrackFilter` fed on the frames' clock.

    A replayed recording runs on its own clock; :meth:`observe` (called for every frame) ties it
    to unix time and keeps the latest vision-only facts (heading, height, match quality).
    """

    def __init__(self, track: TrackFilter, to_geodetic: Callable[[float, float], tuple[float, float]]):
        self.track = track
        self.to_geodetic = to_geodetic
        self.clock_offset = 0.0  # frames' clock − unix time
        self.heading: float | None = None
        self.alt: float | None = None
        self.quality = 0

    def observe(
        self, t_sensor: float, t_unix: float, heading: float | None = None, alt=None, quality: int = 0
    ) -> None:
        self.clock_offset = t_sensor - t_unix
        if quality:
            self.heading, self.alt, self.quality = heading, alt, int(quality)

    def __call__(self, t_unix: float) -> Estimate | None:
        state = self.track.state(t_unix + self.clock_offset)
        if state is None:
            return None
        lat, lon = self.to_geodetic(float(state.position[0]), float(state.position[1]))
        return Estimate(
            t_unix=t_unix,
            lat=float(lat),
            lon=float(lon),
            east=float(state.position[0]),
            north=float(state.position[1]),
            v_east=float(state.velocity[0]),
            v_north=float(state.velocity[1]),
            cov_en=state.covariance[:2, :2],
            cov_v_en=state.covariance[2:, 2:],
            age_s=state.age_s,
            velocity_converged=state.converged,
            heading=self.heading,
            alt=self.alt,
            quality=min(100, self.quality),
            reset_counter=state.resets,
        )
