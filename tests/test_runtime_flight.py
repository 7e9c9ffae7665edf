"""End to end on a small synthetic flight: run, locate, model check, faults — real index, real model."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from geolink_edge.errors import GeolinkError
from geolink_edge.runtime import loop
from geolink_edge.runtime.sources import Capture, CorruptFrame, RawFrame, SimReader, SourceLost

FLIGHT_FRAMES = 16
# Bounds for this 16-frame, 2 fps nadir flight at 60 m over a 192 m area, tiny random encoder.
MAX_MEDIAN_ERROR_M = 3.0
MIN_FIX_RATE = 0.85
MAX_SENT_ERROR_M = 50.0


def build_index(ortho, model, out):
    from geolink_edge.index.build import BuildConfig, main

    # the tiny model's card has no training tile size: tiles as wide as a frame's footprint
    return main(BuildConfig(tile_m=80.0, workers=1), model, out, ortho=[ortho])


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_onnx):
    from geolink_edge.data.synthetic import writer

    root = tmp_path_factory.mktemp("flight_world")
    conf = writer.SynthConfig(
        locations=2, views=1, size=64, flight_frames=FLIGHT_FRAMES, area_px=1024, workers=1
    )
    writer.main(conf, root / "synth")
    flight = root / "synth" / "flight"
    area = json.loads((flight / "flight.json").read_text())["area"]
    index = build_index(root / "synth" / "areas" / area / "ortho.tif", tiny_onnx, root / "index")
    return flight, index, tiny_onnx


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strict_json(line: str):
    def refuse(name):
        raise ValueError(f"{name} in the log")

    return json.loads(line, parse_constant=refuse)


def test_sim_flight_is_localized_and_sent_over_mavlink(world, tmp_path):
    os.environ["MAVLINK20"] = "1"
    from pymavlink import mavutil

    flight, index, model = world
    port = _free_port()
    listener = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}")
    log = tmp_path / "flight.jsonl"
    conf = loop.RunConf(realtime=False)
    try:
        summary = loop.main(
            conf, f"sim://{flight}", model, index, mavlink=f"udpout:127.0.0.1:{port}", log=log, console=False
        )
        received = []
        deadline = time.time() + 2.0
        while time.time() < deadline:
            msg = listener.recv_match(type="GPS_INPUT", blocking=True, timeout=0.2)
            if msg is not None:
                received.append(msg)
    finally:
        listener.close()
    records = [_strict_json(line) for line in log.read_text().splitlines()]
    frames, last = records[:-1], records[-1]["summary"]
    assert last == summary and summary["frames"] == FLIGHT_FRAMES == len(frames)
    assert summary["fix_rate"] >= MIN_FIX_RATE, summary
    assert summary["error_m"]["median"] <= MAX_MEDIAN_ERROR_M, summary
    sent = [r for r in frames if r.get("sent")]
    assert len(sent) == summary["accepted"] == summary["mavlink_sent"]
    assert max(r["error_m"] for r in sent) <= MAX_SENT_ERROR_M
    assert all(r["status"] == "accepted" for r in sent)
    # the sim flight reports attitude and height, and comes with intrinsics: the position votes decide
    assert {r["fix"]["consensus"] for r in frames} == {"votes"}
    assert all(set(r["latency_ms"]) >= {"embed", "search", "verify", "filter", "total"} for r in frames)
    # what the autopilot decoded is the logged estimate
    assert len(received) >= 0.8 * len(sent)
    by_lat = {round(r["estimate"]["lat"] * 1e7): r for r in sent}
    for msg in received:
        assert msg.fix_type == 3 and msg.lat in by_lat
        truth = by_lat[msg.lat]["truth"]
        assert math.hypot((msg.lat / 1e7 - truth["lat"]) * 111e3, 0) < MAX_SENT_ERROR_M


class FaultyFlight(SimReader):
    """The sim flight as a flaky live camera: corrupt frames every 5th read, unplugged once."""

    live = True

    def __init__(self, flight):
        super().__init__(flight)
        self.reads = 0
        self.unplugged = False

    def read(self):
        self.reads += 1
        if self.reads % 5 == 0:
            raise CorruptFrame("bad JPEG")
        if self.reads % 7 == 0:
            return RawFrame(np.full((8, 8, 3), 255, np.uint8))  # a truncated buffer
        if self.reads == 11 and not self.unplugged:
            self.unplugged = True
            raise SourceLost("cable out")
        raw = super().read()
        if raw is not None and self.reads % 9 == 0:
            raw.image = raw.image.copy()
            raw.image[::2] = 0  # torn frame: decodes, but half the rows are black
        return raw


def test_faults_do_not_stop_the_loop_and_no_nan_leaves_it(world):
    from geolink_edge.backends import load_embedder
    from geolink_edge.runtime.locate import open_index

    flight, index_dir, model = world
    embedder = load_embedder(model)
    index = open_index(index_dir, embedder.card, model)
    reader = FaultyFlight(flight)
    conf = loop.RunConf(realtime=False, max_frames=10)
    pipeline = loop.Pipeline(embedder, index, conf, loop.resolve_intrinsics(None, reader))
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


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "geolink_edge.cli", *map(str, args)], capture_output=True, text=True
    )


def test_locate_a_crop_of_a_tile_returns_that_tile(world, tmp_path):
    from geolink_edge.index.search import TileIndex

    _, index_dir, model = world
    index = TileIndex.load(index_dir)
    tile = index.tiles[len(index.tiles) // 2]
    crop = index.tile_image(tile.id)
    h, w = crop.shape[:2]
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), crop[h // 5 : h - h // 5, w // 5 : w - w // 5])  # the middle 60 %
    result = _cli("locate", photo, "--model", model, "--index", index_dir)
    assert result.returncode == 0, result.stderr
    fix = json.loads(result.stdout)
    assert fix["ok"], fix
    assert math.hypot(fix["x"] - tile.center_xy[0], fix["y"] - tile.center_xy[1]) < 2.0
    assert abs(fix["lat"] - tile.center_lat) < 3e-5 and fix["inliers"] >= 15


def test_run_refuses_an_index_of_another_model(world, tmp_path):
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
    result = _cli(
        "run", "--camera", f"sim://{flight}", "--model", other_path, "--index", index_dir, "--quiet"
    )
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "ffffffffffff" in line and str(index_dir) in line and "other.onnx" in line


def test_bad_options_are_one_line_errors(world):
    flight, index_dir, model = world
    for args, message in [
        (("--altitude", "-5"), "--altitude"),
        (("--max-frames", "0"), "--max-frames"),
        (("--mavlink", "udpout:nowhere"), "--mavlink"),
    ]:
        result = _cli(
            "run", "--camera", f"sim://{flight}", "--model", model, "--index", index_dir, "--quiet", *args
        )
        assert result.returncode == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0
    with pytest.raises(GeolinkError, match="no such camera"):
        loop.main(loop.RunConf(), "/nonexistent/video.mp4", model, index_dir, console=False)
