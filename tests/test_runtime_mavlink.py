"""MAVLink output as an autopilot sees it: a pymavlink listener on 127.0.0.1 decodes what is sent."""

from __future__ import annotations

import math
import socket
import time

import numpy as np
import pytest

from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.autopilot import Estimate, TrackPredictor, delay_advice, gps_time, make_output
from geolink_edge.runtime.filter import FilterConf, TrackFilter
from geolink_edge.runtime.mavlink import MavlinkSink, load_mavutil, parse_url
from geolink_edge.runtime.mount import CameraMount

pytest.importorskip("pymavlink")
mavutil = load_mavutil()  # the runtime's own loader: MAVLink 2, as the sink speaks it
m = mavutil.mavlink


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
        cov_v_en=np.diag([0.25, 0.36]),
        velocity_converged=True,
        heading=90.0,
        alt=85.0,
        quality=70,
        reset_counter=2,
    )
    values.update(kw)
    return Estimate(**values)


def _receive(listener, kind: str, seconds: float = 3.0, action=None):
    """The first ``kind`` message within ``seconds``, calling ``action`` before each read."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if action is not None:
            action()
        msg = listener.recv_match(type=kind, blocking=True, timeout=0.2)
        if msg is not None:
            return msg
    raise AssertionError(f"no {kind} within {seconds} s")


@pytest.fixture()
def link():
    port = _free_port()
    listener = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}", source_system=1, source_component=1)
    yield listener, f"udpout:127.0.0.1:{port}"
    listener.close()


@pytest.fixture()
def sink_factory(link):
    listener, url = link
    made: list[MavlinkSink] = []

    def make(target="ardupilot-gps", connect=False, **kw):
        sink = MavlinkSink(url, target, **kw)
        made.append(sink)
        if connect:  # the listener learns the sink's address from its heartbeat
            _receive(listener, "HEARTBEAT")
        return sink

    yield listener, make
    for sink in made:
        sink.close()


def _feed(listener, sink, check, send, seconds=3.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        send()
        time.sleep(0.05)
        value = check()
        if value is not None:
            return value
    raise AssertionError("the sink never saw what was sent")


# -- GPS_INPUT -----------------------------------------------------------------------------------


def test_heartbeat_and_3d_gps_input_with_the_autopilots_altitude(sink_factory):
    listener, make = sink_factory
    sink = make(home_alt_msl=500.0, connect=True)
    _feed(
        listener,
        sink,
        sink.altitude_msl,
        lambda: listener.mav.global_position_int_send(0, 0, 0, 0, 20_000, 0, 0, 0, 0),
    )
    beat = _receive(listener, "HEARTBEAT")

    def send():
        listener.mav.global_position_int_send(0, 0, 0, 0, 20_000, 0, 0, 0, 0)  # keeps the height fresh
        time.sleep(0.05)
        sink.send(_estimate())

    gps = _receive(listener, "GPS_INPUT", action=send)
    assert (beat.type, beat.autopilot) == (m.MAV_TYPE_ONBOARD_CONTROLLER, m.MAV_AUTOPILOT_INVALID)
    assert beat.get_srcComponent() == m.MAV_COMP_ID_ONBOARD_COMPUTER
    assert (gps.lat, gps.lon, gps.fix_type, gps.gps_id) == (473769123, 85417456, 3, 0)
    assert gps.alt == pytest.approx(520.0)  # home 500 m + 20 m above home
    assert gps.horiz_accuracy == pytest.approx(3.0)  # worst-axis sigma of diag(4, 9)
    assert gps.speed_accuracy == pytest.approx(0.6)  # worst-axis sigma of diag(0.25, 0.36)
    assert (gps.vn, gps.ve) == (pytest.approx(4.0), pytest.approx(3.0))
    assert gps.ignore_flags == m.GPS_INPUT_IGNORE_FLAG_VEL_VERT | m.GPS_INPUT_IGNORE_FLAG_VERTICAL_ACCURACY
    assert gps.yaw == 0  # never our heading as a GPS yaw
    week, week_ms = gps_time(1_700_000_000.25)
    assert (gps.time_week, gps.time_week_ms) == (week, week_ms) and week == 2288


def test_home_position_from_the_autopilot_wins_over_the_configured_one(sink_factory):
    listener, make = sink_factory
    sink = make(home_alt_msl=500.0, connect=True)

    def send():
        listener.mav.home_position_send(0, 0, 430_000, 0, 0, 0, [1, 0, 0, 0], 0, 0, 0)
        listener.mav.global_position_int_send(0, 0, 0, 0, 20_000, 0, 0, 0, 0)

    assert _feed(listener, sink, lambda: sink.altitude_msl() if sink._home else None, send) == pytest.approx(
        450.0
    )


def test_without_an_altitude_the_fix_is_2d_and_that_is_said(sink_factory, monkeypatch):
    monkeypatch.setattr("geolink_edge.runtime.mavlink.TELL_2D_S", 0.3)
    listener, make = sink_factory
    sink = make(gps_id=1)
    gps = _receive(listener, "GPS_INPUT", action=lambda: sink.send(_estimate()))
    assert gps.fix_type == 2 and gps.gps_id == 1
    assert gps.ignore_flags & m.GPS_INPUT_IGNORE_FLAG_ALT
    text = _receive(listener, "STATUSTEXT", action=lambda: (sink.send(_estimate()), time.sleep(0.05)))
    assert text.text == "geolink: 2D fix, no altitude: EKF3 ignores it"


def test_velocity_is_withheld_until_it_has_converged(sink_factory):
    listener, make = sink_factory
    sink = make()
    gps = _receive(listener, "GPS_INPUT", action=lambda: sink.send(_estimate(velocity_converged=False)))
    withheld = m.GPS_INPUT_IGNORE_FLAG_VEL_HORIZ | m.GPS_INPUT_IGNORE_FLAG_SPEED_ACCURACY
    assert gps.ignore_flags & withheld == withheld
    assert (gps.vn, gps.ve, gps.speed_accuracy) == (0.0, 0.0, 0.0)


def test_nan_is_never_sent(sink_factory):
    listener, make = sink_factory
    sink = make(heartbeat_hz=0.2)
    assert sink.send(_estimate(lat=float("nan"))) is False
    assert sink.send(_estimate(cov_en=np.full((2, 2), np.inf))) is False
    assert listener.recv_match(type="GPS_INPUT", blocking=True, timeout=1.0) is None
    assert sink.refused == 2 and sink.sent == 0


def _track(times, speed=10.0, sigma=3.0, conf=FilterConf()) -> TrackFilter:
    track = TrackFilter(conf)
    for t in times:
        track.update(t, np.array([speed * t, 0.0]), np.eye(2) * sigma**2)
    return track


def _turning_flight(seconds: float, step: float, speed: float = 10.0, accel: float = 2.5) -> np.ndarray:
    """(t, east, north) every ``step`` s of a vehicle at ``speed`` that flies 8 s straight, then turns
    90° at ``accel`` (ArduCopter's default WPNAV_ACCEL), and again."""
    turn_s = math.pi / 2 * speed / accel
    rows, heading, position = [], 0.0, np.zeros(2)
    for t in np.arange(0.0, seconds, step):
        rows.append((t, *position))
        if (t % (8.0 + turn_s)) >= 8.0:
            heading += accel / speed * step
        position = position + speed * step * np.array([math.sin(heading), math.cos(heading)])
    return np.array(rows)


def test_the_accuracy_told_stays_under_5m_and_honest_at_2_fixes_a_second_of_1_5m():
    """EKF3 refuses a GPS whose accuracy exceeds 5 m: at 2 fixes/s of 1.5 m (1σ per axis), the
    accuracy streamed at 10 Hz between fixes must stay under it through turns, never claim better
    than a fix, and hold the true error within 2× itself nearly always."""
    rng = np.random.default_rng(1)
    truth = _turning_flight(60.0, 0.1)
    track = TrackFilter()
    accuracies, errors, statuses = [], [], []
    for i, (t, east, north) in enumerate(truth):
        if i % 5 == 0:  # a fix every 0.5 s
            z = np.array([east, north]) + rng.normal(0.0, 1.5, 2)
            statuses.append(track.update(t, z, np.eye(2) * 1.5**2).status)
        state = track.state(t)
        if state is not None:
            accuracies.append(math.sqrt(np.max(np.linalg.eigvalsh(state.covariance[:2, :2]))))
            errors.append(float(np.hypot(*(state.position - [east, north]))))
    assert statuses[0] == "acquiring" and set(statuses[1:]) == {"accepted"}  # turns are no surprise
    accuracies, errors = np.array(accuracies[20:]), np.array(errors[20:])  # past the first 2 s
    assert accuracies.max() < 5.0 and accuracies.min() >= 1.5 - 1e-9, (accuracies.min(), accuracies.max())
    within = float(np.mean(errors <= 2 * accuracies))
    print(f"accuracy {accuracies.min():.2f}–{accuracies.max():.2f} m, {within:.1%} of errors within 2×")
    assert within >= 0.9, within


def test_the_stream_sends_at_a_fixed_rate_between_fixes(sink_factory):
    listener, make = sink_factory
    sink = make(rate_hz=5.0)
    track = _track([0.2, 0.4])
    predictor = TrackPredictor(track, lambda e, n: (47.0 + n * 1e-5, 8.0 + e * 1e-5))
    predictor.observe(0.4, time.time())  # the frames' clock started at 0
    sink.start_stream(predictor)
    stamps = []  # when each message was sent (its time_usec): arrival times carry the machine's load
    deadline = time.time() + 2.6
    while time.time() < deadline:
        msg = listener.recv_match(type="GPS_INPUT", blocking=True, timeout=0.3)
        if msg is not None:
            stamps.append(msg.time_usec / 1e6)
    first_two_seconds = [t for t in stamps if t < stamps[0] + 2.0]
    assert 9 <= len(first_two_seconds) <= 11  # 5 Hz with no new fix at all (a late tick is not made up)
    assert np.median(np.diff(stamps)) == pytest.approx(0.2, abs=0.02)


def test_accuracy_grows_with_the_age_of_the_last_fix_and_the_stream_stops_when_stale(sink_factory):
    listener, make = sink_factory
    sink = make(max_track_age_s=2.0, connect=True)
    track = _track([0.0, 0.2, 0.4, 0.6])
    predictor = TrackPredictor(track, lambda e, n: (47.0, 8.0))
    t0 = 1_700_000_000.0
    predictor.observe(0.0, t0)  # the frames' clock is unix time − t0
    accuracies = []
    for t in (0.6, 1.0, 1.6, 2.4):
        assert sink.stream_once(predictor, t0 + t) == "sent"
        accuracies.append(_receive(listener, "GPS_INPUT").horiz_accuracy)
    assert all(b > a for a, b in zip(accuracies, accuracies[1:], strict=False))
    assert sink.stream_once(predictor, t0 + 3.0) == "stale"  # 2.4 s after the last fix
    lost = _receive(listener, "STATUSTEXT")
    no_fix = _receive(listener, "GPS_INPUT")
    assert "position lost" in lost.text and lost.severity == m.MAV_SEVERITY_WARNING
    assert no_fix.fix_type == 1 and sink.no_fix_sent == 1  # the message rate goes on, saying "no fix"
    track.update(3.2, np.array([32.0, 0.0]), np.eye(2) * 9.0)
    assert sink.stream_once(predictor, t0 + 3.2) == "sent"
    assert "position fix" in _receive(listener, "STATUSTEXT").text


def test_shadow_mode_sends_no_position(sink_factory):
    listener, make = sink_factory
    sink = make(send=False)
    predictor = TrackPredictor(_track([0.0, 0.2]), lambda e, n: (47.0, 8.0))
    predictor.observe(0.2, time.time())
    assert sink.stream_once(predictor, time.time()) == "shadow"
    assert listener.recv_match(type="GPS_INPUT", blocking=True, timeout=0.5) is None


def test_the_first_velocity_of_a_track_is_honest_and_not_converged():
    """Two fixes 0.2 s apart with 3 m errors: the velocity's sigma is 3·√2/0.2 ≈ 21 m/s, not 15."""
    track = _track([0.0, 0.2])
    state = track.state(0.2)
    assert state.speed_sigma == pytest.approx(3.0 * math.sqrt(2) / 0.2)
    assert not state.converged and state.age_s == 0.0
    assert np.allclose(state.covariance[:2, 2:], np.eye(2) * 9.0 / 0.2)


def test_velocity_converges_on_a_steady_track():
    track = _track(np.arange(0, 30, 0.2), sigma=2.0, conf=FilterConf(accel_sigma=0.5))
    state = track.state(29.8)
    assert state.converged and np.allclose(state.velocity, [10.0, 0.0], atol=1.0)


def test_a_turn_the_prediction_overshot_is_searched_for_and_restarts_the_track():
    """Flying east at 10 m/s, the vehicle turns north harder than the track expects: the fix is
    gated, the next frame is searched for around it as well as around the prediction, and a second
    fix there restarts the track."""
    track = _track(np.arange(0.0, 2.1, 0.5), sigma=1.5)
    assert track.update(2.5, np.array([20.0, 8.0]), np.eye(2) * 1.5**2).status == "gated"
    east, north, radius = track.search_region(3.0, floor_m=5.0)
    for point in ([30.0, 0.0], [20.0 + 10.0 * 0.5, 8.0]):  # the prediction, the gated fix moved on
        assert np.hypot(point[0] - east, point[1] - north) <= radius
    assert track.update(3.0, np.array([20.5, 13.0]), np.eye(2) * 1.5**2).status == "accepted"
    assert np.allclose(track.position, [20.5, 13.0]) and track.search_region(3.0, floor_m=5.0)[2] < radius


def test_reset_counter_changes_only_on_a_discontinuity():
    conf = FilterConf(max_misses=2)
    track = _track([0.0, 0.2, 0.4], conf=conf)
    assert track.resets == 0  # the first track is no discontinuity
    for t in (0.6, 0.8):
        track.miss(t)
    assert not track.tracking
    for t in (1.0, 1.2):  # re-acquired where the lost track was heading
        track.update(t, np.array([10.0 * t, 0.0]), np.eye(2) * 9.0)
    assert track.tracking and track.starts == 2 and track.resets == 0
    for t in (1.4, 1.6):
        track.miss(t)
    for t in (1.8, 2.0):  # re-acquired 300 m away: the old track was wrong
        track.update(t, np.array([10.0 * t, 300.0]), np.eye(2) * 9.0)
    assert track.starts == 3 and track.resets == 1


def test_a_trusted_fix_starts_the_track_at_once():
    track = TrackFilter()
    assert track.start_from_trusted_fix(0.0, np.array([5.0, 6.0]), np.eye(2) * 4.0).status == "accepted"
    state = track.state(0.0)
    assert np.allclose(state.position, [5.0, 6.0]) and state.speed_sigma == pytest.approx(15.0)
    assert track.starts == 1 and track.resets == 0
    # started with a known velocity, the next fix updates it like any other
    known = TrackFilter()
    known.start_from_trusted_fix(0.0, np.zeros(2), np.eye(2), v=np.array([10.0, 0.0]), r_v=np.eye(2) * 0.25)
    assert known.state(0.0).converged
    assert known.update(0.2, np.array([2.0, 0.0]), np.eye(2)).status == "accepted"
    assert (
        known.start_from_trusted_fix(0.4, np.array([4.0, 0.0]), np.eye(2)).status == "accepted"
    )  # tracking: an update


def test_a_warm_start_narrows_the_search_but_reports_nothing_until_our_own_fix():
    track = TrackFilter()
    track.warm_start_search_at(0.0, np.array([100.0, -50.0]), np.eye(2) * 25.0)
    assert track.tracking and track.state(0.0) is None  # the autopilot's GNSS is never echoed back
    east, north, radius = track.search_region(1.0)
    assert (east, north) == pytest.approx((100.0, -50.0)) and radius > 15.0
    assert track.update(1.0, np.array([103.0, -48.0]), np.eye(2) * 4.0).status == "accepted"
    state = track.state(1.0)
    assert state is not None and np.linalg.norm(state.position - [103.0, -48.0]) < 2.0


def test_delay_parameters_per_target():
    assert make_output("ardupilot-gps", 1).delay_parameters(0.12) == {"GPS2_DELAY_MS": 125}
    assert make_output("ardupilot-gps").delay_parameters(0.5) == {"GPS1_DELAY_MS": 250}  # ArduPilot's maximum
    # ArduPilot's jitter correction absorbs a steady send delay: VISO_DELAY_MS must hold it
    assert make_output("ardupilot-odometry").delay_parameters(0.12) == {"VISO_DELAY_MS": 125}
    assert make_output("px4-odometry").delay_parameters(0.12) == {"EKF2_EV_DELAY": 5}  # TIMESYNC
    latency = {"age": {"median": 20.0}, "total": {"median": 160.0}, "embed": {"median": 90.0}}
    advice = delay_advice(make_output("ardupilot-gps"), 0.0, latency)
    assert advice["fix_age_ms"] == 180.0 and advice["parameters"] == {"GPS1_DELAY_MS": 5}
    assert advice["suggested"] == {"--mavlink-delay": 0.18, "GPS1_DELAY_MS": 185}


# -- ODOMETRY ------------------------------------------------------------------------------------


def test_ardupilot_odometry_frames_covariance_and_body_velocity(sink_factory):
    listener, make = sink_factory
    sink = make("ardupilot-odometry")
    odo = _receive(listener, "ODOMETRY", action=lambda: sink.send(_estimate()))
    assert (odo.frame_id, odo.child_frame_id) == (m.MAV_FRAME_LOCAL_FRD, m.MAV_FRAME_BODY_FRD) == (20, 12)
    assert (odo.x, odo.y, odo.z) == (pytest.approx(-30.0), pytest.approx(12.0), pytest.approx(-85.0))
    assert all(math.isfinite(v) for v in (*odo.pose_covariance, *odo.velocity_covariance))
    assert (odo.pose_covariance[0], odo.pose_covariance[6], odo.pose_covariance[11]) == (
        pytest.approx(9.0),
        pytest.approx(4.0),
        pytest.approx(9.0),  # N, E, and z (from PnP) at the worst horizontal variance: ArduPilot folds them
    )
    assert np.linalg.norm(odo.q) == pytest.approx(1.0, abs=1e-6)
    # no attitude from the autopilot: the heading (east) orients the body; 3 m/s east is forward
    assert (odo.vx, odo.vy) == (pytest.approx(3.0, abs=1e-5), pytest.approx(-4.0, abs=1e-5))
    # body x = east 0.25, y = west 0.36; the unmeasured vertical gets the worst horizontal variance
    vel_var = [odo.velocity_covariance[i] for i in (0, 6, 11)]
    assert vel_var == pytest.approx([0.25, 0.36, 0.36])
    assert odo.reset_counter == 2 and odo.quality == 70


def test_ardupilot_gets_the_position_alone_until_the_velocity_has_converged(sink_factory):
    """ArduPilot weighs external-navigation velocity at VISO_VEL_M_NSE whatever its covariance:
    an unconverged velocity never reaches it (VISION_POSITION_ESTIMATE has none)."""
    listener, make = sink_factory
    sink = make("ardupilot-odometry")
    alone = _receive(
        listener, "VISION_POSITION_ESTIMATE", action=lambda: sink.send(_estimate(velocity_converged=False))
    )
    assert (alone.x, alone.y, alone.z) == (pytest.approx(-30.0), pytest.approx(12.0), pytest.approx(-85.0))
    assert (alone.covariance[0], alone.covariance[6], alone.covariance[11]) == (
        pytest.approx(9.0),
        pytest.approx(4.0),
        pytest.approx(9.0),
    )
    assert alone.yaw == pytest.approx(math.pi / 2) and alone.reset_counter == 2  # the heading: east


def test_ardupilot_odometry_says_failed_without_a_fix_and_grades_a_fix_by_its_accuracy(sink_factory):
    """ArduPilot counts external navigation healthy (arming needs it) while any pose message comes in,
    and feeds its EKF only those of quality >= VISO_QUAL_MIN (0): "no position" goes out as ODOMETRY
    of quality -1 at the stream's rate, a real one at 1-100 from its accuracy."""
    listener, make = sink_factory
    sink = make("ardupilot-odometry", connect=True)
    predictor = TrackPredictor(_track([0.0, 0.2]), lambda e, n: (47.0, 8.0))
    t0 = 1_700_000_000.0
    predictor.observe(0.0, t0)
    assert sink.stream_once(predictor, t0 + 5.0) == "stale"
    failed = _receive(listener, "ODOMETRY")
    assert failed.quality == -1 and sink.no_fix_sent == 1
    assert (failed.frame_id, failed.child_frame_id) == (m.MAV_FRAME_LOCAL_FRD, m.MAV_FRAME_BODY_FRD)
    numbers = (failed.x, failed.y, failed.z, failed.vx, failed.vy, failed.vz)
    assert numbers == (0.0,) * 6 and all(
        v == 0.0 for v in (*failed.pose_covariance, *failed.velocity_covariance)
    )
    grades = []
    for variance in (2.25, 9.0, 25.0, 400.0):  # 1.5, 3, 5 and 20 m
        odo = _receive(
            listener, "ODOMETRY", action=lambda v=variance: sink.send(_estimate(cov_en=np.eye(2) * v))
        )
        grades.append(odo.quality)
    assert grades == [85, 70, 50, 1]


def test_ardupilot_odometry_without_height_keeps_the_error_horizontal(sink_factory):
    listener, make = sink_factory
    sink = make("ardupilot-odometry")
    odo = _receive(listener, "ODOMETRY", action=lambda: sink.send(_estimate(alt=None)))
    assert odo.pose_covariance[11] == pytest.approx(9.0)  # the worst horizontal variance, not 1e4
    assert odo.z == 0.0


def test_px4_odometry_is_local_ned_with_a_finite_z_and_nan_where_unknown(sink_factory):
    """PX4 drops a position whose z is not finite: z is the autopilot's own height with a large
    variance when we measured none, and a finite "unknown" without any."""
    listener, make = sink_factory
    sink = make("px4-odometry", connect=True)
    odo = _receive(listener, "ODOMETRY", action=lambda: sink.send(_estimate(alt=None, heading=None)))
    assert (odo.frame_id, odo.child_frame_id) == (m.MAV_FRAME_LOCAL_NED, m.MAV_FRAME_LOCAL_NED)
    assert (odo.x, odo.y, odo.z) == (pytest.approx(-30.0), pytest.approx(12.0), 0.0)
    assert odo.pose_covariance[11] == pytest.approx(1e4)
    assert (odo.vx, odo.vy) == (pytest.approx(4.0), pytest.approx(3.0))  # north, east
    assert math.isnan(odo.q[0]) and math.isnan(odo.pose_covariance[15])
    assert odo.pose_covariance[0] == pytest.approx(9.0)
    _feed(
        listener,
        sink,
        lambda: sink.height(None),
        lambda: listener.mav.global_position_int_send(0, 0, 0, 0, 42_000, 0, 0, 0, 0),
    )
    echoed = _receive(listener, "ODOMETRY", action=lambda: sink.send(_estimate(alt=None)))
    assert echoed.z == pytest.approx(-42.0) and echoed.pose_covariance[11] == pytest.approx(100.0)
    measured = _receive(listener, "ODOMETRY", action=lambda: sink.send(_estimate()))
    assert measured.z == pytest.approx(-85.0) and measured.pose_covariance[11] == pytest.approx(25.0)
    withheld = _receive(listener, "ODOMETRY", action=lambda: sink.send(_estimate(velocity_converged=False)))
    assert math.isnan(withheld.vx) and math.isnan(withheld.velocity_covariance[0])


def test_odometry_offers_the_maps_origin_and_follows_the_autopilots(sink_factory):
    from geolink_edge.geo import LocalFrame

    listener, make = sink_factory
    origin = (47.3977, 8.5456, 488.0)
    sink = make("ardupilot-odometry", connect=True, origin=origin)
    beat = (m.MAV_TYPE_QUADROTOR, m.MAV_AUTOPILOT_ARDUPILOTMEGA, 0, 0, m.MAV_STATE_STANDBY)
    offered = _receive(listener, "SET_GPS_GLOBAL_ORIGIN", action=lambda: listener.mav.heartbeat_send(*beat))
    assert (offered.latitude, offered.longitude, offered.altitude) == (473977000, 85456000, 488000)
    # the autopilot's origin is 100 m north of the map's: positions are re-expressed from it
    index = LocalFrame(*origin[:2])
    lat, lon, _ = index.to_geodetic(12.0, -30.0)
    ekf_lat, ekf_lon, _ = index.to_geodetic(0.0, 100.0)
    estimate = _estimate(lat=float(lat), lon=float(lon))

    def send():
        listener.mav.gps_global_origin_send(int(round(ekf_lat * 1e7)), int(round(ekf_lon * 1e7)), 488000)
        time.sleep(0.05)
        sink.send(estimate)

    deadline = time.time() + 3.0
    odo = None
    while time.time() < deadline and (odo is None or odo.x > -100.0):
        odo = _receive(listener, "ODOMETRY", action=send)
    assert (odo.x, odo.y) == (pytest.approx(-130.0, abs=0.05), pytest.approx(12.0, abs=0.05))


def test_timesync_requests_are_answered_with_our_clock(sink_factory):
    listener, make = sink_factory
    sink = make("px4-odometry", connect=True)
    before = time.time_ns()
    reply = _receive(listener, "TIMESYNC", action=lambda: listener.mav.timesync_send(0, 123456789))
    assert reply.ts1 == 123456789 and before <= reply.tc1 <= time.time_ns()
    deadline = time.time() + 2.0  # counted once the send returns, which may be after the reply arrived
    while sink.timesync_replies < 1 and time.time() < deadline:
        time.sleep(0.01)
    assert sink.timesync_replies >= 1


# -- what the autopilot tells us -----------------------------------------------------------------


def test_the_autopilot_is_asked_for_the_streams_we_read(sink_factory):
    listener, make = sink_factory
    make(connect=True)
    beat = (m.MAV_TYPE_QUADROTOR, m.MAV_AUTOPILOT_ARDUPILOTMEGA, 0, 0, m.MAV_STATE_STANDBY)
    asked = set()
    deadline = time.time() + 3.0
    while time.time() < deadline and not {30, 33, 24, 242} <= asked:
        msg = _receive(listener, "COMMAND_LONG", action=lambda: listener.mav.heartbeat_send(*beat))
        assert msg.command == m.MAV_CMD_SET_MESSAGE_INTERVAL and msg.target_system == 1
        asked.add(int(msg.param1))
    assert {30, 33, 24, 242} <= asked  # ATTITUDE, GLOBAL_POSITION_INT, GPS_RAW_INT, HOME_POSITION


def test_body_mounted_camera_tilts_backward_when_the_nose_goes_down(sink_factory):
    listener, make = sink_factory
    sink = make(connect=True, mount=CameraMount("body", 90.0))

    def send():
        listener.mav.attitude_send(0, 0.0, math.radians(-10.0), math.radians(-90.0), 0.0, 0.0, 0.0)
        listener.mav.global_position_int_send(0, 0, 0, 0, 120_000, 0, 0, 0, 0)

    telemetry = _feed(
        listener, sink, lambda: (t := sink.telemetry()) and t.yaw is not None and t.altitude and t, send
    )
    # looking 10° behind the vertical: the axis points back (yaw 90 = behind a west-facing nose)
    assert (telemetry.yaw, telemetry.pitch, abs(telemetry.roll)) == pytest.approx((90.0, 80.0, 180.0))
    assert telemetry.altitude == pytest.approx(120.0)


def test_a_gimbal_ignores_the_body_tilt_and_reports_its_own_angles(sink_factory):
    listener, make = sink_factory
    sink = make(connect=True, mount=CameraMount("gimbal", 90.0, yaw=10.0))

    def attitude():
        listener.mav.attitude_send(0, math.radians(8.0), math.radians(-12.0), math.radians(30.0), 0, 0, 0)

    telemetry = _feed(listener, sink, lambda: (t := sink.telemetry()) and t.yaw is not None and t, attitude)
    assert (telemetry.yaw, telemetry.pitch, telemetry.roll) == (pytest.approx(40.0), 90.0, 0.0)

    def mount_status():
        attitude()
        listener.mav.mount_status_send(0, 0, -7000, 200, 500)  # pitch −70°, roll 2°, yaw 5° (cdeg)

    telemetry = _feed(listener, sink, lambda: (t := sink.telemetry()) and t.pitch != 90.0 and t, mount_status)
    assert (telemetry.yaw, telemetry.pitch, telemetry.roll) == pytest.approx((45.0, 70.0, 2.0))


def test_a_gimbal_device_report_gives_pitch_roll_and_its_yaw_from_the_vehicle(sink_factory):
    from geolink_edge.runtime.mount import euler_to_matrix, matrix_to_quaternion

    listener, make = sink_factory
    sink = make(connect=True, mount=CameraMount("gimbal", 90.0))
    # gimbal: 20° right of the nose, 60° below the horizon, 3° of roll; vehicle heading 100°
    q = matrix_to_quaternion(euler_to_matrix(math.radians(20.0), math.radians(-60.0), math.radians(3.0)))

    def send():
        listener.mav.attitude_send(0, 0.1, -0.2, math.radians(100.0), 0, 0, 0)
        listener.mav.gimbal_device_attitude_status_send(0, 0, 0, 0, q, 0, 0, 0, 0)

    telemetry = _feed(listener, sink, lambda: (t := sink.telemetry()) and t.pitch != 90.0 and t, send)
    assert (telemetry.yaw, telemetry.pitch, telemetry.roll) == pytest.approx((120.0, 60.0, 3.0))


def test_the_autopilots_gnss_is_ours_only_when_we_are_not_its_gps(sink_factory):
    listener, make = sink_factory
    ours = make(connect=True)
    shadow = make(send=False)
    _receive(listener, "HEARTBEAT")

    def send():
        listener.mav.gps_raw_int_send(0, 3, 473977000, 85456000, 488_000, 80, 120, 0, 0, 14, 0, 900)

    fix = _feed(listener, shadow, shadow.autopilot_gnss, send)
    assert (fix.lat, fix.lon, fix.alt_msl, fix.h_acc, fix.satellites) == (
        pytest.approx(47.3977),
        pytest.approx(8.5456),
        pytest.approx(488.0),
        pytest.approx(0.9),
        14,
    )
    assert ours.autopilot_gnss() is None  # GPS 1 is what we send


def test_close_stops_every_thread_and_may_be_called_twice(sink_factory):
    _, make = sink_factory
    sink = make()
    threads = list(sink._threads)
    assert threads and all(thread.is_alive() for thread in threads)
    sink.close()
    sink.close()
    assert not any(thread.is_alive() for thread in threads)
    assert sink.link.port.fileno() == -1  # the socket is closed


@pytest.mark.parametrize("url", ["udpout:host", "udpout:1.2.3.4:x", "/dev/ttyTHS1:fast", "bluetooth:1"])
def test_bad_mavlink_urls_are_one_line_errors(url):
    with pytest.raises(GeolinkError, match="--mavlink"):
        parse_url(url)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"target": "px5"}, "--mavlink-target"),
        ({"gps_id": 2}, "--gps-id"),
        ({"rate_hz": 0.0}, "--mavlink-rate"),
        ({"max_track_age_s": 0.0}, "--max-track-age"),
        ({"delay_s": 0.5}, "--mavlink-delay"),
    ],
)
def test_bad_sink_options_are_one_line_errors(kw, message):
    with pytest.raises(GeolinkError, match=message):
        MavlinkSink("udpout:127.0.0.1:9", **kw)


def test_serial_url_carries_the_baud_rate():
    assert parse_url("/dev/ttyTHS1:921600") == ("/dev/ttyTHS1", 921600)


# -- what the autopilot must be set to -----------------------------------------------------------


def _answer_parameters(listener, values: dict[str, float], names: set[str], seconds: float = 3.0) -> set[str]:
    """Play an ArduPilot whose parameters are ``values``: heartbeat, answer each PARAM_REQUEST_READ
    for a parameter it has (others go unanswered, as for a name the firmware lacks), until all of
    ``names`` were asked for; what was asked for."""
    beat = (m.MAV_TYPE_QUADROTOR, m.MAV_AUTOPILOT_ARDUPILOTMEGA, 0, 0, m.MAV_STATE_STANDBY)
    asked = set()
    deadline = time.time() + seconds
    while time.time() < deadline:
        listener.mav.heartbeat_send(*beat)
        msg = listener.recv_match(type="PARAM_REQUEST_READ", blocking=True, timeout=0.2)
        if msg is None:
            continue
        asked.add(msg.param_id)
        if msg.param_id in values:
            listener.mav.param_value_send(msg.param_id.encode(), values[msg.param_id], 9, 0, 0)
        if asked >= names:
            break
    return asked


def test_the_autopilots_parameters_are_read_and_what_is_wrong_is_said(sink_factory, capsys):
    listener, make = sink_factory
    sink = make(home_alt_msl=500.0, connect=True)
    values = {f"EK3_SRC{n}_{a}": 0.0 for n in (1, 2, 3) for a in ("POSXY", "VELXY", "POSZ")}
    values |= {"GPS1_TYPE": 1.0, "EK3_SRC1_POSXY": 3.0, "EK3_SRC1_POSZ": 1.0, "EK3_CHECK_SCALE": 30.0}
    names = set(values) | {"GPS1_DELAY_MS"}
    assert _answer_parameters(listener, values, names) == names
    text = _receive(listener, "STATUSTEXT", seconds=8.0)
    assert text.text == "geolink: check GPS1_TYPE EK3_CHECK_SCALE +1"  # a STATUSTEXT holds 50
    assert text.severity == m.MAV_SEVERITY_WARNING
    assert sink.problems == [
        "GPS1_TYPE 1: not a MAVLink GPS (set 14)",
        "EK3_CHECK_SCALE 30: outside its documented 50-200 (set 100)",
        "GPS1_DELAY_MS not read (another firmware?)",
    ]
    assert "geolink: autopilot: GPS1_TYPE 1: not a MAVLink GPS (set 14)" in capsys.readouterr().err


def test_settings_that_suit_the_target_are_said_to_be_ok_and_a_missing_altitude_is_not(sink_factory):
    listener, make = sink_factory
    sink = make(connect=True)
    values = {f"EK3_SRC{n}_{a}": 0.0 for n in (1, 2, 3) for a in ("POSXY", "VELXY", "POSZ")}
    values |= {"GPS1_TYPE": 14.0, "EK3_SRC1_POSXY": 3.0, "EK3_SRC1_POSZ": 1.0}
    values |= {"EK3_CHECK_SCALE": 100.0, "GPS1_DELAY_MS": 0.0}
    _answer_parameters(listener, values, set(values))
    text = _receive(listener, "STATUSTEXT", seconds=8.0)
    assert text.text == "geolink: no home altitude (--home-alt)"
    assert sink.problems == ["no home altitude: the fix is 2D, which EKF3 ignores (give --home-alt)"]
    sink.problems, sink.home_alt_msl = None, 480.0  # judged again with an altitude: nothing is wrong
    assert _receive(listener, "STATUSTEXT", seconds=8.0).text == "geolink: ardupilot-gps settings OK"


@pytest.mark.parametrize(
    ("target", "values", "expected"),
    [
        (
            "ardupilot-gps",
            {"GPS2_TYPE": 14, "GPS_AUTO_SWITCH": 0},
            ["GPS_AUTO_SWITCH 0: never switches to GPS2 (set 1)"],
        ),
        (
            "ardupilot-gps",
            {"EK3_SRC1_POSXY": 3, "EK3_SRC1_VELXY": 0, "EK3_SRC1_POSZ": 3},
            ["EK3_SRC1_POSZ 3: our height is the autopilot's own (set 1)"],
        ),
        (
            "ardupilot-gps",
            {"EK3_SRC1_POSXY": 3, "EK3_SRC1_VELXY": 3},
            ["EK3_SRC1_VELXY 3: it reuses a velocity we withhold (set 0)"],
        ),
        # a GNSS receiver first (set 1), then us without velocity (set 2): nothing is wrong
        (
            "ardupilot-gps",
            {"GPS2_TYPE": 14, "GPS_AUTO_SWITCH": 1, "EK3_SRC1_POSXY": 3, "EK3_SRC1_VELXY": 3}
            | {"EK3_SRC2_POSXY": 3, "EK3_SRC2_VELXY": 0},
            [],
        ),
        (
            "ardupilot-odometry",
            {"VISO_TYPE": 1, "EK3_SRC1_POSXY": 6, "EK3_SRC1_VELXY": 6, "VISO_DELAY_MS": 10},
            ["EK3_SRC1_VELXY 6: our velocity weighed at 0.1 m/s (set 0)"],
        ),
        (
            "ardupilot-odometry",
            {"VISO_DELAY_MS": 50},
            ["VISO_DELAY_MS 50: positions reach it 5 ms old (set 5)"],
        ),
        (
            "ardupilot-odometry",
            {"VISO_QUAL_MIN": -1},
            ["VISO_QUAL_MIN -1: -1 feeds it our 'no position', >0 drops fixes (set 0)"],
        ),
        ("ardupilot-odometry", {"VISO_TYPE": 1, "VISO_QUAL_MIN": 0}, []),
        ("px4-odometry", {"EKF2_EV_CTRL": 5}, []),
        (
            "px4-odometry",
            {"EKF2_EV_CTRL": 2},
            [
                "EKF2_EV_CTRL 2: no vision position (set bit 0)",
                "EKF2_EV_CTRL 2: our height/yaw echo PX4's (clear bits 1, 3)",
            ],
        ),
    ],
)
def test_each_target_judges_the_parameters_it_needs(target, values, expected):
    output = make_output(target, 1 if "GPS2_TYPE" in values else 0)
    assert set(values) <= set(output.parameters())
    assert output.problems({k: float(v) for k, v in values.items()}, 0.0) == expected


def test_the_attitude_of_a_frame_is_the_one_at_its_capture(sink_factory):
    """4 s of ATTITUDE reports (20 Hz by the autopilot's clock) of a vehicle yawing at 30°/s: the
    attitude asked for at two times 1 s apart differs by the 30° turned between them, not by what
    arrived last."""
    listener, make = sink_factory
    sink = make(connect=True)
    for i in range(80):
        yaw = math.radians(-100.0 + 30.0 * i * 0.05)
        listener.mav.attitude_send(5000 + 50 * i, 0.0, 0.0, yaw, 0.0, 0.0, 0.0)
    _feed(
        listener,
        sink,
        lambda: (a := sink.body_attitude()) and a.yaw > math.radians(15.0) or None,
        lambda: None,
    )
    now = time.time()  # the newest report's time, or a little after it
    earlier, later = sink.body_attitude(now - 2.0), sink.body_attitude(now - 1.0)
    assert math.degrees(later.yaw - earlier.yaw) == pytest.approx(30.0, abs=1e-3)
    assert math.degrees(sink.body_attitude().yaw) == pytest.approx(-100.0 + 30.0 * 79 * 0.05, abs=1e-3)
