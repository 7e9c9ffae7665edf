"""Camera sources chosen by URI, and a capture thread that keeps only the newest frame.

Schemes: ``/dev/videoN`` or ``v4l2:///dev/videoN`` (OpenCV V4L2), ``csi://N`` (Jetson CSI camera
through a GStreamer pipeline), ``rtsp://…``, ``file://video.mp4`` or a plain path to a video, a
folder of images, and ``sim://FLIGHT_DIR`` (a synthetic flight: frames played at the flight's
frame rate with ground truth and the attitude an autopilot would report).

A reader only reads; :class:`Capture` owns the thread: it timestamps each frame when it is read,
skips and counts corrupt frames, reopens a lost camera with exponential backoff (forever: a drone
in the air never gives its camera up) and, for live cameras, overwrites the frame nobody took yet
so a slow pipeline never works on stale images. Network streams open and read with timeouts, and
the consumer only ever waits on the capture thread with a timeout, so a stalled camera never
blocks the loop.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from geolink_edge.errors import GeolinkError, describe
from geolink_edge.registry import choose

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 16
# FFmpeg would otherwise wait about 30 s on an RTSP stream that went quiet before reporting it
STREAM_OPEN_TIMEOUT_MS = 5000
STREAM_READ_TIMEOUT_MS = 2000


class SourceLost(Exception):
    """The camera stopped delivering (unplugged, network drop): reopen it."""


class CorruptFrame(Exception):
    """One unreadable frame: skip it and count it."""


@dataclass(frozen=True)
class Telemetry:
    """The camera's attitude (degrees, the camera convention of :mod:`mount`: yaw of the optical axis,
    pitch below the horizon, roll about the axis) and its height above the ground (m); None = unknown."""

    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    altitude: float | None = None


@dataclass(frozen=True)
class GnssFix:
    """The autopilot's own satellite fix (GPS_RAW_INT), for a warm start and for shadow-mode errors."""

    t_unix: float  # when it was received
    lat: float
    lon: float
    alt_msl: float | None  # metres, None when the receiver gives none
    h_acc: float | None  # 1-sigma horizontal accuracy (m), None when not reported
    fix_type: int  # 3 = 3D and better
    satellites: int


@dataclass(frozen=True)
class Truth:
    lat: float
    lon: float
    alt: float


@dataclass
class Frame:
    image: np.ndarray
    index: int  # position in the source's stream
    t_capture: float  # unix time when the frame was read
    t_sensor: float  # time the image was taken: the recording's clock for a replay, else t_capture
    t_mono: float  # monotonic time when the frame was read (latency accounting)
    truth: Truth | None = None
    telemetry: Telemetry | None = None


@dataclass
class RawFrame:
    image: np.ndarray | None
    truth: Truth | None = None
    telemetry: Telemetry | None = None
    timestamp: float | None = None  # the recording's own clock, seconds


class Reader(Protocol):
    live: bool  # a camera (drop stale frames, reopen on loss) rather than a file to replay
    fps: float | None  # pace of playback for recorded sources; None = as fast as read

    def open(self) -> None: ...

    def read(self) -> RawFrame | None: ...  # None: end of stream

    def close(self) -> None: ...


def gstreamer_available() -> bool:
    line = next((ln for ln in cv2.getBuildInformation().splitlines() if "GStreamer" in ln), "")
    return "YES" in line.upper()


class OpenCVReader:
    """Anything cv2.VideoCapture opens: V4L2 devices, GStreamer pipelines, RTSP, video files."""

    def __init__(
        self,
        target: str | int,
        api: int,
        live: bool,
        size: tuple[int, int] | None = None,
        fps: float | None = None,
    ):
        self.target, self.api, self.live = target, api, live
        self.size, self.requested_fps = size, fps
        self.fps: float | None = None
        self.cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        params = []
        if self.api == cv2.CAP_FFMPEG:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                STREAM_OPEN_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                STREAM_READ_TIMEOUT_MS,
            ]
        cap = cv2.VideoCapture(self.target, self.api, params)
        if self.live and self.api == cv2.CAP_V4L2:
            if self.size:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            if self.requested_fps:
                cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver queue would otherwise hold old frames
        if not cap.isOpened():
            cap.release()
            name = f"/dev/video{self.target}" if isinstance(self.target, int) else self.target
            raise SourceLost(f"cannot open {name}")
        self.cap = cap
        if not self.live:
            native = cap.get(cv2.CAP_PROP_FPS)
            self.fps = self.requested_fps or (native if 0 < native < 1000 else None)

    def read(self) -> RawFrame | None:
        if self.cap is None:
            raise SourceLost("not open")
        ok = self.cap.grab()
        if not ok:
            if self.live:
                raise SourceLost(f"{self.target} stopped delivering frames")
            return None
        ok, image = self.cap.retrieve()
        if not ok:
            raise CorruptFrame("frame could not be decoded")
        return RawFrame(image)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class FolderReader:
    """Sorted images of a folder, played at ``fps`` (None: as fast as they are consumed)."""

    live = False

    def __init__(self, folder: Path, fps: float | None = None):
        self.files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise GeolinkError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.fps = fps
        self.position = 0

    def open(self) -> None:
        pass

    def image(self, i: int) -> np.ndarray:
        image = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
        if image is None:
            raise CorruptFrame(f"{self.files[i].name} is not a readable image")
        return image

    def read(self) -> RawFrame | None:
        if self.position >= len(self.files):
            return None
        i, self.position = self.position, self.position + 1
        return RawFrame(self.image(i))

    def close(self) -> None:
        pass


class SimReader(FolderReader):
    """A synthetic flight (``flight/`` of ``geolink-edge synth --flight-frames``) with ground truth."""

    def __init__(self, flight_dir: Path, loop: bool = False):
        flight_dir = Path(flight_dir)
        meta_path = flight_dir / "flight.json"
        if not meta_path.is_file():
            raise GeolinkError(f"{flight_dir}: not a synthetic flight (no flight.json)")
        try:
            self.meta = json.loads(meta_path.read_text())
            fps = float(self.meta["fps"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise GeolinkError(f"{meta_path}: unreadable flight description (need a numeric 'fps')") from None
        super().__init__(flight_dir / "frames", fps=fps)
        self.camera_yaml = flight_dir / "camera.yaml"
        self.rows = _read_ground_truth(flight_dir / "gt.csv")
        self.loop = loop
        self.laps = 0
        self._lap_s = len(self.files) / fps  # a replayed lap continues the clock instead of jumping back

    def read(self) -> RawFrame | None:
        if self.position >= len(self.files):
            if not self.loop:
                return None
            self.position = 0
            self.laps += 1
        i, self.position = self.position, self.position + 1
        name = self.files[i].stem
        if name not in self.rows:
            raise CorruptFrame(f"{self.files[i].name} has no ground truth row")
        t, truth, telemetry = self.rows[name]
        return RawFrame(self.image(i), truth, telemetry, t + self.laps * self._lap_s)


def _read_ground_truth(path: Path) -> dict[str, tuple[float, Truth, Telemetry]]:
    if not path.is_file():
        raise GeolinkError(f"{path}: ground truth file not found")
    rows = {}
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                name = f"{int(row['frame']):06d}"
                t = float(row["timestamp"])
                truth = Truth(float(row["lat"]), float(row["lon"]), float(row["alt"]))
                telemetry = Telemetry(
                    float(row["yaw"]), float(row["pitch"]), float(row.get("roll") or 0.0), float(row["alt"])
                )
            except (KeyError, TypeError, ValueError):
                raise GeolinkError(
                    f"{path} line {line}: expected frame,timestamp,lat,lon,alt,yaw,pitch,roll"
                ) from None
            rows[name] = (t, truth, telemetry)
    return rows


def csi_pipeline(sensor: int, width: int, height: int, fps: float) -> str:
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={width},height={height},"
        f"framerate={int(round(fps))}/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    )


def _sim(target: str, width: int, height: int, fps: float, loop: bool) -> Reader:
    return SimReader(Path(target), loop=loop)


def _csi(target: str, width: int, height: int, fps: float, loop: bool) -> Reader:
    if not gstreamer_available():
        raise GeolinkError(
            f"csi://{target}: this OpenCV has no GStreamer support (use the system OpenCV of JetPack)"
        )
    try:
        sensor = int(target or 0)
    except ValueError:
        raise GeolinkError(f"csi://{target}: expected csi://N with a sensor number") from None
    return OpenCVReader(csi_pipeline(sensor, width, height, fps), cv2.CAP_GSTREAMER, live=True)


def _v4l2(target: str, width: int, height: int, fps: float, loop: bool) -> Reader:
    number = target[len("/dev/video") :] if target.startswith("/dev/video") else ""
    device: str | int = int(number) if number.isdigit() else target
    return OpenCVReader(device, cv2.CAP_V4L2, live=True, size=(width, height), fps=fps)


def _path(target: str, width: int, height: int, fps: float, loop: bool) -> Reader:
    path = Path(target)
    if path.is_dir():
        if (path / "flight.json").is_file():
            return SimReader(path, loop=loop)
        return FolderReader(path)
    if path.is_file():
        return OpenCVReader(str(path), cv2.CAP_ANY, live=False)
    raise GeolinkError(f"{target}: no such camera, video, folder or flight")


def _stream_opener(scheme: str):
    def _stream(target: str, width: int, height: int, fps: float, loop: bool) -> Reader:
        return OpenCVReader(f"{scheme}://{target}", cv2.CAP_FFMPEG, live=True)

    return _stream


# ``scheme://target`` → the opener of that target; a URI without a scheme is a path or a V4L2 device
SCHEMES = {
    "sim": _sim,
    "csi": _csi,
    **{scheme: _stream_opener(scheme) for scheme in ("rtsp", "rtsps", "http", "https")},
    "v4l2": _v4l2,
    "file": _path,
}


def open_reader(
    uri: str, width: int = 1280, height: int = 720, fps: float = 30.0, loop: bool = False
) -> Reader:
    """The reader a camera URI names (see the module docstring)."""
    if width <= 0 or height <= 0 or fps <= 0:
        raise GeolinkError(f"camera size and rate must be positive (got {width}x{height} at {fps} fps)")
    scheme, sep, target = uri.partition("://")
    if sep:
        opener = choose("camera scheme", scheme, SCHEMES)
    else:
        opener, target = (_v4l2 if uri.startswith("/dev/video") else _path), uri
    return opener(target, width, height, fps, loop)


def valid_image(image: object) -> bool:
    """A frame worth processing: a finite uint8 image of a sensible size (not an empty buffer)."""
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim in (2, 3)
        and min(image.shape[:2]) >= MIN_SIDE
        and (image.ndim == 2 or image.shape[2] in (1, 3, 4))
    )


class Capture:
    """Reads a source on its own thread and hands out the newest frame.

    ``drop`` (default: the reader is live) overwrites an untaken frame; without it the thread waits
    for the consumer, which replays a recording frame by frame. Recorded sources are paced at their
    own clock (frame timestamps, else ``fps``) unless ``realtime`` is False, so a recording with a
    hole in it plays like a camera that went away for that long.
    """

    def __init__(
        self,
        reader: Reader,
        drop: bool | None = None,
        realtime: bool = True,
        backoff_s: tuple[float, float] = (0.1, 5.0),
    ):
        self.reader = reader
        self.drop = reader.live if drop is None else drop
        self.realtime = realtime
        self.backoff_s = backoff_s
        self.corrupt = 0
        self.dropped = 0
        self.reconnects = 0
        self.read_count = 0
        self.last_error = ""
        self._frame: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ended = False
        self._clock: tuple[float, float] | None = None  # (monotonic, recording time) of the first frame
        self._next_due = 0.0
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop reading; True when the thread has ended and released the camera.

        The thread releases the reader itself, so a read blocked inside a driver finishes before the
        camera is closed under it; a daemon thread still blocked after ``timeout_s`` does so when it returns.
        """
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if not self._thread.is_alive() and self._thread.ident is None:
            self.reader.close()  # never started
            return True
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    def _open_with_backoff(self) -> bool:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            try:
                self.reader.open()
                return True
            except Exception as exc:  # SourceLost, or whatever a driver raises: try again later
                self.last_error = describe(exc)
                self._stop.wait(delay)
                delay = min(delay * 2.0, self.backoff_s[1])
        return False

    def _pace(self, timestamp: float | None) -> None:
        """Wait until a recorded frame is due: at its own timestamp, else one ``1/fps`` after the last."""
        now = time.monotonic()
        if timestamp is not None:
            if self._clock is None:
                self._clock = (now, timestamp)
            due = self._clock[0] + timestamp - self._clock[1]
        elif self.reader.fps:
            pace = 1.0 / self.reader.fps
            due = self._next_due = max(self._next_due + pace, now - pace)
        else:
            return
        self._stop.wait(max(0.0, due - now))

    def _read(self) -> RawFrame | None:
        """One frame from the reader; a lost or failing camera is reopened until it delivers again."""
        while not self._stop.is_set():
            try:
                return self.reader.read()
            except CorruptFrame as exc:
                self.corrupt += 1
                self.last_error = str(exc)
            except Exception as exc:  # SourceLost, cv2.error, a driver's own error
                self.last_error = describe(exc)
                if not self.reader.live and not isinstance(exc, SourceLost):
                    raise
                self.reconnects += 1
                self._clock = None  # a reopened camera delivers from now on
                self.reader.close()
                if not self._open_with_backoff():
                    return None
        return None

    def _run(self) -> None:
        try:
            if not self._open_with_backoff():
                return
            while not self._stop.is_set():
                raw = self._read()
                if raw is None:
                    return
                if not valid_image(raw.image):
                    self.corrupt += 1
                    self.last_error = "frame with an invalid buffer"
                    continue
                if self.realtime:
                    self._pace(raw.timestamp)
                now = time.time()
                t_sensor = now if raw.timestamp is None else raw.timestamp
                frame = Frame(
                    raw.image, self.read_count, now, t_sensor, time.monotonic(), raw.truth, raw.telemetry
                )
                self.read_count += 1
                self._hand_over(frame)
        except Exception as exc:  # a recording that cannot be read on: it ends, and says why
            self.last_error = describe(exc)
        finally:
            self.reader.close()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _hand_over(self, frame: Frame) -> None:
        with self._cond:
            if not self.drop:
                while self._frame is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest untaken frame; None once the source has ended (or after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._frame is None and not self._ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._ended and self._frame is None
