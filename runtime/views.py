"""A frame's ground views and the GSD ladder they are matched at.

The matching GSD is ``match_gsd_factor`` × the coarser of the frame's and the map's own GSD, on the
2^¼ ladder of :func:`ground.quantize_up`, kept while the height wavers less than a step (so that
consecutive frames reuse cached map windows). The frame's GSD, and with it the view, comes from
what is known, in this order (:class:`Consensus` names what the view allows):

- attitude, height and intrinsics told: the orthophoto the frame would be (:func:`ground.nadir_view`);
  the matches vote for the camera's position (``VOTES``);
- the GSD and heading a recent fix measured (:meth:`FrameViews.learn`): the frame scaled and turned
  north-up by them; votes, checked by a homography (``LEARNED``);
- nothing: the frame scaled by each guess of ``frame_gsd_tries`` (and turned by a told heading for
  features that are not rotation-invariant); a RANSAC homography decides (``HOMOGRAPHY``).
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np

from geolink_edge.runtime.ground import GroundView, linear_scale, nadir_view, quantize_up, scaled_view
from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.pose import attitude_known, heading_known, telemetry_rotation
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.runtime.verify import Verification


class Consensus(str, Enum):
    VOTES = "votes"  # attitude, height and intrinsics told
    LEARNED = "learned"  # the camera the last fix measured: votes, confirmed by a homography
    HOMOGRAPHY = "homography"  # nothing known: a RANSAC homography


class FrameViews:
    """Ground views of frames at the matching GSD; keeps the camera a fix measured for the next frame."""

    def __init__(self, conf, map_gsd_m: float):
        self.conf = conf  # a LocateConf
        self.map_gsd_m = map_gsd_m
        self._gsd: float | None = None  # the matching GSD in use
        self.frame_gsd: float | None = None  # measured by the last fix when the camera is unknown
        self.heading: float | None = None  # of the last fix, to turn frames for non-invariant features

    def coarser_tries(self) -> tuple[float, ...]:
        """GSD factors tried in turn: a frame no window verifies gets a coarser try (``retry_gsd_factor``)."""
        retry = self.conf.retry_gsd_factor
        return (1.0, retry) if retry > 1.0 else (1.0,)

    def match_gsd(self, frame_gsd: float, coarser: float = 1.0) -> float:
        """The matching GSD; ``coarser`` > 1: that much coarser, on the ladder (a retry)."""
        if self.conf.match_gsd_m is not None:
            gsd = self.conf.match_gsd_m
        else:
            gsd = quantize_up(max(frame_gsd, self.map_gsd_m) * self.conf.match_gsd_factor, 4)
            # a steady resolution keeps the cached windows: move only when a whole ladder step off
            if self._gsd is None or abs(math.log2(gsd / self._gsd)) > 0.3:
                self._gsd = gsd
            gsd = self._gsd
        return gsd if coarser == 1.0 else quantize_up(gsd * coarser, 4)

    def _detail(self) -> float | None:
        """The finest ground detail views keep beyond their own GSD: with ``view_detail_factor``, what
        the map holds (its upsampled windows lack the frame's finer texture)."""
        return self.conf.view_detail_factor * self.map_gsd_m or None

    def views(
        self,
        image: np.ndarray,
        telemetry: Telemetry | None,
        intrinsics: Intrinsics | None,
        rotation_invariant: bool,
        coarser: float = 1.0,
    ) -> tuple[Consensus, list[GroundView]]:
        """The consensus this frame allows and its ground views (one per GSD guess)."""
        if intrinsics is not None and attitude_known(telemetry):
            gsd = self.match_gsd(frame_gsd(telemetry, intrinsics), coarser)
            view = nadir_view(
                image,
                intrinsics,
                telemetry_rotation(telemetry),
                telemetry.altitude,
                gsd,
                self.conf.max_canvas_px,
                detail_m=self._detail(),
            )
            return Consensus.VOTES, [view] if view is not None else []
        if self.frame_gsd is not None and self.heading is not None:
            # the camera a recent fix measured: a north-up view whose matches vote, like a known camera's
            gsd = self.match_gsd(self.frame_gsd, coarser)
            view = scaled_view(image, self.frame_gsd, gsd, self.heading, self._detail())
            return Consensus.LEARNED, [view]
        guesses = [self.frame_gsd] if self.frame_gsd else list(self.conf.frame_gsd_tries)
        heading = telemetry.yaw if not rotation_invariant and heading_known(telemetry) else None
        gsd = self.match_gsd(guesses[0], coarser)  # one resolution for every guess: the windows are shared
        return Consensus.HOMOGRAPHY, [scaled_view(image, g, gsd, heading, self._detail()) for g in guesses]

    def map_pixels(
        self, shape: tuple[int, ...], telemetry: Telemetry | None, intrinsics: Intrinsics | None
    ) -> float | None:
        """Map pixels across the shorter side of a known camera's ground footprint (None: unknown)."""
        if intrinsics is None or not attitude_known(telemetry):
            return None
        return min(shape[:2]) * frame_gsd(telemetry, intrinsics) / self.map_gsd_m

    def learn(self, heading: float, match: Verification, shape: tuple[int, ...]) -> None:
        """Keep the frame's GSD and heading a fix measured, for the next frame's ground view."""
        height, width = shape[:2]
        centre = np.array([width / 2.0, height / 2.0, 1.0])
        h = match.homography / match.homography[2, 2]
        denom = h[2] @ centre
        mapped = (h[:2] @ centre) / denom
        jac = (h[:2, :2] - np.outer(mapped, h[2, :2])) / denom
        gsd = linear_scale(jac) * linear_scale(match.pixel_to_xy[:, :2])
        if np.isfinite(gsd) and gsd > 0:
            self.frame_gsd = gsd
        self.heading = heading


def frame_gsd(telemetry: Telemetry, intrinsics: Intrinsics) -> float:
    """Metres per frame pixel along the optical axis's slant range, from the told height and pitch."""
    slant = telemetry.altitude / max(math.sin(math.radians(telemetry.pitch)), 0.1)
    return slant / intrinsics.fx
