"""What each autopilot target is told, and what it needs from the autopilot: one :class:`Output`
per target (the link is :mod:`mavlink`; docs/autopilot.md lists the parameters a user sets).

- ``ardupilot-gps`` (:class:`ArduPilotGps`): GPS_INPUT for ``GPSn_TYPE = 14``. Velocity is withheld
  (ignore flags) until the track's velocity has converged, since ArduPilot rejects a GPS whose
  speed accuracy exceeds 1 m/s; without an altitude above sea level the fix is 2D (``fix_type``
  2), which EKF3 never uses: the link says so rather than send it silently. The horizontal
  accuracy is the prediction's, so it grows between fixes.
- ``ardupilot-odometry`` (:class:`ArduPilotOdometry`): for ``VISO_TYPE = 1``. ArduPilot fuses
  external-navigation velocity at ``VISO_VEL_M_NSE`` whatever its covariance says, so until the
  track's velocity has converged the position goes out alone (VISION_POSITION_ESTIMATE), then as
  ODOMETRY (LOCAL_FRD/BODY_FRD; our LOCAL_FRD is north-aligned) with a quality from the accuracy.
  ArduPilot folds the three position variances into one error and turns any NaN into a NaN error,
  so nothing unknown is NaN here: the height (which it takes from its barometer) gets the worst
  horizontal variance, neither inflating nor shrinking that error; angles we do not measure get π².
  Without a position, ODOMETRY with quality −1 ("failed") keeps ArduPilot's sensor healthy, which
  arming needs, while its EKF is fed nothing.
- ``px4-odometry`` (:class:`Px4Odometry`): ODOMETRY in LOCAL_NED for EKF2. PX4 drops a position
  whose x, y or z is not finite, so z is always a number: the height we measured, else the
  autopilot's own with a large variance; NaN wherever else we know nothing (PX4 then skips that
  part or uses its own noise parameter).

:class:`TrackPredictor` turns the track filter into the ``predict(t_unix)`` the stream calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geolink_edge.registry import check_name
from geolink_edge.runtime.filter import TrackFilter
from geolink_edge.runtime.mount import BodyAttitude, euler_to_matrix, matrix_to_euler, matrix_to_quaternion

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
ECHOED_HEIGHT_VAR = 100.0  # m²: a height that is the autopilot's own, sent only because PX4 needs a z
UNKNOWN_HEIGHT_VAR = 1e4  # m²: no height at all (z 0): as good as none, yet finite
MAX_GPS_DELAY_S = 0.25  # ArduPilot's GPSn_DELAY_MS and VISO_DELAY_MS stop at 250 ms
LINK_MS = 5.0  # a serial or UDP link's own delay, ms
GPS_SOURCE, EXTNAV_SOURCE, BARO_SOURCE = 3, 6, 1  # EK3_SRCn_* values
MAV_GPS_TYPE = 14  # GPSn_TYPE: MAVLink
NAN = float("nan")
# ODOMETRY quality: −1 failed, 0 unknown, 1 worst .. 100 best. ArduPilot feeds its EKF only what
# reaches VISO_QUAL_MIN (default 0), yet counts every message towards the sensor's health.
QUALITY_FAILED = -1
QUALITY_SCALE_M = 10.0  # quality 100 × (1 − accuracy / this), at least 1: twice EKF3's 5 m GPS limit


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


def accuracy_quality(sigma_m: float) -> int:
    """ODOMETRY quality of a position known to ``sigma_m`` (1σ): 100 at 0 m, 70 at 3 m, 1 from
    9.9 m on — never 0 ("unknown") or −1 ("failed") for a position we have."""
    return int(np.clip(round(100.0 * (1.0 - sigma_m / QUALITY_SCALE_M)), 1, 100))


def upper_triangle(matrix: np.ndarray) -> list[float]:
    rows, cols = np.triu_indices(matrix.shape[0])
    return [float(v) for v in matrix[rows, cols]]


def _swap_ne(cov_en: np.ndarray) -> np.ndarray:
    """A 2×2 covariance over (east, north) as one over (north, east)."""
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    return swap @ np.asarray(cov_en, float) @ swap.T


def _body_to_ned(e: Estimate, state: FlightState) -> np.ndarray | None:
    """The attitude to send with a pose: the autopilot's (we measure at most the heading), else ours."""
    if state.body is not None:
        return euler_to_matrix(state.body.yaw, state.body.pitch, state.body.roll)
    if e.heading is not None:
        return euler_to_matrix(math.radians(e.heading), 0.0, 0.0)
    return None


def _differs(values: dict[str, float], name: str, wanted: float, why: str) -> list[str]:
    """``["NAME value: why (wanted)"]`` when the autopilot's ``name`` is read and is not ``wanted``."""
    value = values.get(name)
    if value is None or round(value) == wanted:
        return []
    return [f"{name} {value:g}: {why} (set {wanted:g})"]


SOURCE_SETS = (1, 2, 3)  # EKF3's source sets, switched by MAV_CMD_SET_EKF_SOURCE_SET or an RC switch
SOURCE_PARAMETERS = tuple(f"EK3_SRC{n}_{axis}" for n in SOURCE_SETS for axis in ("POSXY", "VELXY", "POSZ"))


def _source_problems(values: dict[str, float], source: int, what: str, velocity_why: str) -> list[str]:
    """EKF3's source sets as they concern us: one must take its horizontal position from ``source``
    (``what``); none of those its height (ours is the autopilot's own, echoed); and at least one of
    them no velocity from it (``velocity_why`` says why)."""
    if "EK3_SRC1_POSXY" not in values:
        return []
    ours = [n for n in SOURCE_SETS if values.get(f"EK3_SRC{n}_POSXY") == source]
    if not ours:
        return [f"EK3_SRC1_POSXY {values['EK3_SRC1_POSXY']:g}: no source set takes {what} (set {source})"]
    out = [
        f"EK3_SRC{n}_POSZ {source}: our height is the autopilot's own (set {BARO_SOURCE})"
        for n in ours
        if values.get(f"EK3_SRC{n}_POSZ") == source
    ]
    if all(values.get(f"EK3_SRC{n}_VELXY") == source for n in ours):
        out.append(f"EK3_SRC{ours[-1]}_VELXY {source}: {velocity_why} (set 0)")
    return out


def _delay_advice(values: dict[str, float], wanted: dict[str, int]) -> list[str]:
    """The delay parameters read that are more than 20 ms off this run's."""
    return [
        f"{name} {values[name]:g}: positions reach it {ms} ms old (set {ms})"
        for name, ms in wanted.items()
        if name in values and abs(values[name] - ms) > 20
    ]


class Output:
    """One target: its messages, its frame rules, its delay parameter, and the autopilot parameters
    that decide whether the autopilot uses what it is sent (read at start by the link)."""

    name = ""
    needs_altitude = False  # a fix without an altitude above sea level is of no use to it
    offers_origin = False  # the autopilot may have no GPS to set its origin: offer the map's
    is_gps1 = False  # the autopilot's GPS 1 (GPS_RAW_INT) is what we send

    def message(self, e: Estimate, state: FlightState) -> tuple[str, dict]:
        """(MAVLink message name, pymavlink ``*_send`` keywords) of an estimate."""
        raise NotImplementedError

    def no_fix(self, t_unix: float) -> tuple[str, dict] | None:
        """What keeps the autopilot's sensor alive while we have no position, if anything."""
        return None

    def delay_parameters(self, delay_s: float, link_ms: float = LINK_MS) -> dict[str, int]:
        """The autopilot's delay parameter for positions sent ``delay_s`` old over the link."""
        raise NotImplementedError

    def parameters(self) -> tuple[str, ...]:
        """The autopilot parameters :meth:`problems` judges."""
        raise NotImplementedError

    def problems(self, values: dict[str, float], delay_s: float) -> list[str]:
        """What in the autopilot's parameters (those read) keeps it from using us well, one line each."""
        raise NotImplementedError


class ArduPilotGps(Output):
    """GPS_INPUT into ArduPilot's GPS ``gps_id + 1`` (``GPSn_TYPE = 14``)."""

    name = "ardupilot-gps"
    needs_altitude = True

    def __init__(self, gps_id: int = 0):
        self.gps_id = gps_id
        self.is_gps1 = gps_id == 0
        self.gps = f"GPS{gps_id + 1}"

    def message(self, e: Estimate, state: FlightState) -> tuple[str, dict]:
        ignore = IGNORE_VEL_VERT | IGNORE_V_ACC  # we measure neither vertical speed nor a height accuracy
        if not e.velocity_converged:
            ignore |= IGNORE_VEL_HORIZ | IGNORE_SPEED_ACC
        if state.alt_msl is None:
            ignore |= IGNORE_ALT
        week, week_ms = gps_time(e.t_unix)
        velocity = e.velocity_converged
        return "GPS_INPUT", dict(
            time_usec=int(e.t_unix * 1e6),
            gps_id=self.gps_id,
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

    def no_fix(self, t_unix: float) -> tuple[str, dict]:
        """GPS_INPUT saying "no fix": keeps the message rate (ArduPilot's GPS health), nothing to use."""
        week, week_ms = gps_time(t_unix)
        unused = (
            "alt",
            "hdop",
            "vdop",
            "vn",
            "ve",
            "vd",
            "speed_accuracy",
            "horiz_accuracy",
            "vert_accuracy",
        )
        return "GPS_INPUT", dict.fromkeys(unused, 0.0) | dict(
            time_usec=int(t_unix * 1e6),
            gps_id=self.gps_id,
            ignore_flags=255,
            time_week_ms=week_ms,
            time_week=week,
            fix_type=FIX_NONE,
            lat=0,
            lon=0,
            satellites_visible=0,
            yaw=0,
        )

    def delay_parameters(self, delay_s: float, link_ms: float = LINK_MS) -> dict[str, int]:
        """ArduPilot times GPS_INPUT by its arrival (its jitter correction absorbs a steady lag), so
        ``GPSn_DELAY_MS`` is the age of the position when sent plus the link."""
        return {f"{self.gps}_DELAY_MS": int(round(min(delay_s * 1e3 + link_ms, MAX_GPS_DELAY_S * 1e3)))}

    def parameters(self) -> tuple[str, ...]:
        names = (f"{self.gps}_TYPE", *SOURCE_PARAMETERS, "EK3_CHECK_SCALE", f"{self.gps}_DELAY_MS")
        return names + (("GPS_AUTO_SWITCH",) if self.gps_id else ())

    def problems(self, values: dict[str, float], delay_s: float) -> list[str]:
        """Besides the GPS type and the checks' scale: our velocity is withheld until it converges
        (rarely, at the vehicle's 2 m/s²), and ArduPilot's MAVLink GPS then keeps the last one, so
        a source set must take the GPS position without its velocity."""
        out = _differs(values, f"{self.gps}_TYPE", MAV_GPS_TYPE, "not a MAVLink GPS")
        out += _source_problems(values, GPS_SOURCE, "the GPS", "it reuses a velocity we withhold")
        scale = values.get("EK3_CHECK_SCALE")
        if scale is not None and not 50 <= scale <= 200:
            out.append(f"EK3_CHECK_SCALE {scale:g}: outside its documented 50-200 (set 100)")
        if self.gps_id and values.get("GPS_AUTO_SWITCH") == 0:
            out.append(f"GPS_AUTO_SWITCH 0: never switches to {self.gps} (set 1)")
        return out + _delay_advice(values, self.delay_parameters(delay_s))


class ArduPilotOdometry(Output):
    """External navigation for ArduPilot's ``VISO_TYPE = 1``."""

    name = "ardupilot-odometry"
    offers_origin = True

    def __init__(self):
        self.reset_counter = 0  # the last one sent: "no position" must not look like a reset

    def message(self, e: Estimate, state: FlightState) -> tuple[str, dict]:
        self.reset_counter = e.reset_counter % 256
        cov_ne = _swap_ne(e.cov_en)
        worst = float(np.max(np.linalg.eigvalsh(cov_ne)))
        # height: ours when PnP measured it, else the autopilot's own; its variance the worst horizontal
        # one, since ArduPilot folds all three into one position error and takes its height elsewhere
        z, var_z = -(e.alt if e.alt is not None else (state.height or 0.0)), worst
        body_to_ned = _body_to_ned(e, state)
        body_to_ned = np.eye(3) if body_to_ned is None else body_to_ned
        pose = np.diag([0.0, 0.0, var_z, math.pi**2, math.pi**2, math.pi**2])  # angles: echoed, not measured
        pose[:2, :2] = cov_ne
        if not e.velocity_converged:  # the position alone: ArduPilot would weigh any velocity at 0.1 m/s
            yaw, pitch, roll = matrix_to_euler(body_to_ned)
            return "VISION_POSITION_ESTIMATE", dict(
                usec=int(e.t_unix * 1e6),
                x=float(e.north),
                y=float(e.east),
                z=float(z),
                roll=roll,
                pitch=pitch,
                yaw=yaw,
                covariance=upper_triangle(pose),
                reset_counter=self.reset_counter,
            )
        # the velocity in the body frame of the quaternion it is sent with
        velocity = body_to_ned.T @ np.array([e.v_north, e.v_east, 0.0])
        cov_v = np.zeros((3, 3))
        cov_v[:2, :2] = _swap_ne(e.cov_v_en)
        cov_v[2, 2] = float(np.max(np.linalg.eigvalsh(cov_v[:2, :2])))
        vel_cov = np.zeros((6, 6))
        vel_cov[:3, :3] = body_to_ned.T @ cov_v @ body_to_ned
        q = matrix_to_quaternion(body_to_ned)
        return "ODOMETRY", _odometry(
            e.t_unix, (e.north, e.east, z), FRAME_LOCAL_FRD, FRAME_BODY_FRD, q, velocity, pose, vel_cov,
            self.reset_counter, accuracy_quality(sigma(e.cov_en)),
        )  # fmt: skip

    def no_fix(self, t_unix: float) -> tuple[str, dict]:
        """ODOMETRY with quality −1, "failed": ArduPilot counts its external navigation healthy while
        a message came in the last 300 ms (arming needs that), and feeds its EKF none below
        ``VISO_QUAL_MIN``. VISION_POSITION_ESTIMATE could not say it: ArduPilot takes that as
        quality 0, "unknown", and uses it. Position, velocity and covariances are 0 (ArduPilot turns
        a NaN into a NaN error), the attitude the identity: none of it is used."""
        zero = np.zeros((6, 6))
        return "ODOMETRY", _odometry(
            t_unix, (0.0, 0.0, 0.0), FRAME_LOCAL_FRD, FRAME_BODY_FRD, [1.0, 0.0, 0.0, 0.0], np.zeros(3),
            zero, zero, self.reset_counter, QUALITY_FAILED,
        )  # fmt: skip

    def delay_parameters(self, delay_s: float, link_ms: float = LINK_MS) -> dict[str, int]:
        """ArduPilot's jitter correction takes a steady lag for the link's, so ``VISO_DELAY_MS`` is
        the age of the position when sent plus the link."""
        return {"VISO_DELAY_MS": int(round(min(delay_s * 1e3 + link_ms, MAX_GPS_DELAY_S * 1e3)))}

    def parameters(self) -> tuple[str, ...]:
        return ("VISO_TYPE", "VISO_QUAL_MIN", *SOURCE_PARAMETERS, "VISO_DELAY_MS")

    def problems(self, values: dict[str, float], delay_s: float) -> list[str]:
        """Besides VISO_TYPE: ``VISO_QUAL_MIN`` must be its default 0 (−1 would feed our "no position"
        to the EKF, above 0 drops the positions of VISION_POSITION_ESTIMATE, which ArduPilot grades 0);
        ArduPilot weighs external-navigation velocity at VISO_VEL_M_NSE (0.1 m/s) whatever we say of
        it, so a source set must take our position without it."""
        out = _differs(values, "VISO_TYPE", 1, "takes no MAVLink external navigation")
        out += _differs(values, "VISO_QUAL_MIN", 0, "-1 feeds it our 'no position', >0 drops fixes")
        out += _source_problems(values, EXTNAV_SOURCE, "external nav", "our velocity weighed at 0.1 m/s")
        return out + _delay_advice(values, self.delay_parameters(delay_s))


EV_CTRL_HPOS, EV_CTRL_VPOS, EV_CTRL_VEL, EV_CTRL_YAW = 1, 2, 4, 8  # PX4 EKF2_EV_CTRL bits


class Px4Odometry(Output):
    """ODOMETRY in LOCAL_NED for PX4's EKF2 (external vision)."""

    name = "px4-odometry"
    offers_origin = True

    def message(self, e: Estimate, state: FlightState) -> tuple[str, dict]:
        if e.alt is not None:
            z, var_z = -e.alt, e.alt_sigma**2
        elif state.height is not None:  # PX4 drops a position without a finite z: the autopilot's own
            z, var_z = -state.height, ECHOED_HEIGHT_VAR
        else:
            z, var_z = 0.0, UNKNOWN_HEIGHT_VAR
        body_to_ned = _body_to_ned(e, state)
        q = [NAN] * 4 if body_to_ned is None else matrix_to_quaternion(body_to_ned)
        pose = np.diag([0.0, 0.0, var_z, NAN, NAN, NAN])
        pose[:2, :2] = _swap_ne(e.cov_en)
        velocity = np.full(3, NAN)
        vel_cov = np.full((6, 6), NAN)
        if e.velocity_converged:
            velocity = np.array([e.v_north, e.v_east, 0.0])
            vel_cov[:3, :3] = 0.0
            vel_cov[:2, :2] = _swap_ne(e.cov_v_en)
            vel_cov[2, 2] = UNMEASURED_VZ_VAR
        return "ODOMETRY", _odometry(
            e.t_unix, (e.north, e.east, z), FRAME_LOCAL_NED, FRAME_LOCAL_NED, q, velocity, pose, vel_cov,
            e.reset_counter % 256, int(np.clip(e.quality, 0, 100)),
        )  # fmt: skip

    def delay_parameters(self, delay_s: float, link_ms: float = LINK_MS) -> dict[str, int]:
        """PX4 places ODOMETRY at its own timestamp (TIMESYNC): only the link remains."""
        return {"EKF2_EV_DELAY": int(round(link_ms))}

    def parameters(self) -> tuple[str, ...]:
        return ("EKF2_EV_CTRL", "EKF2_EV_DELAY")

    def problems(self, values: dict[str, float], delay_s: float) -> list[str]:
        ctrl = values.get("EKF2_EV_CTRL")
        if ctrl is None:
            return []
        ctrl, out = int(ctrl), []
        if not ctrl & EV_CTRL_HPOS:
            out.append(f"EKF2_EV_CTRL {ctrl}: no vision position (set bit 0)")
        if ctrl & (EV_CTRL_VPOS | EV_CTRL_YAW):
            out.append(f"EKF2_EV_CTRL {ctrl}: our height/yaw echo PX4's (clear bits 1, 3)")
        return out


def _odometry(t_unix, position, frame, child, q, velocity, pose, vel_cov, reset_counter, quality) -> dict:
    """ODOMETRY keywords (``odometry_send``): ``position`` (x, y, z) in ``frame``, the velocity in
    ``child``, 6×6 covariances."""
    x, y, z = position
    return dict(
        time_usec=int(t_unix * 1e6),
        frame_id=frame,
        child_frame_id=child,
        x=float(x),
        y=float(y),
        z=float(z),
        q=[float(v) for v in q],
        vx=float(velocity[0]),
        vy=float(velocity[1]),
        vz=float(velocity[2]),
        rollspeed=NAN,
        pitchspeed=NAN,
        yawspeed=NAN,
        pose_covariance=upper_triangle(pose),
        velocity_covariance=upper_triangle(vel_cov),
        reset_counter=reset_counter,
        estimator_type=ESTIMATOR_VISION,
        quality=quality,
    )


# each target's output from the GPS_INPUT gps_id (which only GPS_INPUT uses)
OUTPUTS: dict[str, Callable[[int], Output]] = {
    "ardupilot-gps": ArduPilotGps,
    "ardupilot-odometry": lambda _gps_id: ArduPilotOdometry(),
    "px4-odometry": lambda _gps_id: Px4Odometry(),
}
TARGETS = tuple(OUTPUTS)


def check_target(target: str) -> str:
    """The target's name, or a one-line error listing the ones there are."""
    check_name("--mavlink-target", target, TARGETS)
    return target


def make_output(target: str, gps_id: int = 0) -> Output:
    """The output for ``--mavlink-target`` (a one-line error for an unknown one)."""
    return OUTPUTS[check_target(target)](gps_id)


def delay_advice(output: Output, delay_s: float, latency_ms: dict) -> dict:
    """For the flight log: the delay parameter matching this run, the measured age of a fix when it
    reached the filter (capture wait + processing, medians), and the settings that age suggests."""
    age_ms = sum((latency_ms.get(stage) or {}).get("median") or 0.0 for stage in ("age", "total"))
    suggested_s = round(min(age_ms / 1e3, MAX_GPS_DELAY_S), 3)
    return {
        "parameters": output.delay_parameters(delay_s),
        "fix_age_ms": age_ms,
        "suggested": {"--mavlink-delay": suggested_s, **output.delay_parameters(suggested_s)},
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
