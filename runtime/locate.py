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
4. Position (:mod:`pose`): attitude told, the pixel below the camera through the votes' homography
   (or the votes' median); intrinsics without attitude, the camera centre from planar PnP; neither,
   the image centre through the homography.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from geolink_edge.runtime.area_correlation import AreaCorrelation, applies, finite
from geolink_edge.runtime.candidates import (
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
from geolink_edge.runtime.pose import PoseConf, heading_known, place
from geolink_edge.runtime.retrieval import Candidates, Region, Search, retrieve
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.runtime.verify import Verification, Verifier, VerifyConf
from geolink_edge.runtime.views import Consensus, FrameViews
from geolink_edge.runtime.windows import MapWindows


@dataclass(frozen=True)
class LocateConf:
    k_global: int = 24  # candidates verified on a global search
    k_track: int = 6  # candidates verified near the prediction
    enough_inliers: int = 150  # a candidate this good ends a global verification early
    enough_inliers_near: int = 20  # near the prediction any verified tile gives the same position
    max_reproj_px: float = 3.0  # PnP RMS reprojection error beyond which PnP is not trusted
    sigma_floor_m: float = 1.5  # georeferencing and terrain error not seen by the residuals
    sigma_homography_m: float = 5.0  # fallback without PnP, attitude known
    sigma_votes_m: float = 2.5  # the position votes' median (parallax of roofs and trees spreads them)
    sigma_nadir_m: float = 12.0  # fallback without PnP or attitude (a nadir guess)
    verify: VerifyConf = field(default_factory=VerifyConf)

    def pose(self) -> PoseConf:
        return PoseConf(
            self.max_reproj_px,
            self.sigma_floor_m,
            self.sigma_homography_m,
            self.sigma_votes_m,
            self.sigma_nadir_m,
            self.verify.vote_m,
        )

    verifier: VerifierMode = VerifierMode.FEATURES  # how a candidate window is checked
    correlate: CorrelateConf = field(default_factory=CorrelateConf)  # verifier correlation or auto
    # ground-resolution matching against map windows
    match_gsd_m: float | None = None  # None: match_gsd_factor × the coarser of the frame's and map's GSD
    match_gsd_factor: float = 0.5  # a real 40 m flight over a 0.5 m/px map registered best at 0.25 m/px
    max_canvas_px: int = 1024  # longest side of the resampled frame (its GSD is raised to fit)
    window_factor: float = 1.5  # window half-size in frame-footprint radii
    window_features: int = 6  # a window keeps this many times the frame's feature budget
    max_window_px: int = 4096
    k_windows: int = 8  # windows verified after a global search
    frame_gsd_tries: tuple[float, ...] = (0.3, 0.15, 0.6)  # m/px guesses without height or intrinsics
    # > 1: no window verified, try once more this much coarser (2 × the default match_gsd_factor: the
    # coarser of the frame's and the map's own GSD, where detail the map lacks no longer splits
    # matches); 1: off
    retry_gsd_factor: float = 2.0
    view_detail_factor: float = 0.0  # > 0: frame views keep detail only down to this × the map's GSD
    window_floor_m: float = 10.0  # least radius of a near search through windows
    ground_ransac_m: float = 3.0  # homography tolerance on ground views, metres (parallax of roofs, trees)
    window_min_inlier_ratio: float = 0.05  # a window's many distractors lower the share of inliers
    guided: bool = True  # attitude told, near a prediction: match each keypoint only where the prior puts it
    guided_max_prior: float = 1.0  # ... when the prior's radius is at most this share of the view's


@dataclass
class Fix:
    ok: bool
    reason: str = ""  # why there is no fix (empty when ok)
    method: str = ""  # "nadir" or "votes" (attitude known), "pnp" or "homography"
    note: str = ""  # why PnP was not used, when it was not
    x: float | None = None  # east (or local x), metres in the index frame
    y: float | None = None
    lat: float | None = None
    lon: float | None = None
    alt: float | None = None  # camera height above the ground plane (PnP only)
    heading: float | None = None  # degrees clockwise from north of the frame's top
    cov: list[list[float]] | None = None  # 2×2 (east, north) m²
    inliers: int = 0
    window: list[float] | None = None  # [x, y, half_size_m, gsd_m] of the map window it matched
    search: str = ""  # "global", "near" (track prediction) or "area" (every candidate of a known area)
    consensus: str = ""  # "votes" (the matches voted for the position) or "homography"
    topk_ids: list[int] = field(default_factory=list)
    topk_scores: list[float] = field(default_factory=list)
    verified: int = 0
    correlation: dict[str, float | str] = field(
        default_factory=dict
    )  # the peak's statistics, when correlated
    timing_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Locator:
    """One frame (and its descriptor) → a :class:`Fix`. ``index`` is a loaded ``TileIndex`` with its map.

    One extractor and one matcher serve the frame's views and the map's windows (a learned network
    is one session however many image sizes it sees).
    """

    def __init__(self, index, conf: LocateConf = LocateConf(), intrinsics: Intrinsics | None = None):
        self.index = index
        self.conf = conf
        self.intrinsics = intrinsics
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

    def forget(self) -> None:
        """Drop what earlier frames taught (the camera a fix measured): the next frame stands alone."""
        self.views = FrameViews(self.conf, self.index.map_gsd_m)

    def locate(
        self,
        image: np.ndarray,
        descriptor: np.ndarray,
        region: Region | None = None,
        telemetry: Telemetry | None = None,
        exhaustive: bool = False,
    ) -> Fix:
        """``region`` (x, y, radius_m): verify only there; ``exhaustive``: every window in it (a
        known area) instead of the nearest ``k_track``."""
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        if region is not None:  # the windows covering the region are the candidates
            found = Candidates(Search.AREA if exhaustive else Search.NEAR)
        else:
            found = retrieve(self.index, descriptor, self.conf.k_global)
        t1 = time.perf_counter()
        timing["search_ms"] = (t1 - t0) * 1e3
        fix = Fix(
            False, search=found.search.value, topk_ids=found.ids, topk_scores=found.scores, timing_ms=timing
        )
        enough = self.conf.enough_inliers_near if region is not None else self.conf.enough_inliers
        intrinsics = self._intrinsics(image)
        centres = [tuple(self.index.centers_xy[i]) for i in found.ids]
        if self.correlation is not None and self._correlate(
            fix, image, intrinsics, telemetry, region, centres
        ):
            timing["verify_ms"] = (time.perf_counter() - t1) * 1e3
            return fix
        best, rejected, consensus = None, [], Consensus.HOMOGRAPHY
        for coarser in self.views.coarser_tries():
            consensus, views = self.views.views(
                image, telemetry, intrinsics, self.rotation_invariant, coarser
            )
            keys = (
                candidate_keys(self.conf, self.windows, views, region, exhaustive, centres) if views else []
            )
            if not keys:
                fix.reason = "no windows near the prediction" if region else "no candidates"
                fix.reason = fix.reason if views else "the frame does not see the ground"
                break
            job = FrameJob(views, consensus, keys, region, exhaustive, heading_known(telemetry))
            best, rejections = best_of(len(keys), self.verifier.prepare(job), enough)
            rejected += [(v, keys) for v in rejections]
            if best is not None:
                break
        t2 = time.perf_counter()
        timing["verify_ms"] = (t2 - t1) * 1e3
        fix.verified = len(rejected) + (best is not None)
        if best is None:
            if rejected:
                worst, among = max(rejected, key=lambda r: r[0].inliers)
                name = window_name(among[worst.tile_id], self.conf.window_factor)
                fix.reason = f"no window verified (best: {name}: {worst.reason})"
            return fix
        key = keys[best.tile_id]
        fix.window = [*key.centre(self.conf.window_factor), key.half_size(self.conf.window_factor), key.gsd_m]
        fix.consensus = Consensus.VOTES.value if best.position is not None else Consensus.HOMOGRAPHY.value
        self._place(fix, best, image.shape, intrinsics, telemetry)
        if fix.ok and consensus != Consensus.VOTES and best.homography is not None:
            self.views.learn(fix.heading, best, image.shape)
        timing["pose_ms"] = (time.perf_counter() - t2) * 1e3
        return fix

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
            fix.reason = f"correlation: {fix.correlation['refused']}" if only else ""
            return only
        fix.ok = True
        fix.method = fix.consensus = VerifierMode.CORRELATION.value
        fix.x, fix.y = float(result.xy[0]), float(result.xy[1])
        fix.heading, fix.alt, fix.window = placed.heading, placed.alt, placed.window
        fix.cov = [[float(v) for v in row] for row in result.cov]
        self._geodetic(fix)
        return True

    def _geodetic(self, fix: Fix) -> None:
        frame = self.index.frame
        if frame is not None:
            lat, lon, _ = frame.to_geodetic(fix.x, fix.y)
            fix.lat, fix.lon = float(lat), float(lon)

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
        placed = place(
            match, match.pixel_to_xy, size, intrinsics, telemetry, self.conf.pose(), self.views.heading
        )
        fix.note = placed.note
        values = [*placed.xy, *placed.cov.ravel(), placed.heading] + (
            [placed.alt] if placed.alt is not None else []
        )
        if not np.all(np.isfinite(values)):
            fix.reason = f"{placed.method} gave a non-finite position"
            return
        fix.ok, fix.method = True, placed.method
        fix.x, fix.y = float(placed.xy[0]), float(placed.xy[1])
        fix.heading, fix.alt = float(placed.heading), placed.alt
        fix.cov = [[float(v) for v in row] for row in placed.cov]
        self._geodetic(fix)
