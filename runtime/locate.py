"""The locator: one frame (and its global descriptor) → a :class:`Fix`, against a bundle's map.

The default path, one module per step:

1. Candidates (:mod:`retrieval`): with a region (a track's prediction, or a known area), the map
   windows covering it; without one, the windows around the index's best tiles by descriptor.
2. Ground views (:mod:`views`): the frame resampled north-up at one matching GSD — through the
   camera model when attitude, height and intrinsics are told, else scaled by the GSD a fix
   measured, or by a few guesses of it.
3. Window verification (:mod:`candidates`): local features of the view against each window's; the
   matches vote for the camera's position when the view's camera is known, else a RANSAC
   homography must hold; the accepted window with the most inliers is kept, and a frame no window
   verifies is tried once more at a coarser GSD.
4. Position (:mod:`pose`), always the camera's when the intrinsics are known: with the attitude
   told, the point below the camera through the verified homography (PnP's attitude and height
   reported when they agree with it); without, the camera centre from planar PnP. No intrinsics:
   the ground point at the image centre (``position_of`` says which).

A time budget (``budget_s``) bounds each frame's search: a search cut short answers "no fix" with
the best window and why, and a global or known-area search goes on over the next frames, with
new windows read on a thread of their own when ``background_windows`` (a paced run); a track's
near search reads its few windows in the frame, within the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from geolink_edge.runtime.area_correlation import AreaCorrelation, applies, finite
from geolink_edge.runtime.candidates import (
    Check,
    FeatureWindows,
    FrameJob,
    VerifierMode,
    WindowVerifier,
    best_of,
    candidate_keys,
    window_name,
)
from geolink_edge.runtime.correlate import CorrelateConf
from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.keyframe import KeyframeConf, Keyframes
from geolink_edge.runtime.pose import (
    PoseConf,
    PositionOf,
    heading_from_rotation,
    heading_known,
    place,
    telemetry_rotation,
)
from geolink_edge.runtime.retrieval import Candidates, Region, Search, retrieve
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.runtime.verify import Verification, Verifier, VerifyConf
from geolink_edge.runtime.views import Consensus, FrameViews
from geolink_edge.runtime.windows import MapWindows, WindowKey


@dataclass(frozen=True)
class LocateConf:
    k_global: int = 24  # candidates verified on a global search
    k_track: int = 6  # candidates verified near the prediction
    enough_inliers: int = 150  # a candidate this good ends a global verification early
    enough_inliers_near: int = 20  # near the prediction any verified tile gives the same position
    max_reproj_px: float = 3.0  # PnP RMS reprojection error of its RANSAC inliers beyond which it is refused
    pnp_ransac_px: float = 3.0  # PnP leaves out matches farther than this from a RANSAC pose
    max_attitude_gap_deg: float = 10.0  # a PnP solution farther than this from a told attitude is refused
    sigma_floor_m: float = 1.5  # georeferencing and terrain error not seen by the residuals
    sigma_homography_m: float = 5.0  # fallback without PnP, attitude known
    sigma_votes_m: float = 2.5  # the position votes' median (parallax of roofs and trees spreads them)
    min_votes_alone: int = 16  # agreeing votes needed when neither the homography nor PnP confirms them
    sigma_nadir_m: float = 12.0  # fallback without PnP or attitude (a nadir guess)
    verify: VerifyConf = field(default_factory=VerifyConf)
    verifier: VerifierMode = VerifierMode.FEATURES  # how a candidate window is checked
    correlate: CorrelateConf = field(default_factory=CorrelateConf)  # verifier correlation or auto
    budget_s: float | None = None  # seconds a frame's search may take (None: no limit)
    # a global or known-area search's windows not read yet are read on a thread of their own while
    # the frames go on, and a frame checks only those already read (a paced run: a cold search never
    # holds the camera up; a track's near search reads its few windows at once)
    background_windows: bool = False
    # ground-resolution matching against map windows
    match_gsd_m: float | None = None  # None: match_gsd_factor × the coarser of the frame's and map's GSD
    match_gsd_factor: float = 0.5  # a real 40 m flight over a 0.5 m/px map registered best at 0.25 m/px
    max_canvas_px: int = 1024  # longest side of the resampled frame (its GSD is raised to fit)
    window_factor: float = 1.5  # window half-size in frame-footprint radii
    window_features: int = 6  # a window keeps this many times the frame's feature budget
    max_window_px: int = 4096  # longest side of a map window for detection
    k_windows: int = 8  # windows verified after a global search
    frame_gsd_tries: tuple[float, ...] = (0.3, 0.15, 0.6)  # m/px guesses without height or intrinsics
    # > 1: no window verified, try once more this much coarser (2 × the default match_gsd_factor: the
    # coarser of the frame's and the map's own GSD, where detail the map lacks no longer splits
    # matches); 1: off
    retry_gsd_factor: float = 2.0
    view_detail_factor: float = 0.0  # > 0: frame views keep detail only down to this × the map's GSD
    window_floor_m: float = 10.0  # least radius of a near search through windows
    # a landing's last metres see a few map pixels, and a search there only burns time
    min_map_px: float = 12.0  # map pixels a known camera's footprint spans (shorter side) to search the map
    ground_ransac_m: float = 3.0  # homography tolerance on ground views, metres (parallax of roofs, trees)
    window_min_inlier_ratio: float = 0.05  # a window's many distractors lower the share of inliers
    guided: bool = True  # attitude told, near a prediction: match each keypoint only where the prior puts it
    guided_max_prior: float = 1.0  # ... when the prior's radius is at most this share of the view's
    # a frame no map window verifies is aligned with the last located frame (:mod:`keyframe`): a
    # landing's low frames see too little of the map; never instead of a map fix
    keyframe_fallback: bool = True
    keyframe: KeyframeConf = field(default_factory=KeyframeConf)  # its bounds and matching

    def pose(self) -> PoseConf:
        return PoseConf(
            self.max_reproj_px,
            self.pnp_ransac_px,
            self.max_attitude_gap_deg,
            self.sigma_floor_m,
            self.sigma_homography_m,
            self.sigma_votes_m,
            self.sigma_nadir_m,
            self.verify.vote_m,
        )


@dataclass
class Fix:
    ok: bool
    reason: str = ""  # why there is no fix (empty when ok)
    method: str = ""  # "pnp", "nadir" or "votes" (attitude told, PnP refused), "homography"
    note: str = ""  # why PnP was not used, when it was not
    position_of: str = ""  # "camera" (the point below it) or "image_centre" (the camera unknown)
    x: float | None = None  # east (or local x), metres in the index frame
    y: float | None = None
    lat: float | None = None
    lon: float | None = None
    alt: float | None = None  # camera height above the ground plane (PnP only)
    heading: float | None = None  # degrees clockwise from north of the frame's top
    attitude: list[float] | None = None  # the camera's solved [yaw, pitch, roll] (PnP only, :mod:`mount`)
    cov: list[list[float]] | None = None  # 2×2 (east, north) m²
    inliers: int = 0
    window: list[float] | None = None  # [x, y, half_size_m, gsd_m] of the map window it matched
    search: str = ""  # "global", "near" (track prediction), "area" (every candidate of a known area)
    # or "keyframe" (aligned with the last located frame, no map window verified)
    keyframe_chain: int = 0  # "keyframe": steps from the last map fix
    consensus: str = ""  # "votes" (the matches voted for the position) or "homography"
    topk_ids: list[int] = field(default_factory=list)
    topk_scores: list[float] = field(default_factory=list)
    verified: int = 0
    correlation: dict[str, float | str] = field(
        default_factory=dict
    )  # the peak's statistics, when correlated
    windows_left: int = 0  # windows a search cut by the time budget left for the next frames
    timing_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Pending:
    """A search the time budget cut short: where the next frame of the same search goes on."""

    signature: object  # None: a global search; else its region
    found: Candidates
    coarser: float  # the GSD try it was in
    keys: list[WindowKey]  # the windows of that try not checked yet, in order


class Locator:
    """One frame (and its descriptor) → a :class:`Fix`. ``index`` is a loaded ``TileIndex`` with its map.

    One extractor and one matcher serve the frame's views and the map's windows (a learned network
    is one session however many image sizes it sees).
    """

    def __init__(
        self,
        index,
        conf: LocateConf = LocateConf(),
        intrinsics: Intrinsics | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.index = index
        self.conf = conf
        self.intrinsics = intrinsics
        self.clock = clock  # seconds; the budget is measured by it
        self._pending: _Pending | None = None  # a search the budget cut short
        self._check_s: dict[bool, float] = {}  # how long the last check of a cached / new window took
        self._frame_checks = 0  # windows checked for the frame in hand
        self._prepare_s = 0.0  # seconds the frame's side of the last checks took
        frames = Verifier(conf.verify, headroom=conf.window_features)
        canvas = frames.sized(conf.max_canvas_px)
        # windows keep more keypoints than a frame; they are detected at one turn: the map is north-up
        window_verifier = frames.sized(conf.max_window_px, frames.budget * conf.window_features)
        self.windows = MapWindows(index.map_window, window_verifier, conf.window_factor)
        self.views = FrameViews(conf, index.map_gsd_m)
        self.rotation_invariant = frames.extractor.rotation_invariant
        # features check windows in every mode: correlation needs the camera known, auto falls back
        self.verifier: WindowVerifier = FeatureWindows(conf, self.windows, canvas)
        self.correlation = None
        if conf.verifier != VerifierMode.FEATURES:
            self.correlation = AreaCorrelation(index, conf.correlate, self.windows, conf.k_windows)
        self.keyframes = Keyframes(conf.keyframe) if conf.keyframe_fallback else None

    def forget(self) -> None:
        """Drop what earlier frames taught (the camera a fix measured): the next frame stands alone."""
        self.views = FrameViews(self.conf, self.index.map_gsd_m)
        if self.keyframes is not None:
            self.keyframes.forget()

    def confirm(self, accepted: bool) -> None:
        """Whether the track accepted the last fix (only then may its frame become the keyframe)."""
        if self.keyframes is not None:
            self.keyframes.confirm(accepted)

    def locate(
        self,
        image: np.ndarray,
        descriptor: np.ndarray,
        region: Region | None = None,
        telemetry: Telemetry | None = None,
        exhaustive: bool = False,
    ) -> Fix:
        """``region`` (x, y, radius_m): verify only there; ``exhaustive``: every window in it (a
        known area) instead of the nearest ``k_track``.

        With ``conf.budget_s``, a window is only begun while it fits in what is left of the budget
        (judged by how long the last window of its kind, cached or not, took), except a frame's
        first, so that a search always moves on (a budget of 0 checks none); a search cut short
        answers "no fix" with the best window so far and why, and a global or known-area search
        goes on with the windows left on the next frame that asks for the same search. With
        ``conf.background_windows`` the windows of a global or known-area search not read yet are
        read on a thread of their own and left for a later frame."""
        t0 = self.clock()
        deadline = t0 + self.conf.budget_s if self.conf.budget_s is not None else math.inf
        signature = region  # a track's prediction moves: only a global or known-area search goes on
        pending = (
            self._pending if self._pending is not None and self._pending.signature == signature else None
        )
        self._pending, self._frame_checks = None, 0
        background = self.conf.background_windows and (region is None or exhaustive)
        if pending is not None:  # the windows a cut search left, in their order
            found = pending.found
        elif region is not None:  # the windows covering the region are the candidates
            found = Candidates(Search.AREA if exhaustive else Search.NEAR)
        else:
            found = retrieve(self.index, descriptor, self.conf.k_global)
        t1 = self.clock()
        timing = {"search_ms": (t1 - t0) * 1e3}
        fix = Fix(False, search=found.search.value, topk_ids=found.ids, topk_scores=found.scores)
        fix.timing_ms = timing
        enough = self.conf.enough_inliers_near if region is not None else self.conf.enough_inliers
        intrinsics = self._intrinsics(image)
        seen_px = self.views.map_pixels(image.shape, telemetry, intrinsics)
        if seen_px is not None and seen_px < self.conf.min_map_px:
            fix.reason = f"the frame spans {seen_px:.0f} map pixels, fewer than {self.conf.min_map_px:g}"
            if self.keyframes is not None:
                self._from_keyframe(fix, image, intrinsics, telemetry, region)
            timing["verify_ms"] = (self.clock() - t1) * 1e3
            return fix
        centres = [tuple(self.index.centers_xy[i]) for i in found.ids]
        if self.correlation is not None and self._correlate(
            fix, image, intrinsics, telemetry, region, centres
        ):
            timing["verify_ms"] = (self.clock() - t1) * 1e3
            return fix
        if "x" in fix.correlation:
            # auto, no distinct peak: the features check the correlation's best place, guided by it
            region = (fix.correlation["x"], fix.correlation["y"], self.conf.correlate.distinct_m)
            exhaustive, pending, signature = False, None, region  # a place no later search asks for
        best, rejected, consensus = None, [], Consensus.HOMOGRAPHY
        views_s, extracted = 0.0, self.windows.extract_s
        tries = self.views.coarser_tries()
        for coarser in tries[tries.index(pending.coarser) :] if pending is not None else tries:
            t = self.clock()
            consensus, views = self.views.views(
                image, telemetry, intrinsics, self.rotation_invariant, coarser
            )
            if pending is not None and pending.coarser == coarser:
                keys = pending.keys
            else:
                keys = (
                    candidate_keys(self.conf, self.windows, views, region, exhaustive, centres)
                    if views
                    else []
                )
            if not keys:
                if not rejected:
                    fix.reason = "no windows near the prediction" if region else "no candidates"
                    fix.reason = fix.reason if views else "the frame does not see the ground"
                break
            job = FrameJob(views, consensus, keys, region, exhaustive, heading_known(telemetry))
            views_s += self.clock() - t
            check = self._prepared(job)
            if background:
                self.windows.prefetch(keys)
            best, rejections, left, cut = best_of(
                len(keys),
                check,
                enough,
                lambda i, keys=keys: self._out_of_time(deadline, keys[i]),
                lambda i, keys=keys: not background or self.windows.cached(keys[i]),
            )
            rejected += [(v, keys) for v in rejections]
            views_s += self._prepare_s
            if best is not None and background:
                # a search that goes on over frames tries the window that verified first
                verified = [keys[best.tile_id]] + [keys[i] for i in left]
                self._pending = _Pending(signature, found, coarser, verified)
            elif best is None and left:
                self._pending = _Pending(signature, found, coarser, [keys[i] for i in left])
                fix.windows_left = len(left)
                spent = f"time budget of {self.conf.budget_s:g} s spent" if cut else "still being read"
                fix.reason = f"{spent}, {fix.windows_left} window(s) left"
            if best is not None or fix.windows_left:
                break
        if background:  # what the search no longer needs is not read
            self.windows.cancel_reads(self._pending.keys if self._pending is not None else keys)
        t2 = self.clock()
        timing["verify_ms"] = (t2 - t1) * 1e3
        timing["views_ms"] = views_s * 1e3
        timing["windows_ms"] = (self.windows.extract_s - extracted) * 1e3
        timing["match_ms"] = timing["verify_ms"] - timing["views_ms"] - timing["windows_ms"]
        fix.verified = len(rejected) + (best is not None)
        if best is None:
            if rejected:
                worst, among = max(rejected, key=lambda r: r[0].inliers)
                name = window_name(among[worst.tile_id], self.conf.window_factor)
                why = f"best: {name}: {worst.reason}"
                fix.reason = f"{fix.reason} ({why})" if fix.reason else f"no window verified ({why})"
            if self.keyframes is not None:
                self._from_keyframe(fix, image, intrinsics, telemetry, region)
            return fix
        key = keys[best.tile_id]
        fix.window = [*key.centre(self.conf.window_factor), key.half_size(self.conf.window_factor), key.gsd_m]
        fix.consensus = Consensus.VOTES.value if best.position is not None else Consensus.HOMOGRAPHY.value
        self._place(fix, best, image.shape, intrinsics, telemetry)
        if not fix.ok and self.keyframes is not None:
            self._from_keyframe(fix, image, intrinsics, telemetry, region)
            return fix
        if fix.ok and consensus != Consensus.VOTES and best.homography is not None:
            self.views.learn(fix.heading, best, image.shape)
        if fix.ok and "x" in fix.correlation:
            self._agree(fix)
        if fix.ok and self.keyframes is not None and fix.method != "votes":
            # keyframe steps are searched about the track's prediction, which they then confirm: only
            # a fix two estimates agree on anchors them (votes alone are a fix, never a keyframe)
            self.keyframes.remember(image, (fix.x, fix.y), fix.cov, intrinsics, telemetry)
        timing["pose_ms"] = (self.clock() - t2) * 1e3
        return fix

    def _agree(self, fix: Fix) -> None:
        """``auto`` after a correlation without a distinct peak: the features' fix must land on the
        correlation's best place (the features pick between its look-alikes, or confirm it), and the
        correlation's sub-pixel position is kept; a fix elsewhere is refused."""
        best = np.array([fix.correlation["x"], fix.correlation["y"]], dtype=np.float64)
        off = float(np.hypot(fix.x - best[0], fix.y - best[1]))
        if off > self.conf.correlate.distinct_m:
            fix.ok, fix.method = False, ""
            fix.reason = f"the features' fix is {off:.0f} m from the correlation's best place"
            return
        fix.method = f"{VerifierMode.CORRELATION.value}+{fix.method}"
        fix.x, fix.y = float(best[0]), float(best[1])
        self._geodetic(fix)

    def _correlate(
        self,
        fix: Fix,
        image: np.ndarray,
        intrinsics: Intrinsics | None,
        telemetry: Telemetry | None,
        region: Region | None,
        centres: list[tuple[float, float]],
    ) -> bool:
        """Place the frame by area correlation (:mod:`area_correlation`); True when that decides the
        fix. ``correlation``: it always does; ``auto``: a frame of unknown camera, too little texture
        or no distinct peak goes on to the features."""
        only = self.conf.verifier == VerifierMode.CORRELATION
        if not applies(intrinsics, telemetry):
            fix.reason = "correlation needs intrinsics, heading, pitch and height" if only else ""
            return only
        placed = self.correlation.place(image, intrinsics, telemetry, region, centres)
        result = placed.result
        fix.correlation = placed.stats()
        fix.timing_ms.update(result.timing_ms)
        if not only and result.texture < self.conf.correlate.min_texture:
            fix.correlation["refused"] = "too little texture"
            return False
        if not result.ok or not finite(placed):
            fix.correlation["refused"] = result.reason or "a non-finite position"
            if result.xy is not None and not only:  # what the features must agree with (_agree)
                fix.correlation["x"], fix.correlation["y"] = (float(v) for v in result.xy)
            fix.reason = f"correlation: {fix.correlation['refused']}" if only else ""
            return only
        fix.ok = True
        fix.method = fix.consensus = VerifierMode.CORRELATION.value
        fix.x, fix.y = float(result.xy[0]), float(result.xy[1])
        fix.heading, fix.alt, fix.window = placed.heading, placed.alt, placed.window
        fix.position_of = PositionOf.CAMERA.value  # the template's origin: the point below the camera
        fix.cov = [[float(v) for v in row] for row in result.cov]
        self._geodetic(fix)
        return True

    def _geodetic(self, fix: Fix) -> None:
        frame = self.index.frame
        if frame is not None:
            lat, lon, _ = frame.to_geodetic(fix.x, fix.y)
            fix.lat, fix.lon = float(lat), float(lon)

    def _prepared(self, job: FrameJob) -> Check:
        """A check of ``job``'s windows, the frame's side prepared on the first window checked (a
        frame with no window ready costs no features); each check's time is kept by whether its
        window was read already (for the budget), the preparation's in ``_prepare_s``."""
        prepared: list[Check] = []
        self._prepare_s = 0.0

        def check(i: int) -> Verification:
            if not prepared:
                start = self.clock()
                prepared.append(self.verifier.prepare(job))
                self._prepare_s = self.clock() - start
            cached, start = self.windows.cached(job.keys[i]), self.clock()
            self._frame_checks += 1
            try:
                return prepared[0](i)
            finally:
                self._check_s[cached] = self.clock() - start

        return check

    def _out_of_time(self, deadline: float, key: WindowKey) -> bool:
        """Whether checking ``key`` would not end by ``deadline``, judged by the last check of its kind;
        never for a frame's first check under a budget above 0."""
        if self._frame_checks == 0 and self.conf.budget_s:
            return False
        cached = self.windows.cached(key)
        return self.clock() + self._check_s.get(cached, 0.0) > deadline

    def _from_keyframe(
        self,
        fix: Fix,
        image: np.ndarray,
        intrinsics: Intrinsics | None,
        telemetry: Telemetry | None,
        region: Region | None,
    ) -> None:
        """No map window verified ``image``: place it on the keyframe, or say why not in the reason."""
        t = self.clock()
        step, why = self.keyframes.step(image, intrinsics, telemetry, None if region is None else region[:2])
        if step is None and why:
            fix.reason = f"{fix.reason}; keyframe: {why}"
        elif step is not None:
            fix.ok, fix.reason, fix.search, fix.method = True, "", "keyframe", "keyframe"
            fix.x, fix.y, fix.cov = float(step.xy[0]), float(step.xy[1]), step.cov.tolist()
            fix.keyframe_chain, fix.note = step.chain, f"correlation {step.correlation:.2f}"
            fix.position_of, fix.heading = (
                PositionOf.CAMERA.value,
                heading_from_rotation(telemetry_rotation(telemetry)),
            )
            self._geodetic(fix)
        fix.timing_ms["keyframe_ms"] = (self.clock() - t) * 1e3

    def _intrinsics(self, image: np.ndarray) -> Intrinsics | None:
        return self.intrinsics.for_size(image.shape[1], image.shape[0]) if self.intrinsics else None

    def _place(
        self,
        fix: Fix,
        match: Verification,
        shape: tuple[int, ...],
        intrinsics: Intrinsics | None,
        telemetry: Telemetry | None,
    ) -> None:
        fix.inliers = match.inliers
        size = (shape[1], shape[0])
        placed = place(match, match.pixel_to_xy, size, intrinsics, telemetry, self.conf.pose())
        fix.note = placed.note
        if placed.method == "votes" and placed.alt is None and match.inliers < self.conf.min_votes_alone:
            fix.reason = (
                f"{match.inliers} agreeing votes that neither the homography nor PnP confirms "
                f"({self.conf.min_votes_alone} needed)"
            )
            return
        values = [*placed.xy, *placed.cov.ravel(), placed.heading] + (
            [placed.alt] if placed.alt is not None else []
        )
        if not np.all(np.isfinite(values)):
            fix.reason = f"{placed.method} gave a non-finite position"
            return
        fix.ok, fix.method = True, placed.method
        fix.x, fix.y = float(placed.xy[0]), float(placed.xy[1])
        fix.heading, fix.alt = float(placed.heading), placed.alt
        fix.position_of = placed.position_of.value
        fix.attitude = None if placed.attitude is None else [float(a) for a in placed.attitude]
        fix.cov = [[float(v) for v in row] for row in placed.cov]
        self._geodetic(fix)
