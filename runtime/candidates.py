"""Verification of candidate map windows: which windows, how each is checked, which one is kept.

The windows: those covering a region (a track's prediction: the ``k_track`` nearest; a known area:
all), or those holding the globally retrieved tiles (``k_windows`` of them). They are checked in
order and the accepted one with the most inliers (agreeing votes, or RANSAC inliers) is kept; one
reaching ``enough_inliers`` (``enough_inliers_near`` near a prediction) ends the search early. A
frame no window verifies is tried once more at a coarser GSD (:meth:`views.FrameViews.coarser_tries`).

How a window is checked is a :class:`WindowVerifier`, picked by :class:`VerifierMode`; the one here
matches local features (:class:`FeatureWindows`): position votes when the view's camera is known
(``VOTES``, ``LEARNED``), else a RANSAC homography of each guessed view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np

from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.ground import GroundView
from geolink_edge.runtime.retrieval import Region
from geolink_edge.runtime.verify import Verification, Verifier
from geolink_edge.runtime.views import Consensus
from geolink_edge.runtime.windows import MapWindows, WindowKey

Check = Callable[[int], Verification]  # verification of the i-th candidate window


class VerifierMode(str, Enum):
    FEATURES = "features"  # local features matched between the ground view and the window
    CORRELATION = "correlation"  # area correlation of the frame over the map (runtime.correlate)
    AUTO = "auto"  # correlation when the camera is known and the frame has texture, else features


@dataclass
class FrameJob:
    """What a window verifier is handed for one frame (at one GSD)."""

    views: list[GroundView]  # the frame's ground views, the likeliest first
    consensus: Consensus
    keys: list[WindowKey]  # the candidate windows, in the order they are checked
    region: Region | None  # where the camera is, give or take the radius, when known
    exhaustive: bool  # the region is a known area rather than a track's prediction
    heading_known: bool  # the heading is told: the views are north-up without turned tries


class WindowVerifier(Protocol):
    def prepare(self, job: FrameJob) -> Check:
        """A check of each candidate window ``job.keys[i]``; results in the frame's own pixels."""


class FeatureWindows:
    """Local features of the frame's ground views against each window's (:mod:`verify`)."""

    def __init__(self, conf, windows: MapWindows, canvas: Verifier):
        self.conf = conf  # a LocateConf
        self.windows = windows
        self.canvas = canvas  # features of the ground views

    def prepare(self, job: FrameJob) -> Check:
        conf, region, consensus = self.conf, job.region, job.consensus
        # a north-up view needs no turned tries; a view of unknown heading takes the conf's
        turns = 1 if consensus != Consensus.HOMOGRAPHY or job.heading_known else None
        frames = [(view, self.canvas.features(view.image, view.mask, turns)) for view in job.views]
        offsets = [view.offsets_m(features.xy) for view, features in frames]
        matcher = self.windows.verifier

        def check(i: int) -> Verification:
            window = self.windows.window(job.keys[i])
            tried = []
            for (view, features), offset in zip(frames, offsets, strict=True):
                if consensus != Consensus.HOMOGRAPHY:
                    reference, prior = window.features, None
                    if region is not None and not job.exhaustive:
                        # the view's reference point lies within the prior circle: so does any match's
                        # ground point, give or take the view's radius; with the attitude told, each
                        # keypoint's own, closer (a heading measured by the last fix may have turned)
                        guide = conf.guided and consensus == Consensus.VOTES
                        # a prior as wide as the view would allow nearly every pair, at brute-force cost
                        guide = guide and region[2] <= conf.guided_max_prior * view.radius_m
                        prior = region if guide else None
                        reach = region[2] + view.radius_m + conf.verify.vote_m
                        reference = window.near(region[0], region[1], reach)
                    # the view is north-up at the window's resolution: keypoint shapes must agree
                    result = matcher.verify_by_votes(
                        i, features, reference, offset, window.pixel_to_xy, aligned=True, prior=prior
                    )
                    if result.ok and consensus == Consensus.LEARNED and result.homography is None:
                        # votes alone would keep a stale heading: without a homography that measures
                        # the camera again, the RANSAC homography below decides
                        result.reason = "votes without a plausible homography"
                    if result.ok:
                        return to_frame(result, view, window.pixel_to_xy)
                    tried.append(result)
                if consensus != Consensus.VOTES:  # a homography needs no heading (the drone may turn)
                    ransac_px = conf.ground_ransac_m / view.gsd_m
                    result = matcher.verify(
                        i, features, window.features, ransac_px, conf.window_min_inlier_ratio
                    )
                    if result.ok:
                        return to_frame(result, view, window.pixel_to_xy)
                    tried.append(result)
            return max(tried, key=lambda v: v.inliers)

        return check


def candidate_keys(
    conf, windows: MapWindows, views: list[GroundView], region: Region | None, exhaustive: bool, centres
) -> list[WindowKey]:
    """The windows to check: covering ``region``, else holding the retrieved tiles' ``centres``."""
    footprint = views[0].radius_m  # the likeliest guess sizes the windows: the others still overlap
    gsd = views[0].gsd_m
    if region is not None:
        keys = windows.keys_near(*region, footprint, gsd)
        return keys if exhaustive else keys[: conf.k_track]
    return windows.keys_for_points(centres, footprint, gsd)[: conf.k_windows]


def best_of(
    count: int,
    check: Check,
    enough: int,
    out_of_time: Callable[[int], bool] = lambda i: False,
    ready: Callable[[int], bool] = lambda i: True,
) -> tuple[Verification | None, list[Verification], list[int], bool]:
    """The accepted candidate with the most inliers (the first to reach ``enough`` ends the search),
    the rejected ones, the candidates left unchecked (not ``ready`` yet, or all from the first one
    for which it was ``out_of_time``) and whether the time ran out."""
    best: Verification | None = None
    rejected: list[Verification] = []
    left: list[int] = []
    for i in range(count):
        if not ready(i):
            left.append(i)
            continue
        if out_of_time(i):
            return best, rejected, left + list(range(i, count)), True
        try:
            result = check(i)
        except GeolinkError as exc:  # one broken window must not stop the flight
            rejected.append(Verification(i, 0, str(exc)))
            continue
        if not result.ok:
            rejected.append(result)
            continue
        if best is None or result.inliers > best.inliers:
            best = result
        if best.inliers >= enough:
            break
    return best, rejected, left, False


def window_name(key: WindowKey, factor: float) -> str:
    x, y = key.centre(factor)
    return f"window at ({x:.0f}, {y:.0f}) m, {key.gsd_m:.2f} m/px"


def to_frame(match: Verification, view: GroundView, window_to_xy: np.ndarray) -> Verification:
    """A verification made on a ground view, in the frame's own pixels."""
    match.frame_xy = view.frame_pixels(match.frame_xy)
    if match.homography is not None:
        match.homography = match.homography @ np.linalg.inv(view.canvas_to_frame)
    match.pixel_to_xy = window_to_xy
    return match
