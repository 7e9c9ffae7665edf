"""What keeps a flight going: the log that never overwrites, events told once per kind, the camera
watch, a clean stop on SIGTERM — and the recording clock that turns a hole in a flight into an outage."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from geolink_edge.errors import describe
from geolink_edge.runtime.health import SEVERITY, CameraWatch, Events, Stop, stop_on_signals
from geolink_edge.runtime.sinks import JsonlSink
from geolink_edge.runtime.sources import Capture, RawFrame


def test_log_is_never_overwritten_and_is_synced(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    first = JsonlSink(tmp_path / "flight.jsonl", fsync_s=0.0)
    first.write({"frame": 0})
    assert len(synced) == 1  # every write synced when fsync_s is 0
    first.close({"frames": 1})
    second, third = JsonlSink(tmp_path / "flight.jsonl"), JsonlSink(tmp_path / "flight.jsonl")
    assert (second.path.name, third.path.name) == ("flight.1.jsonl", "flight.2.jsonl")
    assert second.requested == tmp_path / "flight.jsonl"
    second.close()
    third.close()
    lines = (tmp_path / "flight.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"frame": 0}, {"summary": {"frames": 1}}]
    assert len(synced) == 5  # and once more at every close


def test_events_are_logged_always_and_told_once_per_kind_and_interval():
    written, told = [], []
    events = Events(write=written.append, statustext=lambda text, sev: told.append((text, sev)), repeat_s=60)
    events("camera_lost", "camera lost: cable out", "error")
    events("camera_lost", "camera lost: cable out", "error")
    events("frame_error", "frame failed: error: bad", "error")
    events("fix_lost", "fix lost", "warning", tell=False)
    assert [w["event"] for w in written] == ["camera_lost", "camera_lost", "frame_error", "fix_lost"]
    assert told == [
        ("geolink: camera lost: cable out", SEVERITY["error"]),
        ("geolink: frame failed: error: bad", SEVERITY["error"]),
    ]
    assert events.counts == {"camera_lost": 2, "frame_error": 1, "fix_lost": 1}


def test_a_failing_sink_is_counted_not_raised():
    def broken(*_):
        raise OSError(28, "No space left on device")

    events = Events(write=broken, show=broken, statustext=broken)
    events("camera_lost", "camera lost", "error")
    assert events.sink_errors == 3 and events.counts == {"camera_lost": 1}


def test_camera_watch_reports_a_loss_once_and_the_return_with_its_length():
    written = []
    watch = CameraWatch(Events(write=written.append), lost_after_s=0.05)
    watch.idle("cable out")  # too soon: nothing yet
    time.sleep(0.08)
    watch.idle("cable out")
    watch.idle("cable out")
    time.sleep(0.05)
    watch.frame()
    assert [w["event"] for w in written] == ["camera_lost", "camera_regained"]
    assert written[0]["text"] == "camera lost: cable out"
    assert 0.12 <= written[1]["gap_s"] < 1.0 and watch.totals()["outages"] == 1
    assert watch.totals()["outage_s"] == pytest.approx(written[1]["gap_s"])


def test_sigterm_sets_the_stop_flag_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    stop = Stop()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2.0) and stop.reason == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_describe_is_one_line_even_for_an_empty_message():
    assert describe(ValueError("first\nsecond")) == "ValueError: first"
    assert describe(RuntimeError()) == "RuntimeError"
    assert len(describe(ValueError("x" * 500))) == 160


class Recording:
    """A recorded source with its own clock: frames at 0, 0.1, 0.2 s, then a hole until 0.8 s."""

    live = False
    fps = 10.0
    times = [0.0, 0.1, 0.2, 0.8, 0.9]

    def __init__(self):
        self.i = 0

    def open(self):
        pass

    def read(self):
        if self.i >= len(self.times):
            return None
        self.i += 1
        return RawFrame(np.full((32, 32, 3), self.i, np.uint8), timestamp=self.times[self.i - 1])

    def close(self):
        pass


def test_a_recording_plays_at_its_own_clock_so_a_hole_is_an_outage():
    arrivals = []
    with Capture(Recording(), drop=False) as capture:
        while (frame := capture.get(timeout=2.0)) is not None:
            arrivals.append(frame.t_mono)
    gaps = np.diff(arrivals)
    assert len(arrivals) == 5
    assert gaps[2] == pytest.approx(0.6, abs=0.08) and max(gaps[[0, 1, 3]]) < 0.2


class Stalled:
    """A live camera whose read blocks (an RTSP grab on a dead stream) until released."""

    live = True
    fps = None

    def __init__(self):
        self.release = threading.Event()
        self.closed = False

    def open(self):
        pass

    def read(self):
        self.release.wait(10.0)
        raise ConnectionError("stream gone")

    def close(self):
        self.closed = True


def test_a_stalled_camera_never_blocks_the_consumer_and_is_closed_by_its_thread():
    camera = Stalled()
    capture = Capture(camera, backoff_s=(0.01, 0.01))
    capture.start()
    t0 = time.monotonic()
    assert capture.get(timeout=0.2) is None and not capture.ended
    assert time.monotonic() - t0 < 5.0  # never waits on the read the camera holds for 10 s
    assert capture.stop(timeout_s=0.1) is False  # still inside the driver's read
    assert not camera.closed  # never closed under a read in progress
    camera.release.set()
    assert capture.stop(timeout_s=2.0) is True
    assert camera.closed and capture.last_error == "ConnectionError: stream gone"
