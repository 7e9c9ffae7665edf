"""MAVLink link to an autopilot: heartbeat, the position stream, and what the autopilot tells us.

``--mavlink udpout:HOST:PORT | udpin:HOST:PORT | tcp:HOST:PORT | /dev/ttyTHS1:921600``.
pymavlink is imported lazily (it is an extra) and MAVLink 2 is forced before the import: a
send-only link would otherwise stay on MAVLink 1, which has no ODOMETRY.

Three threads: the heartbeat (1 Hz), the receiver (attitude, height, home, the autopilot's own
GNSS, the gimbal's attitude; TIMESYNC answered) and, after :meth:`MavlinkSink.start_stream`, the
position stream: at a fixed rate it asks the track for its prediction and sends what the target
needs (:mod:`autopilot`), so the autopilot hears from us between frames and between fixes.

At the autopilot's first heartbeat the link reads the parameters that decide whether it will use
what the target sends (PARAM_REQUEST_READ) and says in one STATUSTEXT, and line by line on stderr,
what is wrong with them — and when a GPS target has no altitude to make a 3D fix of.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from geolink_edge.errors import GeolinkError, first_line, require
from geolink_edge.geo import LocalFrame
from geolink_edge.runtime.attitude_history import AttitudeHistory
from geolink_edge.runtime.autopilot import MAX_GPS_DELAY_S, Estimate, FlightState, delay_advice, make_output
from geolink_edge.runtime.health import SEVERITY
from geolink_edge.runtime.mount import (
    BodyAttitude,
    CameraMount,
    GimbalAttitude,
    matrix_to_euler,
    quaternion_to_matrix,
)
from geolink_edge.runtime.sources import GnssFix, Telemetry

TELEMETRY_MAX_AGE_S = 1.0
GNSS_MAX_AGE_S = 2.0
DOWNWARD = 25  # MAV_SENSOR_ROTATION_PITCH_270: a rangefinder looking down
PARAMS_RETRY_S = 2.0  # parameters not answered by then are asked for once more
PARAMS_WAIT_S = 5.0  # and judged by then with what has come
TELL_2D_S = 3.0  # fixes 2D for this long are said to be of no use
# what we ask the autopilot to stream (message id, Hz); a link may have none of it on by default
STREAMS = {
    "GPS_GLOBAL_ORIGIN": (49, 0.2),
    "ATTITUDE": (30, 10.0),
    "GLOBAL_POSITION_INT": (33, 5.0),
    "GPS_RAW_INT": (24, 2.0),
    "HOME_POSITION": (242, 0.5),
}
SET_MESSAGE_INTERVAL = 511  # MAV_CMD_SET_MESSAGE_INTERVAL
LISTENED = [
    "HEARTBEAT",
    "ATTITUDE",
    "GLOBAL_POSITION_INT",
    "HOME_POSITION",
    "GPS_RAW_INT",
    "DISTANCE_SENSOR",
    "GIMBAL_DEVICE_ATTITUDE_STATUS",
    "MOUNT_STATUS",
    "TIMESYNC",
    "GPS_GLOBAL_ORIGIN",
    "PARAM_VALUE",
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
    """pymavlink speaking MAVLink 2 (GPS_INPUT's yaw, ODOMETRY's extensions need it)."""
    os.environ["MAVLINK20"] = "1"
    mavutil = require("pymavlink.mavutil", "pip install 'geolink-edge[mavlink]'")
    if mavutil.mavlink.WIRE_PROTOCOL_VERSION != "2.0":  # imported by someone before MAVLINK20 was set
        raise GeolinkError("pymavlink was loaded for MAVLink 1 in this process; MAVLink 2 is needed")
    return mavutil


def _gimbal_from_quaternion(msg, flags_earth_yaw: int) -> GimbalAttitude:
    """GIMBAL_DEVICE_ATTITUDE_STATUS → camera-convention angles (its pitch is positive up)."""
    yaw, pitch, roll = (math.degrees(a) for a in matrix_to_euler(quaternion_to_matrix(msg.q)))
    return GimbalAttitude(-pitch, roll, yaw, bool(msg.flags & flags_earth_yaw))


def _fitted(head: str, names: list[str], width: int = 50) -> str:
    """``head`` and as many of ``names`` as a STATUSTEXT holds, then how many more."""
    text = head
    for i, name in enumerate(names):
        more = f" +{len(names) - i}"
        if len(text) + 1 + len(name) + (len(more) if i < len(names) - 1 else 0) > width:
            return text + more
        text += f" {name}"
    return text


class MavlinkSink:
    """One MAVLink link to the autopilot (see the module docstring).

    ``target``: ``ardupilot-gps`` (GPS_INPUT, ``GPS{gps_id+1}_TYPE = 14``), ``ardupilot-odometry``
    (ODOMETRY for ``VISO_TYPE = 1``) or ``px4-odometry`` (ODOMETRY in LOCAL_NED for EKF2).
    ``send=False`` keeps everything but the position messages (shadow mode).
    """

    def __init__(
        self,
        url: str,
        target: str = "ardupilot-gps",
        *,
        sysid: int = 1,
        compid: int = 191,  # MAV_COMP_ID_ONBOARD_COMPUTER
        gps_id: int = 0,
        rate_hz: float = 10.0,  # margin over ArduPilot's GPS health limit (an average under 215 ms)
        max_track_age_s: float = 1.5,
        mount: CameraMount = CameraMount(),
        send: bool = True,
        home_alt_msl: float | None = None,
        delay_s: float = 0.0,
        origin: tuple[float, float, float] | None = None,
        heartbeat_hz: float = 1.0,
    ):
        output = make_output(target, gps_id)
        if not (1 <= sysid <= 255 and 1 <= compid <= 255 and 0 <= gps_id <= 1):
            raise GeolinkError(
                f"--sysid {sysid}, --compid {compid}, --gps-id {gps_id}: need 1–255, 1–255 and 0 or 1"
            )
        if not 0.5 <= rate_hz <= 50.0:
            raise GeolinkError(f"--mavlink-rate {rate_hz}: must be 0.5–50 Hz")
        if not max_track_age_s > 0:
            raise GeolinkError(f"--max-track-age {max_track_age_s}: must be a positive number of seconds")
        if not 0.0 <= delay_s <= MAX_GPS_DELAY_S:
            raise GeolinkError(
                f"--mavlink-delay {delay_s} s: must be 0–{MAX_GPS_DELAY_S} s (ArduPilot's limit)"
            )
        device, baud = parse_url(url)
        self.mavutil = load_mavutil()
        self.mav_enums = self.mavutil.mavlink
        kwargs = {"source_system": sysid, "source_component": compid, "autoreconnect": True}
        if baud:
            kwargs["baud"] = baud
        try:
            self.link = self.mavutil.mavlink_connection(device, **kwargs)
        except Exception as exc:  # pymavlink raises OSError, SerialException, ... for a bad device
            raise GeolinkError(f"--mavlink {url}: cannot open ({first_line(exc, 120)})") from None
        self.output, self.rate_hz = output, rate_hz
        self.max_track_age_s, self.mount, self.sending = max_track_age_s, mount, send
        self.home_alt_msl, self.delay_s, self.origin = home_alt_msl, delay_s, origin
        self.sent = 0
        self.refused = 0
        self.no_fix_sent = 0
        self.timesync_replies = 0
        self.stream_errors = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._latest: dict[str, tuple[float, object]] = {}  # message type → (monotonic time, message)
        self._home: float | None = None  # home altitude above sea level, m
        self._lost = True  # what the last STATUSTEXT said: start as "no position"
        self._streams_asked = -math.inf
        self._ekf_origin: LocalFrame | None = None  # the autopilot's local frame, once it reports it
        self._attitudes = AttitudeHistory()
        self.parameters: dict[str, float] = {}  # the autopilot's, as read at start
        self.problems: list[str] | None = None  # what is wrong with them, once judged
        self._params_asked: tuple[float, int, int] | None = None  # (monotonic time, system, component)
        self._params_retried = False
        self._told_2d = False
        self._2d_since: float | None = None  # monotonic time fixes began to go out 2D
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
            beat = (m.MAV_TYPE_ONBOARD_CONTROLLER, m.MAV_AUTOPILOT_INVALID, 0, 0, m.MAV_STATE_ACTIVE)
            self._transmit(self.link.mav.heartbeat_send, *beat)
            self._stop.wait(period)

    def _transmit(self, send: Callable[..., None], *args, **kwargs) -> bool:
        with self._lock:
            try:
                send(*args, **kwargs)
                return True
            except OSError:
                return False  # a missing peer (udpin before first contact, unplugged serial): retried later

    def _receive_loop(self, poll_s: float = 0.02) -> None:
        # Polled rather than blocking: a blocking read on a UDP link whose peer is absent spins on
        # "connection refused" and starves the main loop of CPU.
        while not self._stop.is_set():
            try:
                msg = self.link.recv_match(type=LISTENED, blocking=False)
            except (OSError, ValueError):
                msg = None
            if msg is None:
                self._check_parameters()
                self._stop.wait(poll_s)
                continue
            kind = msg.get_type()
            if kind == "HEARTBEAT":
                self._ask_for_streams(msg)
                continue
            if kind == "TIMESYNC":
                self._answer_timesync(msg)
                continue
            if kind == "PARAM_VALUE":
                self.parameters[msg.param_id] = float(msg.param_value)
                continue
            if kind == "ATTITUDE":
                self._attitudes.add(
                    msg.time_boot_ms / 1000.0, BodyAttitude(msg.roll, msg.pitch, msg.yaw), time.time()
                )
            if kind == "HOME_POSITION":
                self._home = msg.altitude / 1000.0
            if kind == "GPS_GLOBAL_ORIGIN":
                self._ekf_origin = LocalFrame(msg.latitude / 1e7, msg.longitude / 1e7)
            self._latest[kind] = (time.monotonic(), msg)

    def _ask_for_streams(self, heartbeat) -> None:
        """On the autopilot's heartbeat, ask for each stream we are not receiving (at most every 5 s)."""
        if heartbeat.autopilot == self.mav_enums.MAV_AUTOPILOT_INVALID:
            return  # a ground station or another companion, not the autopilot
        now = time.monotonic()
        if now - self._streams_asked < 5.0:
            return
        self._streams_asked = now
        system, component = heartbeat.get_srcSystem(), heartbeat.get_srcComponent()
        if self._params_asked is None and self.sending:  # shadow mode tells the autopilot nothing
            self._request_parameters(self.output.parameters(), system, component)
        if self.origin is not None and self._ekf_origin is None and self.output.offers_origin:
            # without a GPS the autopilot has no origin for our local positions: offer the map's
            lat, lon, alt = self.origin
            fields = (system, int(round(lat * 1e7)), int(round(lon * 1e7)), int(round(alt * 1000)))
            self._transmit(self.link.mav.set_gps_global_origin_send, *fields)
        for kind, (msg_id, hz) in STREAMS.items():
            if self._fresh(kind, 5.0 / hz) is None:
                interval = (SET_MESSAGE_INTERVAL, 0, msg_id, 1e6 / hz, 0, 0, 0, 0, 0)
                self._transmit(self.link.mav.command_long_send, system, component, *interval)

    def _request_parameters(self, names, system: int, component: int) -> None:
        self._params_asked = (time.monotonic(), system, component)
        for name in names:
            self._transmit(self.link.mav.param_request_read_send, system, component, name.encode(), -1)

    def _check_parameters(self) -> None:
        """Once every parameter has answered or time is up: say what keeps the autopilot from using us."""
        if self._params_asked is None or self.problems is not None:
            return
        asked, system, component = self._params_asked
        missing = [name for name in self.output.parameters() if name not in self.parameters]
        waited = time.monotonic() - asked
        if missing and waited < PARAMS_WAIT_S:
            if waited >= PARAMS_RETRY_S and not self._params_retried:
                self._params_retried = True
                self._request_parameters(missing, system, component)
                self._params_asked = (asked, system, component)
            return
        problems = self.output.problems(self.parameters, self.delay_s)
        if self.output.needs_altitude and self.home_alt_msl is None and self._home is None:
            problems.append("no home altitude: the fix is 2D, which EKF3 ignores (give --home-alt)")
        problems += [f"{name} not read (another firmware?)" for name in missing]
        self.problems = problems
        for line in problems:
            print(f"geolink: autopilot: {line}", file=sys.stderr)
        names = [line.split(" ")[0] for line in problems if not line.startswith("no home")]
        if not problems:
            self.statustext(f"geolink: {self.output.name} settings OK", SEVERITY["info"])
        else:
            text = _fitted("geolink: check", names) if names else "geolink: no home altitude (--home-alt)"
            self.statustext(text, SEVERITY["warning"])

    def _answer_timesync(self, msg) -> None:
        """A request (tc1 = 0) is answered with our clock, the one ODOMETRY's time_usec is stamped in."""
        if msg.tc1 != 0:
            return
        if self._transmit(self.link.mav.timesync_send, time.time_ns(), msg.ts1):
            self.timesync_replies += 1

    def _fresh(self, kind: str, max_age_s: float = TELEMETRY_MAX_AGE_S):
        entry = self._latest.get(kind)
        return entry[1] if entry is not None and time.monotonic() - entry[0] < max_age_s else None

    # -- what the autopilot knows ----------------------------------------------------------
    def body_attitude(self, t_unix: float | None = None) -> BodyAttitude | None:
        """The vehicle's attitude at unix time ``t_unix`` (interpolated between reports) when the
        reports cover it, else the latest fresh one."""
        then = self._attitudes.at(t_unix) if t_unix is not None else None
        if then is not None:
            return then
        msg = self._fresh("ATTITUDE")
        return None if msg is None else BodyAttitude(msg.roll, msg.pitch, msg.yaw)

    def gimbal_attitude(self) -> GimbalAttitude | None:
        msg = self._fresh("GIMBAL_DEVICE_ATTITUDE_STATUS")
        if msg is not None:
            return _gimbal_from_quaternion(msg, self.mav_enums.GIMBAL_DEVICE_FLAGS_YAW_IN_EARTH_FRAME)
        msg = self._fresh("MOUNT_STATUS")  # ArduPilot's older report: pitch, roll, yaw (body) in cdeg
        if msg is not None:
            return GimbalAttitude(-msg.pointing_a / 100.0, msg.pointing_b / 100.0, msg.pointing_c / 100.0)
        return None

    def height(self, body: BodyAttitude | None) -> float | None:
        """Height above the ground: a downward rangefinder (levelled by the attitude), else above home."""
        ranger = self._fresh("DISTANCE_SENSOR")
        if ranger is not None and ranger.orientation == DOWNWARD and body is not None:
            if ranger.min_distance <= ranger.current_distance <= ranger.max_distance:
                return ranger.current_distance / 100.0 * math.cos(body.roll) * math.cos(body.pitch)
        position = self._fresh("GLOBAL_POSITION_INT")
        return None if position is None else position.relative_alt / 1000.0

    def altitude_msl(self) -> float | None:
        """Home altitude (HOME_POSITION, else the configured one) + height above home; None if unknown."""
        home = self._home if self._home is not None else self.home_alt_msl
        position = self._fresh("GLOBAL_POSITION_INT")
        return None if home is None or position is None else home + position.relative_alt / 1000.0

    def telemetry(self, t_unix: float | None = None) -> Telemetry | None:
        """The CAMERA's attitude (through the mount model) at ``t_unix`` (a frame's capture; default
        now) and the height, from fresh reports; None if none."""
        body = self.body_attitude(t_unix)
        camera = self.mount.camera(body, self.gimbal_attitude())
        height = self.height(body)
        if camera is None and height is None:
            return None
        yaw, pitch, roll = camera if camera is not None else (None, None, None)
        return Telemetry(yaw, pitch, roll, height)

    def autopilot_gnss(self) -> GnssFix | None:
        """The autopilot's own 3D GNSS fix while it is fresh — never our own fix echoed back."""
        if self.sending and self.output.is_gps1:
            return None  # GPS_RAW_INT reports GPS 1, which is us
        msg = self._fresh("GPS_RAW_INT", GNSS_MAX_AGE_S)
        if msg is None or msg.fix_type < 3:
            return None
        h_acc = getattr(msg, "h_acc", 0)
        received = time.time() - (time.monotonic() - self._latest["GPS_RAW_INT"][0])
        return GnssFix(
            t_unix=received,
            lat=msg.lat / 1e7,
            lon=msg.lon / 1e7,
            alt_msl=msg.alt / 1000.0,
            h_acc=h_acc / 1000.0 if h_acc else None,
            fix_type=int(msg.fix_type),
            satellites=int(msg.satellites_visible),
        )

    # -- output --------------------------------------------------------------------------
    def statustext(self, text: str, severity: int = SEVERITY["info"]) -> None:
        """One line to the ground station (MAVLink cuts it at 50 characters)."""
        data = text.encode("ascii", "replace")[:50]
        self._transmit(self.link.mav.statustext_send, severity, data)

    def send(self, estimate: Estimate) -> bool:
        """Send one estimate now in the target's message; refuse (return False) anything non-finite."""
        if not estimate.finite():
            self.refused += 1
            return False
        body = self.body_attitude(estimate.t_unix)
        state = FlightState(body, self.altitude_msl(), self.height(body))
        self._tell_if_2d(state.alt_msl is None)
        try:
            ok = self._send_message(*self.output.message(self._in_ekf_frame(estimate), state))
        except struct.error:  # a field out of its wire range (a time before 1980, a latitude of 300°)
            ok = False
        self.sent += ok
        self.refused += not ok
        return ok

    def _tell_if_2d(self, no_altitude: bool) -> None:
        """Say once when fixes have gone out 2D (no altitude) for ``TELL_2D_S``: EKF3 ignores them.
        (The first ones may, until the autopilot's height has come in.)"""
        if not (self.output.needs_altitude and no_altitude):
            self._2d_since = None
            return
        now = time.monotonic()
        self._2d_since = now if self._2d_since is None else self._2d_since
        if now - self._2d_since >= TELL_2D_S and not self._told_2d:
            self._told_2d = True
            self.statustext("geolink: 2D fix, no altitude: EKF3 ignores it", SEVERITY["warning"])

    def _send_message(self, name: str, fields: dict) -> bool:
        return self._transmit(getattr(self.link.mav, f"{name.lower()}_send"), **fields)

    def _in_ekf_frame(self, estimate: Estimate) -> Estimate:
        """The estimate's east/north re-expressed from the autopilot's origin, once that is known:
        ODOMETRY positions are relative to it, and it need not be the map's."""
        if self._ekf_origin is None:
            return estimate
        east, north, _ = self._ekf_origin.to_enu(estimate.lat, estimate.lon)
        return replace(estimate, east=float(east), north=float(north))

    def start_stream(self, predict: Callable[[float], Estimate | None]) -> None:
        """Send ``predict(unix time)`` at ``rate_hz`` on a thread until :meth:`close`.

        A track older than ``max_track_age_s`` (or none) is not sent; the target's "no position"
        (:meth:`Output.no_fix`: GPS_INPUT "no fix", ArduPilot ODOMETRY of quality −1) goes out at
        the same rate instead, which keeps ArduPilot's sensor healthy — for arming, and for when the
        fix returns. A STATUSTEXT tells the ground station when the position is lost and when it is
        back.
        """
        thread = threading.Thread(target=self._stream_loop, args=(predict,), name="mav-stream", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _stream_loop(self, predict: Callable[[float], Estimate | None]) -> None:
        period = 1.0 / self.rate_hz
        next_due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.stream_once(predict, time.time() - self.delay_s)
            except Exception as exc:  # noqa: BLE001 — the stream must outlive any one bad message
                self.stream_errors += 1
                self.last_error = f"{exc.__class__.__name__}: {exc}"
            next_due = max(next_due + period, time.monotonic())  # a late tick never bursts to catch up
            self._stop.wait(max(0.0, next_due - time.monotonic()))

    def stream_once(self, predict: Callable[[float], Estimate | None], t_unix: float) -> str:
        """One tick at the position time ``t_unix``: "sent", "stale" (no recent fix), "shadow" (not
        sending) or "refused" (not finite, or the link failed)."""
        try:
            estimate = predict(t_unix)
        except Exception as exc:  # the stream must outlive a failing prediction; say so and go on
            estimate = None
            self.statustext(f"geolink: predict failed: {exc.__class__.__name__}", SEVERITY["warning"])
        if estimate is None or estimate.age_s > self.max_track_age_s:
            if not self._lost:
                age = "no track" if estimate is None else f"no fix for {estimate.age_s:.0f} s"
                self.statustext(f"geolink: position lost ({age})", SEVERITY["warning"])
                self._lost = True
            no_fix = self.output.no_fix(t_unix)
            if self.sending and no_fix is not None:
                self.no_fix_sent += self._send_message(*no_fix)
            return "stale"
        if self._lost:
            self.statustext("geolink: position fix", SEVERITY["notice"])
            self._lost = False
        if not self.sending:
            return "shadow"
        return "sent" if self.send(estimate) else "refused"

    def delay_parameters(self, latency_ms: dict | None = None) -> dict:
        """The autopilot's delay parameter for this output, and with the run's per-stage latency
        (the summary's ``latency_ms``) the settings it suggests (:func:`autopilot.delay_advice`)."""
        if latency_ms is None:
            return self.output.delay_parameters(self.delay_s)
        return delay_advice(self.output, self.delay_s, latency_ms)

    def close(self) -> None:
        """Stop every thread and close the link; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
        try:
            self.link.close()
        except OSError:
            pass
