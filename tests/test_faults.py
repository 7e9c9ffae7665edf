"""Faults in flight: a flaky camera that drops, corrupts and loses frames for 5 s, and a log cut by a crash.

Training killed mid-epoch and resumed is covered by tests/test_train.py (SIGKILL then --resume).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from _flaky_camera import FlakyCamera
from _runtime_fixtures import MAX_SENT_ERROR_M, synthetic_flight_world

from geolink_edge.runtime import loop
from geolink_edge.runtime.sinks import JsonlSink
from geolink_edge.runtime.sources import Capture, SimReader

FLIGHT_FRAMES = 32
OUTAGE_S = 5.0
UNPLUG_AT_READ = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_onnx):
    """A synthetic flight long enough to lose 5 s of it, and the index of its area."""
    return synthetic_flight_world(tmp_path_factory.mktemp("fault_world"), tiny_onnx, FLIGHT_FRAMES)


def flaky_camera(flight) -> FlakyCamera:
    """The sim flight as a live camera that misbehaves on a fixed schedule of reads.

    Every 10th frame never arrives (10 % dropped), every 6th fails to decode, every 8th is a
    truncated buffer, every 7th decodes to noise; once, the cable comes out for ``OUTAGE_S``
    seconds of wall time, and the frames of those seconds are lost like in the air.
    """
    faults = {
        "unplug": lambda n: n == UNPLUG_AT_READ,
        "drop": lambda n: n % 10 == 0,
        "corrupt": lambda n: n % 6 == 0,
        "truncated": lambda n: n % 8 == 0,
        "noise": lambda n: n % 7 == 0,
    }
    return FlakyCamera(SimReader(flight), faults, outage_s=OUTAGE_S)


@pytest.fixture(scope="module")
def flaky_flight(world, tmp_path_factory):
    """Run the loop on the flaky camera, logging like ``run --log`` does; the run is then 'killed'."""
    from geolink_edge.backends import load_embedder
    from geolink_edge.runtime.retrieval import open_index

    flight, index_dir, model = world
    embedder = load_embedder(model)
    reader = flaky_camera(flight)
    conf = loop.RunConf(realtime=False)
    pipeline = loop.Pipeline(
        embedder,
        open_index(index_dir, embedder.card, model),
        conf,
        loop.resolve_intrinsics(None, reader.source),
    )
    log = tmp_path_factory.mktemp("fault_log") / "flight.jsonl"
    sink = JsonlSink(log)  # never closed: no summary line, as after a crash
    records = []

    def on_record(record, _summary):
        records.append(record)
        sink.write(record)

    capture = Capture(reader, drop=False, backoff_s=(0.05, 0.5))
    started = time.monotonic()
    with capture:
        summary = loop.run_frames(pipeline, capture, conf, on_record)
    return reader, capture, summary, records, log, time.monotonic() - started


def test_flaky_camera_loop_survives_and_reconnects(flaky_flight):
    reader, capture, summary, records, _, wall_s = flaky_flight
    assert capture.reconnects == 1 and capture.ended
    assert wall_s >= OUTAGE_S  # the camera really was gone for the whole outage
    assert capture.corrupt >= 3  # decode failures and truncated buffers, skipped
    assert summary.frames == len(records) >= 0.5 * FLIGHT_FRAMES
    before, after = reader.outage_t
    assert not any(before < r["t_sensor"] < after for r in records)
    # the loop localizes again after the camera comes back
    assert sum(r["status"] == "accepted" and r["t_sensor"] > after for r in records) >= 3


def test_flaky_camera_never_emits_nan_or_an_ungated_fix(flaky_flight):
    reader, _, _, records, _, _ = flaky_flight
    assert reader.noise_t
    for record in records:
        json.dumps(record, allow_nan=False, default=lambda o: o.tolist())  # raises on NaN or inf
        if "estimate" in record:
            assert record["status"] == "accepted"
            assert np.isfinite([record["estimate"]["lat"], record["estimate"]["lon"]]).all()
            assert record["error_m"] <= MAX_SENT_ERROR_M
        if record["t_sensor"] in reader.noise_t:
            assert "estimate" not in record, record["status"]


def test_log_cut_by_a_crash_is_readable_up_to_the_last_whole_frame(flaky_flight, tmp_path):
    from geolink_edge.errors import GeolinkError
    from geolink_edge.runtime.sinks import read_flight_log

    _, _, _, records, log, _ = flaky_flight
    data = log.read_bytes()
    last_line_start = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: last_line_start + (len(data) - last_line_start) // 2])
    frames, summary = read_flight_log(cut)
    assert summary == {}
    assert [f["frame"] for f in frames] == [r["frame"] for r in records[:-1]]
    assert frames[-1]["t_sensor"] == records[-2]["t_sensor"]
    # a broken line in the middle is damage, not a crash: named, not skipped
    lines = data.decode().splitlines()
    lines[1] = lines[1][:10]
    cut.write_text("\n".join(lines) + "\n")
    with pytest.raises(GeolinkError, match=r"cut\.jsonl:2"):
        read_flight_log(cut)
