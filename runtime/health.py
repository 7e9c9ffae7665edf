"""What the loop tells the pilot, and how it stops: flight events, the camera watch, signals.

Nothing here ends a flight: a sink that fails is counted and skipped, a camera that goes quiet is
reported and waited for, and only SIGTERM/SIGINT (or the end of a recording) stop the loop.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# MAV_SEVERITY values, so the runtime can name them without importing pymavlink
SEVERITY = {"critical": 2, "error": 3, "warning": 4, "notice": 5, "info": 6}


class Events:
    """A flight event goes to the log, the console and the ground station (STATUSTEXT).

    The ground station hears one kind of event at most once per ``repeat_s`` (a failing frame every
    100 ms would flood the link); the log keeps every one.
    """

    def __init__(
        self,
        write: Callable[[dict], None] | None = None,
        show: Callable[[str], None] | None = None,
        statustext: Callable[[str, int], None] | None = None,
        repeat_s: float = 5.0,
    ):
        self.write, self.show, self.statustext = write, show, statustext
        self.repeat_s = repeat_s
        self.counts: dict[str, int] = {}
        self.sink_errors = 0
        self._told: dict[str, float] = {}

    def __call__(self, kind: str, text: str, severity: str = "warning", tell: bool = True, **fields) -> None:
        """Log and show an event; ``tell`` it to the ground station too (rate-limited per kind)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        record = {"event": kind, "t": time.time(), "severity": severity, "text": text, **fields}
        self.guard(self.write, record)
        self.guard(self.show, text)
        now = time.monotonic()
        told = self._told.get(kind, -float("inf"))
        if tell and self.statustext is not None and now - told >= self.repeat_s:
            self._told[kind] = now
            self.guard(self.statustext, f"geolink: {text}", SEVERITY[severity])

    def guard(self, sink: Callable | None, *args) -> bool:
        """Call a sink; a failure (full disk, lost link) is counted, never raised into the loop."""
        if sink is None:
            return True
        try:
            sink(*args)
            return True
        except Exception:
            self.sink_errors += 1
            return False


class CameraWatch:
    """Reports a camera lost after ``lost_after_s`` without a frame, and regained when one arrives."""

    def __init__(self, events: Events, lost_after_s: float):
        self.events = events
        self.lost_after_s = lost_after_s
        self.last_frame = time.monotonic()
        self.lost = False
        self.outages = 0
        self.outage_s = 0.0

    def frame(self) -> None:
        now = time.monotonic()
        if self.lost:
            gap = now - self.last_frame
            self.outage_s += gap
            self.lost = False
            self.events("camera_regained", f"camera back after {gap:.1f} s", "notice", gap_s=gap)
        self.last_frame = now

    def totals(self) -> dict:
        ongoing = time.monotonic() - self.last_frame if self.lost else 0.0
        return {"outages": self.outages, "outage_s": self.outage_s + ongoing}

    def idle(self, last_error: str) -> None:
        if not self.lost and time.monotonic() - self.last_frame >= self.lost_after_s:
            self.lost = True
            self.outages += 1
            self.events("camera_lost", f"camera lost: {last_error or 'no frames'}", "error")


class Stop(threading.Event):
    """Set when the loop should end; ``reason`` says why (a signal's name)."""

    reason: str | None = None

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.set()


@contextmanager
def stop_on_signals(stop: Stop, signums=(signal.SIGTERM, signal.SIGINT)) -> Iterator[Stop]:
    """SIGTERM and SIGINT end the loop cleanly (``stop`` is set) instead of killing it mid-frame."""
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return

    def handler(signum, _frame):
        stop.request(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
