"""End to end on a small synthetic flight: run, locate, model check, faults — real index, real model."""

from __future__ import annotations

import json
import math
import socket
import threading
import time

import cv2
import numpy as np
import pytest
from _flaky_camera import FlakyCamera
from _runtime_fixtures import MAX_SENT_ERROR_M

from geolink_edge.errors import GeolinkError
from geolink_edge.geo import haversine_m
from geolink_edge.runtime import conf_yaml, loop
from geolink_edge.runtime.sources import Capture, SimReader

FLIGHT_FRAMES = 16
# Bounds for this 16-frame, 2 fps nadir flight at 60 m over a 192 m area, tiny random encoder.
MAX_MEDIAN_ERROR_M = 3.0
MIN_FIX_RATE = 0.85


@pytest.fixture(scope="module")
def world(flight_world):
    return flight_world


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strict_json(line: str):
    def refuse(name):
        raise ValueError(f"{name} in the log")

    return json.loads(line, parse_constant=refuse)


class _Listener:
    """Every GPS_INPUT sent to a loopback port, drained on its own thread while the flight runs, so
    that however slow the run, none waits in the socket's buffer."""

    def __init__(self, port: int):
        from pymavlink import mavutil

        self.link = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}")
        self.received: list = []
        self.last_heard = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            msg = self.link.recv_match(type="GPS_INPUT", blocking=True, timeout=0.2)
            if msg is not None:
                self.received.append(msg)
                self.last_heard = time.monotonic()

    def close(self, quiet_s: float = 1.0) -> list:
        """Stop once nothing came for ``quiet_s`` (the sender has closed); what was received."""
        while time.monotonic() - self.last_heard < quiet_s:
            time.sleep(0.1)
        self._stop.set()
        self._thread.join()
        self.link.close()
        return self.received


def test_sim_flight_is_localized_and_sent_over_mavlink(world, tmp_path, monkeypatch):
    monkeypatch.setenv("MAVLINK20", "1")
    flight, index, model = world
    port = _free_port()
    listener = _Listener(port)
    log = tmp_path / "flight.jsonl"
    conf = loop.RunConf(realtime=False)  # unpaced: every frame is processed, however slow the CPU
    try:
        summary = loop.main(
            conf,
            f"sim://{flight}",
            model,
            index,
            mavlink={"url": f"udpout:127.0.0.1:{port}"},
            log=log,
            console=False,
        )
    finally:
        received = listener.close()
    records = [_strict_json(line) for line in log.read_text().splitlines()]
    frames, last = [r for r in records[:-1] if "status" in r], records[-1]["summary"]
    assert records[0] == {"config": conf_yaml.to_dict(conf)}  # the settings it ran with, first
    assert last == summary and summary["frames"] == FLIGHT_FRAMES == len(frames)
    assert summary["log"] == str(log) and summary["stopped_by"] is None
    assert summary["fix_rate"] >= MIN_FIX_RATE, summary
    assert summary["error_m"]["median"] <= MAX_MEDIAN_ERROR_M, summary
    accepted = [r for r in frames if r["status"] == "accepted"]
    assert len(accepted) == summary["accepted"] and summary["mavlink_refused"] == 0
    assert set(summary["autopilot_delay"]["suggested"]) == {"--mavlink-delay", "GPS1_DELAY_MS"}
    assert max(r["error_m"] for r in accepted) <= MAX_SENT_ERROR_M
    # the sim flight reports attitude and height, and comes with intrinsics: the position votes decide
    assert {r["fix"]["consensus"] for r in frames} == {"votes"}
    assert all(set(r["latency_ms"]) >= {"embed", "search", "verify", "filter", "total"} for r in frames)
    # the stream sent the track's prediction at its fixed rate: 2D fixes (no autopilot altitude)
    # near the flown path, "no fix" while there was no track
    positions = [msg for msg in received if msg.fix_type == 2]
    assert len(positions) == summary["mavlink_sent"] >= 1 and {msg.fix_type for msg in received} <= {1, 2}
    path = np.array([(r["truth"]["lat"], r["truth"]["lon"]) for r in frames])
    for msg in positions:
        north = (path[:, 0] - msg.lat / 1e7) * 111_320.0
        east = (path[:, 1] - msg.lon / 1e7) * 111_320.0 * math.cos(math.radians(path[0, 0]))
        assert np.min(np.hypot(north, east)) < MAX_SENT_ERROR_M


def test_faults_do_not_stop_the_loop_and_no_nan_leaves_it(world):
    from geolink_edge.backends import load_embedder
    from geolink_edge.runtime.retrieval import open_index

    flight, index_dir, model = world
    embedder = load_embedder(model)
    index = open_index(index_dir, embedder.card, model)
    faults = {  # corrupt frames every 5th read, unplugged once; each fault holds its frame back
        "unplug": lambda n: n == 11,
        "corrupt": lambda n: n % 5 == 0,
        "truncated": lambda n: n % 7 == 0,
        "torn": lambda n: n % 9 == 0,
    }
    reader = FlakyCamera(SimReader(flight), faults, costs_frame=False)
    conf = loop.RunConf(realtime=False, max_frames=10)
    pipeline = loop.Pipeline(embedder, index, conf, loop.resolve_intrinsics(None, reader.source))
    records = []
    capture = Capture(reader, drop=False, backoff_s=(0.01, 0.05))
    with capture:
        summary = loop.run_frames(pipeline, capture, conf, lambda record, _: records.append(record))
    assert capture.reconnects == 1 and capture.corrupt >= 4
    assert summary.frames == len(records) == 10
    assert summary.accepted >= 0.6 * summary.frames
    for record in records:
        json.dumps(record, allow_nan=False, default=lambda o: o.tolist())  # raises on NaN or inf
        if "estimate" in record:
            assert record["status"] == "accepted"


def test_locate_a_crop_of_a_tile_returns_that_tile(cli, world, tmp_path):
    from geolink_edge.index.search import TileIndex

    _, index_dir, model = world
    index = TileIndex.load(index_dir)
    tile = index.tiles[len(index.tiles) // 2]
    crop = index.tile_image(tile.id)
    h, w = crop.shape[:2]
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), crop[h // 5 : h - h // 5, w // 5 : w - w // 5])  # the middle 60 %
    # no time limit: what it finds must not depend on how busy the machine is
    result = cli("locate", photo, "--model", model, "--index", index_dir, "--budget", "inf")
    assert result.returncode == 0, result.stderr
    fix = json.loads(result.stdout)
    assert fix["ok"], fix
    assert math.hypot(fix["x"] - tile.center_xy[0], fix["y"] - tile.center_xy[1]) < 2.0
    assert abs(fix["lat"] - tile.center_lat) < 3e-5 and fix["inliers"] >= 15


def test_locate_with_the_cameras_attitude_votes_for_the_position(cli, world):
    """One flight frame, told its camera heading, pitch, roll and height: the votes place it."""
    import csv

    flight, index_dir, model = world
    row = list(csv.DictReader((flight / "gt.csv").open()))[FLIGHT_FRAMES // 2]
    photo = flight / "frames" / f"{int(row['frame']):06d}.jpg"
    attitude = [
        f"--{name}={row[key]}" for name, key in (("heading", "yaw"), ("pitch", "pitch"), ("roll", "roll"))
    ]
    result = cli(
        "locate", photo, "--model", model, "--index", index_dir, "--intrinsics", flight / "camera.yaml",
        *attitude, "--altitude", row["alt"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fix = json.loads(result.stdout)
    assert fix["ok"] and fix["consensus"] == "votes", fix
    assert haversine_m(fix["lat"], fix["lon"], float(row["lat"]), float(row["lon"])) < MAX_MEDIAN_ERROR_M


def test_run_refuses_an_index_of_another_model(cli, world, tmp_path):
    import onnx

    flight, index_dir, model = world
    other = onnx.load(str(model))
    for prop in other.metadata_props:
        if prop.key == "geolink_model_card":
            card = json.loads(prop.value)
            card["weights_hash"] = "f" * 64
            prop.value = json.dumps(card)
    other_path = tmp_path / "other.onnx"
    onnx.save(other, str(other_path))
    result = cli("run", "--camera", f"sim://{flight}", "--model", other_path, "--index", index_dir, "--quiet")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "ffffffffffff" in line and str(index_dir) in line and "other.onnx" in line


def test_bad_options_are_one_line_errors(cli, world):
    flight, index_dir, model = world
    for args, message in [
        (("--altitude", "-5"), "--altitude"),
        (("--max-frames", "0"), "--max-frames"),
        (("--mavlink", "udpout:nowhere"), "--mavlink"),
    ]:
        result = cli(
            "run", "--camera", f"sim://{flight}", "--model", model, "--index", index_dir, "--quiet", *args
        )
        assert result.returncode == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0
    with pytest.raises(GeolinkError, match="no such camera"):
        loop.main(loop.RunConf(), "/nonexistent/video.mp4", model, index_dir, console=False)


def _failing_every(n: int, monkeypatch):
    """Make every ``n``-th verification raise the way OpenCV does on a bad buffer."""
    from geolink_edge.runtime.locate import Locator

    real, calls = Locator.locate, {"n": 0}

    def locate(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] % n == 0:
            raise cv2.error("OpenCV(5.0) error: (-215:Assertion failed) !_src.empty()")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Locator, "locate", locate)


def test_frames_that_raise_are_logged_and_the_flight_goes_on(world, tmp_path, monkeypatch):
    flight, index, model = world
    _failing_every(4, monkeypatch)
    log = tmp_path / "flight.jsonl"
    log.write_text("the log of an earlier flight\n")
    summary = loop.main(loop.RunConf(realtime=False), f"sim://{flight}", model, index, log=log, console=False)
    assert log.read_text() == "the log of an earlier flight\n"  # never overwritten
    written = tmp_path / "flight.1.jsonl"
    assert summary["log"] == str(written)
    records = [_strict_json(line) for line in written.read_text().splitlines()]
    frames = [r for r in records if "status" in r]
    events = [r for r in records if "event" in r]
    failed = [r for r in frames if r["status"] == "error"]
    assert summary["frames"] == len(frames) == FLIGHT_FRAMES
    assert len(failed) == summary["frame_errors"]["count"] == FLIGHT_FRAMES // 4
    assert all(r["error"].startswith("error: OpenCV(5.0) error") for r in failed)
    assert sum(e["event"] == "frame_error" for e in events) == len(failed)
    # the frames between the failures still localize
    assert summary["accepted"] >= MIN_FIX_RATE * (FLIGHT_FRAMES - len(failed)) - 2, summary


def test_bench_keeps_its_figures_when_a_frame_raises(world, monkeypatch):
    flight, index, model = world
    _failing_every(5, monkeypatch)
    result = loop.bench(loop.RunConf(), f"sim://{flight}", model, index, frames=20)
    assert result["frames"] == 20 and result["frame_errors"]["count"] == 4
    assert result["errors"] == ["error: OpenCV(5.0) error: (-215:Assertion failed) !_src.empty() (4×)"]
    assert result["latency_ms"]["embed"]["median"] > 0 and result["accepted"] >= 10


def test_warm_start_and_shadow_errors_from_the_autopilot_gnss(world):
    """With the autopilot's GNSS at the true position, the track starts there (the first frame is
    already accepted, no two-fix acquisition) and every record measures us against that GNSS."""
    from geolink_edge.runtime.backends import load_embedder
    from geolink_edge.runtime.health import Events
    from geolink_edge.runtime.retrieval import open_index
    from geolink_edge.runtime.sources import Frame, GnssFix

    flight, index_dir, model = world
    embedder = load_embedder(model)
    reader = SimReader(flight)
    events: list[dict] = []
    current: dict = {}

    def gnss():  # GPS_RAW_INT of a receiver that is right where the drone is
        truth = current["truth"]
        return GnssFix(time.time(), truth.lat, truth.lon, 500.0, 1.5, 3, 12)

    pipeline = loop.Pipeline(
        embedder,
        open_index(index_dir, embedder.card, model),
        loop.RunConf(),
        loop.resolve_intrinsics(None, reader),
        events=Events(write=events.append),
        gnss=gnss,
    )
    records = []
    for i in range(4):
        raw = reader.read()
        current["truth"] = raw.truth
        now = time.time()
        frame = Frame(raw.image, i, now, raw.timestamp, time.monotonic(), raw.truth, raw.telemetry)
        records.append(pipeline.run(frame))
    assert [e["event"] for e in events][:2] == ["warm_start", "fix_acquired"]
    assert records[0]["status"] == "accepted" and "estimate" in records[0]
    for record in records:
        assert record["gnss"]["satellites"] == 12
        if "estimate" in record:  # the GNSS is the truth here, so both errors agree
            assert record["gnss_error_m"] == pytest.approx(record["error_m"], abs=1e-6)
            assert record["gnss_error_m"] <= MAX_SENT_ERROR_M
        if record["fix"]["ok"]:
            assert record["fix_gnss_error_m"] == pytest.approx(record["fix_error_m"], abs=1e-6)
