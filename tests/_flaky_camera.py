"""A reader made into a live camera that misbehaves on a fixed schedule of reads."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from geolink_edge.runtime.sources import CorruptFrame, RawFrame, SourceLost

# Checked in this order on every read; several may hit the same read.
FAULTS = ("unplug", "drop", "corrupt", "truncated", "noise", "torn")


class FlakyCamera:
    """``faults`` maps a fault to the read numbers (1, 2, ...) it hits:

    - ``unplug``: the cable comes out; reopening fails for ``outage_s`` of wall time;
    - ``drop``: a frame goes by and the next one is delivered instead;
    - ``corrupt``: the frame fails to decode; ``truncated``: an empty buffer from the driver;
    - ``noise``: the frame decodes to noise (its timestamp joins ``noise_t``);
    - ``torn``: the frame decodes with every other row black.

    With ``costs_frame`` (a camera that moves on) an unplug loses the frame being read and those of
    the outage, and a corrupt or truncated read loses its frame; without it, the next read delivers
    the frame that the fault held back. ``failed_opens``: opens (counting the first) that fail.
    """

    live = True

    def __init__(
        self,
        source,
        faults: dict[str, Callable[[int], bool]],
        *,
        costs_frame: bool = True,
        outage_s: float = 0.0,
        failed_opens: tuple[int, ...] = (),
    ):
        assert set(faults) <= set(FAULTS), set(faults) - set(FAULTS)
        self.source, self.faults, self.costs_frame = source, faults, costs_frame
        self.outage_s, self.failed_opens = outage_s, failed_opens
        self.fps = source.fps
        self.reads = self.opens = 0
        self.back_at: float | None = None
        self.last_t: float | None = None  # timestamp of the latest frame taken from the source
        self.outage_t: tuple[float, float] | None = None  # sensor times around the unplugged hole
        self.noise_t: set[float] = set()

    def _due(self, fault: str) -> bool:
        return fault in self.faults and self.faults[fault](self.reads)

    def _next(self) -> RawFrame | None:
        raw = self.source.read()
        if raw is not None and raw.timestamp is not None:
            self.last_t = raw.timestamp
        return raw

    def open(self) -> None:
        self.opens += 1
        if self.opens in self.failed_opens:
            raise SourceLost("device busy")
        if self.back_at is not None and time.monotonic() < self.back_at:
            raise SourceLost("/dev/video0: no such device")
        self.source.open()

    def close(self) -> None:
        self.source.close()

    def _unplug(self) -> None:
        if self.costs_frame:
            before = self.last_t
            for _ in range(max(1, round(self.outage_s * (self.fps or 0)))):
                self._next()
            if before is not None:
                self.outage_t = (before, before + self.outage_s)
        self.back_at = time.monotonic() + self.outage_s
        raise SourceLost("cable out")

    def read(self) -> RawFrame | None:
        self.reads += 1
        if self._due("unplug"):
            self._unplug()
        if self._due("drop"):
            self._next()
        raw = self._next() if self.costs_frame else None
        if self.costs_frame and raw is None:
            return None
        if self._due("corrupt"):
            raise CorruptFrame("bad JPEG")
        if self._due("truncated"):
            return RawFrame(np.zeros((0, 0, 3), np.uint8))
        if raw is None:
            raw = self._next()
        if raw is None:
            return None
        if self._due("noise"):
            raw.image = np.random.default_rng(self.reads).integers(0, 256, raw.image.shape, np.uint8)
            self.noise_t.add(raw.timestamp)
        if self._due("torn"):
            raw.image = raw.image.copy()
            raw.image[::2] = 0
        return raw
