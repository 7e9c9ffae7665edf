"""Where per-frame results go: a JSON-lines flight log, a live console line, and the run summary.

The flight log is streamed (one line written and flushed per frame) rather than written
atomically at the end: after a crash or a power cut every frame already processed is on disk.
"""

from __future__ import annotations

import json
import math
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
            "latency_ms": {
                stage: {"median": percentile(v, 50), "p95": percentile(v, 95)}
                for stage, v in self.latency.items()
            },
        }
        out.update(extra)
        return clean(out)


class JsonlSink:
    """``--log FLIGHT.jsonl``: one record per frame, flushed at once; ``{"summary": …}`` last."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise GeolinkError(f"--log {self.path}: is a folder, expected a file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise GeolinkError(f"--log {self.path}: cannot write ({exc.strerror})") from None

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(clean(record), allow_nan=False, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self, summary: dict | None = None) -> None:
        if summary is not None:
            self.write({"summary": summary})
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

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
