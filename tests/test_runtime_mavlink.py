"""MAVLink output as an autopilot sees it: a pymavlink listener on 127.0.0.1 decodes what is sent."""

from __future__ import annotations

import math
import os
import socket
import time

import numpy as np
import pytest

from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.mavlink import Estimate, MavlinkSink, gps_time, parse_url

os.environ["MAVLINK20"] = "1"
mavutil = pytest.importorskip("pymavlink.mavutil")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _estimate(**kw) -> Estimate:
    values = dict(
        t_unix=1_700_000_000.25,
        lat=47.3769123,
        lon=8.5417456,
        east=12.0,
        north=-30.0,
        v_east=3.0,
        v_north=4.0,
        cov_en=np.diag([4.0, 9.0]),
        cov_v_en=np.diag([0.25, 0.25]),
        heading=90.0,
        alt=85.0,
        quality=70,
        reset_counter=2,
    )
    values.update(kw)
    return Estimate(**values)


def _collect(listener, sink: MavlinkSink, estimate: Estimate, wanted: set[str], seconds: float = 4.0) -> dict:
    got: dict = {}
    deadline = time.time() + seconds
    while time.time() < deadline and not wanted <= set(got):
        sink.send(estimate)
        msg = listener.recv_match(blocking=True, timeout=0.3)
        if msg is not None and msg.get_type() != "BAD_DATA":
            got[msg.get_type()] = msg
    return got


@pytest.fixture()
def link():
    port = _free_port()
    listener = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}")
    yield listener, f"udpout:127.0.0.1:{port}"
    listener.close()


def test_heartbeat_and_gps_input_decode_to_the_estimate(link):
    listener, url = link
    sink = MavlinkSink(url, "gps_input")
    try:
        got = _collect(listener, sink, _estimate(alt_msl=520.0), {"HEARTBEAT", "GPS_INPUT"})
    finally:
        sink.close()
    beat, gps = got["HEARTBEAT"], got["GPS_INPUT"]
    m = mavutil.mavlink
    assert (beat.type, beat.autopilot) == (m.MAV_TYPE_ONBOARD_CONTROLLER, m.MAV_AUTOPILOT_INVALID)
    assert beat.get_srcComponent() == m.MAV_COMP_ID_ONBOARD_COMPUTER
    assert (gps.lat, gps.lon, gps.fix_type) == (473769123, 85417456, 3)
    assert gps.alt == pytest.approx(520.0)
    assert gps.horiz_accuracy == pytest.approx(3.0)  # worst-axis sigma of diag(4, 9)
    assert (gps.vn, gps.ve) == (pytest.approx(4.0), pytest.approx(3.0))
    assert gps.ignore_flags == m.GPS_INPUT_IGNORE_FLAG_VEL_VERT
    assert gps.yaw == 9000
    week, week_ms = gps_time(1_700_000_000.25)
    assert (gps.time_week, gps.time_week_ms) == (week, week_ms) and week == 2288
    assert all(math.isfinite(v) for v in (gps.hdop, gps.vdop, gps.speed_accuracy, gps.vert_accuracy))


def test_gps_input_without_altitude_says_so(link):
    listener, url = link
    sink = MavlinkSink(url, "gps_input")
    try:
        gps = _collect(listener, sink, _estimate(), {"GPS_INPUT"})["GPS_INPUT"]
    finally:
        sink.close()
    m = mavutil.mavlink
    assert (
        gps.ignore_flags & m.GPS_INPUT_IGNORE_FLAG_ALT
        and gps.ignore_flags & m.GPS_INPUT_IGNORE_FLAG_VERTICAL_ACCURACY
    )


def test_odometry_frames_covariance_and_body_velocity(link):
    listener, url = link
    sink = MavlinkSink(url, "odometry")
    try:
        odo = _collect(listener, sink, _estimate(), {"ODOMETRY"})["ODOMETRY"]
    finally:
        sink.close()
    m = mavutil.mavlink
    assert (odo.frame_id, odo.child_frame_id) == (m.MAV_FRAME_LOCAL_FRD, m.MAV_FRAME_BODY_FRD) == (20, 12)
    assert (odo.x, odo.y, odo.z) == (pytest.approx(-30.0), pytest.approx(12.0), pytest.approx(-85.0))
    assert len(odo.pose_covariance) == 21 and all(math.isfinite(v) for v in odo.pose_covariance)
    assert all(math.isfinite(v) for v in odo.velocity_covariance)
    assert (odo.pose_covariance[0], odo.pose_covariance[6]) == (
        pytest.approx(9.0),
        pytest.approx(4.0),
    )  # N, E
    assert np.linalg.norm(odo.q) == pytest.approx(1.0, abs=1e-6)
    # heading east: 3 m/s east is forward, 4 m/s north is to the left
    assert (odo.vx, odo.vy) == (pytest.approx(3.0), pytest.approx(-4.0))
    assert odo.reset_counter == 2 and odo.quality == 70


def test_nan_is_never_sent(link):
    listener, url = link
    sink = MavlinkSink(url, "gps_input", heartbeat_hz=0.2)
    try:
        assert sink.send(_estimate(lat=float("nan"))) is False
        assert sink.send(_estimate(cov_en=np.full((2, 2), np.inf))) is False
        deadline, types = time.time() + 1.0, set()
        while time.time() < deadline:
            msg = listener.recv_match(blocking=True, timeout=0.2)
            if msg is not None:
                types.add(msg.get_type())
        assert "GPS_INPUT" not in types and sink.refused == 2 and sink.sent == 0
    finally:
        sink.close()


def test_attitude_and_altitude_from_the_autopilot_become_priors(link):
    listener, url = link
    sink = MavlinkSink(url, "gps_input")
    try:
        deadline = time.time() + 4.0
        while (
            time.time() < deadline
            and listener.recv_match(type="HEARTBEAT", blocking=True, timeout=0.3) is None
        ):
            pass  # the listener learns the sink's address from its heartbeat
        telemetry = None
        while time.time() < deadline and (
            telemetry is None or telemetry.altitude is None or telemetry.yaw is None
        ):
            listener.mav.attitude_send(0, 0.0, math.radians(-10.0), math.radians(-90.0), 0.0, 0.0, 0.0)
            listener.mav.global_position_int_send(0, 0, 0, 0, 120_000, 0, 0, 0, 0)
            time.sleep(0.1)
            telemetry = sink.telemetry()
    finally:
        sink.close()
    assert telemetry is not None
    assert telemetry.yaw == pytest.approx(270.0) and telemetry.pitch == pytest.approx(80.0)
    assert telemetry.altitude == pytest.approx(120.0)


@pytest.mark.parametrize("url", ["udpout:host", "udpout:1.2.3.4:x", "/dev/ttyTHS1:fast", "bluetooth:1"])
def test_bad_mavlink_urls_are_one_line_errors(url):
    with pytest.raises(GeolinkError, match="--mavlink"):
        parse_url(url)


def test_serial_url_carries_the_baud_rate():
    assert parse_url("/dev/ttyTHS1:921600") == ("/dev/ttyTHS1", 921600)
