"""Camera sources: URI schemes, newest-frame-only capture, corrupt frames, reconnection."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from _flaky_camera import FlakyCamera

from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.sources import (
    Capture,
    FolderReader,
    RawFrame,
    gstreamer_available,
    open_reader,
)


def _folder(tmp_path, n=6, corrupt=(2, 4)):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = tmp_path / f"{i:03d}.jpg"
        if i in corrupt:
            path.write_bytes(b"\xff\xd8 not really a jpeg")
        else:
            cv2.imwrite(str(path), np.full((48, 64, 3), i * 10, np.uint8))
    return tmp_path


def _drain(capture: Capture) -> list:
    frames = []
    while (frame := capture.get(timeout=5.0)) is not None:
        frames.append(frame)
    return frames


def test_folder_skips_and_counts_corrupt_frames(tmp_path):
    with Capture(FolderReader(_folder(tmp_path)), realtime=False) as capture:
        frames = _drain(capture)
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 10, 30, 50]
    assert capture.corrupt == 2 and capture.dropped == 0
    assert all(b.t_capture >= a.t_capture for a, b in zip(frames, frames[1:], strict=False))


class NumberedFrames:
    """A live camera's frames, numbered 1, 2, ... in their pixel values."""

    live = True
    fps = None

    def __init__(self, frames: int):
        self.n, self.i = frames, 0

    def open(self):
        pass

    def read(self):
        if self.i >= self.n:
            return None
        self.i += 1
        time.sleep(0.002)
        return RawFrame(np.full((32, 32, 3), self.i % 256, np.uint8))

    def close(self):
        pass


def test_capture_survives_unplugging_and_garbage(tmp_path):
    # unplugged twice, the first reopen after each fails too; every 7th buffer is empty
    faults = {"unplug": lambda n: n in (10, 25), "truncated": lambda n: n % 7 == 0}
    camera = FlakyCamera(NumberedFrames(40), faults, failed_opens=(2, 4))
    with Capture(camera, drop=False, backoff_s=(0.01, 0.05)) as capture:
        frames = _drain(capture)
    assert capture.reconnects == 2 and camera.opens == 5
    assert capture.corrupt == 5  # frames 7, 14, 21, 28, 35
    assert len(frames) == 40 - 2 - 5
    assert capture.last_error == "frame with an invalid buffer"  # frame 35, after the last reopen


def test_slow_consumer_gets_the_newest_frame():
    camera = NumberedFrames(300)
    with Capture(camera) as capture:
        seen = []
        for _ in range(5):
            frame = capture.get(timeout=5.0)
            seen.append(int(frame.image[0, 0, 0]))
            time.sleep(0.05)  # a slow pipeline
        newest = camera.i
    assert capture.dropped > 20
    assert all(b - a >= 5 for a, b in zip(seen, seen[1:], strict=False))  # stale frames were skipped
    assert newest - seen[-1] < 40  # what the consumer got was recent


def test_uri_schemes(tmp_path):
    folder = _folder(tmp_path / "imgs", corrupt=())
    assert isinstance(open_reader(str(folder)), FolderReader)
    assert isinstance(open_reader(f"file://{folder}"), FolderReader)
    reader = open_reader("v4l2:///dev/video3", 640, 480, 15)
    assert (reader.target, reader.api, reader.live, reader.size) == (3, cv2.CAP_V4L2, True, (640, 480))
    assert open_reader("/dev/video0").target == 0
    assert open_reader("rtsp://10.0.0.2/stream").live
    if not gstreamer_available():
        with pytest.raises(GeolinkError, match="no GStreamer"):
            open_reader("csi://0")
    with pytest.raises(GeolinkError, match="no such camera"):
        open_reader(str(tmp_path / "missing.mp4"))
    with pytest.raises(GeolinkError, match=r"unknown camera scheme 'udp' \(choose from sim, csi, rtsp, "):
        open_reader("udp://10.0.0.2:5600")
    with pytest.raises(GeolinkError, match="not a synthetic flight"):
        open_reader(f"sim://{tmp_path}")
    with pytest.raises(GeolinkError, match="positive"):
        open_reader("/dev/video0", width=-1)


def test_video_file_plays_to_the_end(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(12):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    reader = open_reader(str(path))
    with Capture(reader, realtime=False) as capture:
        frames = _drain(capture)
    assert len(frames) == 12 and reader.fps == pytest.approx(10.0)
