"""MAVLink output to an autopilot: heartbeat, GPS_INPUT or ODOMETRY, and attitude/altitude priors.

``--mavlink udpout:HOST:PORT | udpin:HOST:PORT | tcp:HOST:PORT | /dev/ttyTHS1:921600``.
pymavlink is imported lazily (it is an extra) and MAVLink 2 is forced before the import: a
send-only link would otherwise stay on MAVLink 1, which has no ODOMETRY.

Only accepted, finite estimates are sent: :meth:`MavlinkSink.send` refuses anything else.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from geolink_edge.errors import GeolinkError, require
from geolink_edge.runtime.sources import Telemetry

GPS_EPOCH_UNIX = 315964800  # 1980-01-06T00:00:00Z
GPS_LEAP_SECONDS = 18  # GPS − UTC since 2017
NOMINAL_DOP = 1.0  # vision fixes have no satellite geometry; their accuracy goes in the accuracy fields
NOMINAL_SATELLITES = 10  # ArduPilot's GPS checks want a satellite count; the fix is as good as its accuracy
MESSAGES = ("gps_input", "odometry")
TELEMETRY_MAX_AGE_S = 1.0


@dataclass(frozen=True)
class Estimate:
    """A filtered position that passed the gate: what may be told to the autopilot."""

    t_unix: float
    lat: float
    lon: float
    east: float  # metres in the index's ENU frame
    north: float
    v_east: float
    v_north: float
    cov_en: np.ndarray  # 2×2 position covariance (east, north), m²
    cov_v_en: np.ndarray  # 2×2 velocity covariance, (m/s)²
    heading: float | None = None  # degrees clockwise from north
    alt: float | None = None  # metres above the ground (PnP), None when not estimated
    alt_msl: float | None = None  # metres above mean sea level, when the ground's elevation is known
    alt_sigma: float = 5.0
    quality: int = 100  # 0..100
    reset_counter: int = 0

    def finite(self) -> bool:
        values = [
            self.t_unix,
            self.lat,
            self.lon,
            self.east,
            self.north,
            self.v_east,
            self.v_north,
            *np.ravel(self.cov_en),
            *np.ravel(self.cov_v_en),
            self.alt_sigma,
        ]
        values += [v for v in (self.heading, self.alt, self.alt_msl) if v is not None]
        return bool(np.all(np.isfinite(values)))


def gps_time(t_unix: float) -> tuple[int, int]:
    """(GPS week, milliseconds of the week) of a unix time."""
    seconds = t_unix - GPS_EPOCH_UNIX + GPS_LEAP_SECONDS
    week = int(seconds // 604800)
    return week, int(round((seconds - week * 604800) * 1000.0))


def _sigma(cov: np.ndarray) -> float:
    """1-sigma of the worst direction of a 2×2 covariance."""
    return float(math.sqrt(max(float(np.max(np.linalg.eigvalsh(np.asarray(cov, float)))), 0.0)))


def _upper_triangle(matrix: np.ndarray) -> list[float]:
    rows, cols = np.triu_indices(matrix.shape[0])
    return [float(v) for v in matrix[rows, cols]]


def _quaternion(roll: float, pitch: float, yaw: float) -> list[float]:
    """(w, x, y, z) of a ZYX Euler rotation, radians."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return [
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    ]


def parse_url(url: str) -> tuple[str, int | None]:
    """pymavlink device string and baud rate; ``/dev/ttyX:BAUD`` carries the baud after a colon."""
    if url.startswith(("udpout:", "udpin:", "udp:", "tcp:", "tcpin:")):
        parts = url.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise GeolinkError(
                f"--mavlink {url}: expected udpout:HOST:PORT, udpin:HOST:PORT or tcp:HOST:PORT"
            )
        return url, None
    if url.startswith("/dev/") or url.upper().startswith("COM"):
        device, _, baud = url.partition(":")
        if baud and not baud.isdigit():
            raise GeolinkError(f"--mavlink {url}: baud rate {baud!r} is not a number")
        return device, int(baud) if baud else 57600
    raise GeolinkError(f"--mavlink {url}: expected udpout:HOST:PORT, udpin:HOST:PORT or /dev/ttyX:BAUD")


def load_mavutil():
    os.environ["MAVLINK20"] = "1"
    return require("pymavlink.mavutil", "pip install 'geolink-edge[mavlink]'")


class MavlinkSink:
    """Heartbeats at ``heartbeat_hz``, sends estimates, and listens for attitude and altitude."""

    def __init__(
        self,
        url: str,
        message: str = "gps_input",
        system_id: int = 1,
        component_id: int | None = None,
        heartbeat_hz: float = 1.0,
    ):
        if message not in MESSAGES:
            raise GeolinkError(f"--mavlink-msg {message!r}: choose {' or '.join(MESSAGES)}")
        device, baud = parse_url(url)
        self.mavutil = load_mavutil()
        self.mav_enums = self.mavutil.mavlink
        component = component_id if component_id is not None else self.mav_enums.MAV_COMP_ID_ONBOARD_COMPUTER
        kwargs = {"source_system": system_id, "source_component": component, "autoreconnect": True}
        if baud:
            kwargs["baud"] = baud
        try:
            self.link = self.mavutil.mavlink_connection(device, **kwargs)
        except Exception as exc:  # pymavlink raises OSError, SerialException, ... for a bad device
            raise GeolinkError(f"--mavlink {url}: cannot open ({str(exc).splitlines()[0][:120]})") from None
        self.message = message
        self.sent = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._attitude: tuple[float, float, float, float] | None = None  # (t, roll, pitch, yaw) radians
        self._altitude: tuple[float, float] | None = None  # (t, metres above home)
        self._threads = [
            threading.Thread(
                target=self._heartbeat_loop, args=(1.0 / heartbeat_hz,), name="mav-heartbeat", daemon=True
            ),
            threading.Thread(target=self._receive_loop, name="mav-receive", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- threads -------------------------------------------------------------------------
    def _heartbeat_loop(self, period: float) -> None:
        m = self.mav_enums
        while not self._stop.is_set():
            with self._lock:
                try:
                    self.link.mav.heartbeat_send(
                        m.MAV_TYPE_ONBOARD_CONTROLLER, m.MAV_AUTOPILOT_INVALID, 0, 0, m.MAV_STATE_ACTIVE
                    )
                except OSError:
                    pass  # a missing peer (udpin before first contact, unplugged serial) is retried next beat
            self._stop.wait(period)

    def _receive_loop(self, poll_s: float = 0.02) -> None:
        # Polled rather than blocking: a blocking read on a UDP link whose peer is absent spins on
        # "connection refused" and starves the main loop of CPU.
        while not self._stop.is_set():
            try:
                msg = self.link.recv_match(type=["ATTITUDE", "GLOBAL_POSITION_INT"], blocking=False)
            except (OSError, ValueError):
                msg = None
            if msg is None:
                self._stop.wait(poll_s)
                continue
            now = time.monotonic()
            if msg.get_type() == "ATTITUDE":
                self._attitude = (now, msg.roll, msg.pitch, msg.yaw)
            else:
                self._altitude = (now, msg.relative_alt / 1000.0)

    def telemetry(self) -> Telemetry | None:
        """Fresh attitude/altitude from the autopilot as camera priors (nadir camera, top toward the nose)."""
        now = time.monotonic()
        attitude, altitude = self._attitude, self._altitude
        fresh_att = attitude is not None and now - attitude[0] < TELEMETRY_MAX_AGE_S
        fresh_alt = altitude is not None and now - altitude[0] < TELEMETRY_MAX_AGE_S
        if not (fresh_att or fresh_alt):
            return None
        yaw = pitch = roll = None
        if fresh_att:
            roll = math.degrees(attitude[1])
            pitch = 90.0 + math.degrees(attitude[2])  # nose down tilts the optical axis forward
            yaw = math.degrees(attitude[3]) % 360.0
        return Telemetry(yaw, pitch, roll, altitude[1] if fresh_alt else None)

    # -- output --------------------------------------------------------------------------
    def send(self, estimate: Estimate) -> bool:
        """Send one estimate; refuse (return False) anything non-finite."""
        if not estimate.finite():
            self.refused += 1
            return False
        with self._lock:
            if self.message == "gps_input":
                self._gps_input(estimate)
            else:
                self._odometry(estimate)
        self.sent += 1
        return True

    def _gps_input(self, e: Estimate) -> None:
        m = self.mav_enums
        ignore = m.GPS_INPUT_IGNORE_FLAG_VEL_VERT
        if e.alt_msl is None:  # GPS_INPUT altitude is above sea level, not above the ground
            ignore |= m.GPS_INPUT_IGNORE_FLAG_ALT | m.GPS_INPUT_IGNORE_FLAG_VERTICAL_ACCURACY
        week, week_ms = gps_time(e.t_unix)
        yaw_cdeg = 0 if e.heading is None else int(round(e.heading * 100.0)) % 36000 or 36000  # 0 = unknown
        self.link.mav.gps_input_send(
            int(e.t_unix * 1e6),
            0,
            ignore,
            week_ms,
            week,
            3,
            int(round(e.lat * 1e7)),
            int(round(e.lon * 1e7)),
            float(e.alt_msl or 0.0),
            NOMINAL_DOP,
            NOMINAL_DOP,
            float(e.v_north),
            float(e.v_east),
            0.0,
            _sigma(e.cov_v_en),
            _sigma(e.cov_en),
            float(e.alt_sigma),
            NOMINAL_SATELLITES,
            yaw_cdeg,
        )

    def _odometry(self, e: Estimate) -> None:
        """ODOMETRY in a north-aligned local FRD frame at the index origin (x north, y east, z down)."""
        m = self.mav_enums
        yaw = math.radians(e.heading) if e.heading is not None else 0.0
        perm = np.array([[0, 1], [1, 0]])  # (east, north) → (north, east)
        pose = np.diag(
            [
                0.0,
                0.0,
                e.alt_sigma**2 if e.alt is not None else 1e4,
                0.05,
                0.05,
                math.radians(5.0) ** 2 if e.heading is not None else math.pi**2,
            ]
        )
        pose[:2, :2] = perm @ np.asarray(e.cov_en) @ perm.T
        vel_ned = np.array([e.v_north, e.v_east])
        rot = np.array(
            [[math.cos(yaw), math.sin(yaw)], [-math.sin(yaw), math.cos(yaw)]]
        )  # NE → forward/right
        v_body = rot @ vel_ned
        vel = np.diag([0.0, 0.0, 1.0, 0.1, 0.1, 0.1])
        vel[:2, :2] = rot @ perm @ np.asarray(e.cov_v_en) @ perm.T @ rot.T
        self.link.mav.odometry_send(
            int(e.t_unix * 1e6),
            m.MAV_FRAME_LOCAL_FRD,
            m.MAV_FRAME_BODY_FRD,
            float(e.north),
            float(e.east),
            float(-(e.alt or 0.0)),
            _quaternion(0.0, 0.0, yaw),
            float(v_body[0]),
            float(v_body[1]),
            0.0,
            0.0,
            0.0,
            0.0,
            _upper_triangle(pose),
            _upper_triangle(vel),
            e.reset_counter % 256,
            m.MAV_ESTIMATOR_TYPE_VISION,
            int(np.clip(e.quality, 0, 100)),
        )

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
        try:
            self.link.close()
        except OSError:
            pass
