"""The locator's area-correlation verifier: the map areas a frame is correlated over, and its fix.

Used when the camera's heading, pitch, height and intrinsics are known (:mod:`correlate`). The
areas: with a region (a track's prediction or a known area), one square holding every placement of
the frame whose point below the camera lies in the region; without one, the map windows holding the
tiles retrieved by descriptor (as for the feature verifier). Areas are cached as edge fields, so a
frame over the same ground reuses them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from geolink_edge.runtime.correlate import (
    Area,
    CorrelateConf,
    Correlation,
    Correlator,
    correlation_gsd,
    ground_templates,
    map_area,
)
from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.mount import world_to_camera
from geolink_edge.runtime.pose import attitude_known, heading_from_rotation
from geolink_edge.runtime.retrieval import Region
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.runtime.windows import MapWindows

Box = tuple[float, float, float]  # (x, y, half_size_m): a north-up square of the map


@dataclass
class AreaFix:
    """A correlation and what the locator reports of it."""

    result: Correlation
    window: list[float] | None = None  # [x, y, half_size_m, gsd_m] of the area the peak lies in
    heading: float | None = None  # of the frame's top, with the refined heading correction
    alt: float | None = None  # the height above the ground below, told height × refined scale

    def stats(self) -> dict[str, float | str]:
        r = self.result
        return {
            "score": r.score,
            "second_ratio": r.ratio,
            "psr": r.psr,
            "yaw_deg": r.yaw_deg,
            "scale": r.scale,
            "texture": r.texture,
        }


def applies(intrinsics: Intrinsics | None, telemetry: Telemetry | None) -> bool:
    """Correlation needs the frame's ground footprint: intrinsics, heading, pitch and height."""
    return intrinsics is not None and attitude_known(telemetry)


class AreaCorrelation:
    def __init__(self, index, conf: CorrelateConf, windows: MapWindows, k_windows: int, cache: int = 8):
        self.index = index
        self.conf = conf
        self.windows = windows
        self.k_windows = k_windows
        self.correlator = Correlator(conf)
        self._areas: OrderedDict[tuple, Area] = OrderedDict()
        self._size = cache

    def place(
        self,
        image: np.ndarray,
        intrinsics: Intrinsics,
        telemetry: Telemetry,
        region: Region | None,
        centres: list[tuple[float, float]],
    ) -> AreaFix:
        gsd = correlation_gsd(self.index.map_gsd_m, intrinsics, telemetry, self.conf)
        make = ground_templates(image, intrinsics, telemetry, gsd, self.conf)
        widest = make(0.0, max(self.conf.scales))
        if widest is None:
            return AreaFix(Correlation(False, "the frame does not see the ground at one canvas"))
        # farthest the frame's footprint reaches from the point below the camera
        h, w = widest.shape
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]]) - widest.origin_px
        reach = float(np.max(np.hypot(*corners.T))) * gsd
        if region is not None:
            boxes = [(region[0], region[1], region[2] + reach)]
        else:
            keys = self.windows.keys_for_points(centres, reach, gsd)[: self.k_windows]
            factor = self.windows.factor
            boxes = [(*key.centre(factor), key.half_size(factor)) for key in keys]
        if not boxes:
            return AreaFix(Correlation(False, "no candidates"))
        result = self.correlator.search(make, [self._area(box, gsd) for box in boxes], gsd)
        placed = AreaFix(result)
        if result.xy is None:
            return placed
        inside = [b for b in boxes if max(abs(result.xy[0] - b[0]), abs(result.xy[1] - b[1])) <= b[2]]
        placed.window = [*(inside or boxes)[0], gsd]
        rotation = world_to_camera(telemetry.yaw + result.yaw_deg, telemetry.pitch, telemetry.roll or 0.0)
        placed.heading = heading_from_rotation(rotation)
        placed.alt = telemetry.altitude * result.scale
        return placed

    def _area(self, box: Box, gsd: float) -> Area:
        key = (*(round(v, 2) for v in box), gsd)
        cached = self._areas.get(key)
        if cached is not None:
            self._areas.move_to_end(key)
            return cached
        window = self.index.map_window(box[0], box[1], box[2], gsd)
        area = map_area(window.image, window.valid, window.pixel_to_xy, self.conf)
        self._areas[key] = area
        if len(self._areas) > self._size:
            self._areas.popitem(last=False)
        return area


def finite(fix: AreaFix) -> bool:
    values = [*fix.result.xy, *fix.result.cov.ravel(), fix.heading, fix.alt]
    return all(math.isfinite(float(v)) for v in values)
