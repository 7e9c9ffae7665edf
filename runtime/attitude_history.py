"""The autopilot's attitude over the last seconds, read at any time: a body-fixed camera needs the
attitude at the frame's capture, not the latest report (at 30°/s, 0.2 s late is 6°, 8 m at 80 m).

ATTITUDE carries the autopilot's boot time. Its offset to our clock is taken as the least
(arrival − boot time) of recent reports: the report that came fastest bounds the link's delay
best. Between reports the angles are interpolated (the yaw the short way round).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque

from geolink_edge.runtime.mount import BodyAttitude

HISTORY = 100  # reports kept: 10 s at the 10 Hz asked for
MAX_EXTRAPOLATION_S = 0.25  # a time this far past the newest report still reads the newest


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class AttitudeHistory:
    def __init__(self, size: int = HISTORY):
        self._reports: deque[tuple[float, BodyAttitude]] = deque(maxlen=size)  # (boot s, attitude)
        self._offsets: deque[float] = deque(maxlen=size)  # arrival unix time − boot time
        self._lock = threading.Lock()

    def add(self, boot_s: float, attitude: BodyAttitude, arrival_unix: float) -> None:
        with self._lock:
            if self._reports and boot_s <= self._reports[-1][0]:
                if boot_s < self._reports[-1][0] - 1.0:  # the autopilot rebooted: its clock restarted
                    self._reports.clear()
                    self._offsets.clear()
                else:
                    return  # a repeated or reordered report
            self._reports.append((boot_s, attitude))
            self._offsets.append(arrival_unix - boot_s)

    def at(self, t_unix: float) -> BodyAttitude | None:
        """The attitude at unix time ``t_unix``; None outside what the history covers."""
        with self._lock:
            if not self._reports:
                return None
            boot = t_unix - min(self._offsets)
            first, last = self._reports[0], self._reports[-1]
            if boot >= last[0]:
                return last[1] if boot - last[0] <= MAX_EXTRAPOLATION_S else None
            if boot < first[0]:
                return None
            after = bisect.bisect_right([t for t, _ in self._reports], boot)  # first < after < len
            (t0, a0), (t1, a1) = self._reports[after - 1], self._reports[after]
            w = (boot - t0) / (t1 - t0)
            return BodyAttitude(
                a0.roll + w * _wrap(a1.roll - a0.roll),
                a0.pitch + w * (a1.pitch - a0.pitch),
                _wrap(a0.yaw + w * _wrap(a1.yaw - a0.yaw)),
            )
