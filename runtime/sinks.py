"""Where per-frame results go: a JSON-lines flight log, a live console line, and the run summary.

The flight log is streamed (one line written and flushed per frame, synced to the disk every
second) rather than written atomically at the end: after a crash or a power cut every frame
already processed is on disk.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from geolink_edge.errors import GeolinkError


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars and arrays to Python, NaN/inf to None (a log never holds NaN)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Summary:
    """Accumulates per-frame records into the figures a flight is judged by."""

    def __init__(self):
        self.frames = 0
        self.accepted = 0
        self.statuses: dict[str, int] = {}
        self.errors: list[float] = []  # error of every estimate sent (accepted frames)
        self.fix_errors: list[float] = []  # error of every raw verified fix, accepted or not
        self.gnss_errors: list[
            float
        ] = []  # distance of every estimate from the autopilot's GNSS (shadow mode)
        self.failures: dict[str, int] = {}  # frames that raised, by error
        self.camera: dict = {}  # outages: how many, how long in all
        self.latency: dict[str, list[float]] = {}
        self.t_first: float | None = None
        self.t_last: float | None = None

    def add(self, record: dict) -> None:
        self.frames += 1
        status = record.get("status", "")
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == "accepted":
            self.accepted += 1
            if record.get("error_m") is not None:
                self.errors.append(record["error_m"])
        if record.get("fix_error_m") is not None:
            self.fix_errors.append(record["fix_error_m"])
        if record.get("gnss_error_m") is not None:
            self.gnss_errors.append(record["gnss_error_m"])
        if record.get("error") is not None:
            self.failures[record["error"]] = self.failures.get(record["error"], 0) + 1
        for stage, ms in (record.get("latency_ms") or {}).items():
            if ms is not None:
                self.latency.setdefault(stage, []).append(ms)
        t = record.get("t_done")
        if t is not None:
            self.t_first = t if self.t_first is None else self.t_first
            self.t_last = t

    @property
    def fps(self) -> float | None:
        duration = (
            (self.t_last - self.t_first) if self.t_first is not None and self.t_last is not None else 0.0
        )
        return (self.frames - 1) / duration if duration > 0 else None

    def result(self, **extra: Any) -> dict:
        out = {
            "frames": self.frames,
            "accepted": self.accepted,
            "fix_rate": self.accepted / self.frames if self.frames else 0.0,
            "statuses": self.statuses,
            "fps": self.fps,
            "error_m": {
                "median": percentile(self.errors, 50),
                "p90": percentile(self.errors, 90),
                "max": max(self.errors) if self.errors else None,
                "count": len(self.errors),
            },
            "raw_fix_error_m": {
                "median": percentile(self.fix_errors, 50),
                "p90": percentile(self.fix_errors, 90),
            },
            "gnss_error_m": {
                "median": percentile(self.gnss_errors, 50),
                "p90": percentile(self.gnss_errors, 90),
                "count": len(self.gnss_errors),
            },
            "frame_errors": {"count": sum(self.failures.values()), "by_error": self.failures},
            "camera_outages": self.camera,
            "latency_ms": {
                stage: {"median": percentile(v, 50), "p95": percentile(v, 95)}
                for stage, v in self.latency.items()
            },
        }
        out.update(extra)
        return clean(out)


def free_log_path(path: Path) -> Path:
    """``path`` when it is free, else the first free ``NAME.1.jsonl``, ``NAME.2.jsonl``, …: a restart
    in the air never overwrites the log of the flight before it."""
    n = 0
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
    return candidate


class JsonlSink:
    """``--log FLIGHT.jsonl``: one record per frame, flushed at once and synced to the disk every
    ``fsync_s`` seconds; ``{"summary": …}`` last. An existing log is never overwritten: the run writes
    the next free numbered name (``path``) instead of the one asked for (``requested``)."""

    def __init__(self, path: str | Path, fsync_s: float = 1.0):
        self.requested = Path(path)
        if self.requested.is_dir():
            raise GeolinkError(f"--log {self.requested}: is a folder, expected a file name")
        self.fsync_s = fsync_s
        try:
            self.requested.parent.mkdir(parents=True, exist_ok=True)
            while True:
                self.path = free_log_path(self.requested)
                try:
                    self._file = self.path.open("x", encoding="utf-8")
                    break
                except FileExistsError:
                    continue  # another run took that name in between
        except OSError as exc:
            raise GeolinkError(f"--log {self.requested}: cannot write ({exc.strerror})") from None
        self._synced = time.monotonic()

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(clean(record), allow_nan=False, separators=(",", ":")) + "\n")
        self._file.flush()
        if time.monotonic() - self._synced >= self.fsync_s:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()

    def close(self, summary: dict | None = None) -> None:
        try:
            if summary is not None:
                self.write({"summary": summary})
            self.sync()
        finally:
            self._file.close()


class ConsoleSink:
    """A rich live status line: FPS, fix state, position, error when ground truth is known."""

    def __init__(self, refresh_hz: float = 4.0, enabled: bool = True):
        self.enabled = enabled
        self._live = None
        if enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                "", console=Console(stderr=True), refresh_per_second=refresh_hz, transient=False
            )
            self._live.start()

    def update(self, record: dict, fps: float | None) -> None:
        if self._live is None:
            return
        status = record.get("status", "")
        colour = {"accepted": "green", "gated": "yellow", "coasting": "yellow"}.get(status, "red")
        est = record.get("estimate") or {}
        where = (
            f"{est['lat']:.6f}, {est['lon']:.6f}"
            if est.get("lat") is not None
            else f"x {est['x']:.1f} y {est['y']:.1f}"
            if est.get("x") is not None
            else "—"
        )
        error = record.get("error_m")
        parts = [
            f"frame {record.get('frame')}",
            f"{fps:.1f} FPS" if fps else "… FPS",
            f"[{colour}]{status}[/{colour}]",
            where,
            f"err {error:.1f} m" if error is not None else "",
            f"inliers {record.get('fix', {}).get('inliers', 0)}",
        ]
        self._live.update(" | ".join(p for p in parts if p))

    def event(self, text: str) -> None:
        """A line above the live status (camera lost, fix regained, …)."""
        if self._live is not None:
            self._live.console.print(text)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


def tally_text(total: int, seen: int, fixed: int) -> str:
    """Frames of a flight of ``total``: ``30 of 60 fixed (50.0 %); 31 seen, 29 dropped; 96.8 % of
    those seen`` — a fix rate over the frames seen alone hides the ones never looked at."""
    share = f"; {100 * fixed / seen:.1f} % of those seen" if seen else ""
    rate = 100 * fixed / total if total else 0.0
    return f"{fixed} of {total} fixed ({rate:.1f} %); {seen} seen, {total - seen} dropped{share}"


def read_flight_log(path: Path) -> tuple[list[dict], dict]:
    """Per-frame records and the summary of a JSON-lines flight log ({} when the run never ended);
    event lines and the settings (the first line) are left out."""
    records, summary = [], {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the line being written when the process died or the power went
            raise GeolinkError(f"{path}:{number}: not a JSON record") from None
        if "summary" in entry:
            summary = entry["summary"]
        elif "event" not in entry and "config" not in entry:  # camera lost, the settings, …: not a frame
            records.append(entry)
    return records, summary
