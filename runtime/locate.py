"""The locator: retrieve candidate tiles, verify them geometrically, compute the drone's position.

1. Retrieval: the whole index when there is no track (more candidates are verified then, since
   a global descriptor search alone is unreliable), otherwise only tiles near the filter's prediction.
2. Verification (:mod:`verify`): the candidate with the most RANSAC inliers wins.
3. Position of the camera, not of the tile centre: planar PnP of the inlier matches against the
   tile's ground coordinates (the crop's ``pixel_to_xy`` affine) with the camera intrinsics. With
   no intrinsics, or when PnP is degenerate, the image centre is projected through the homography
   and shifted back along the heading by ``altitude · cot(pitch)`` when the attitude is known.

When the bundle keeps its map (``TileIndex.map_window``), verification happens at one ground
resolution (:mod:`ground`, :mod:`windows`): the frame is resampled north-up at the matching GSD —
through the camera model when attitude, height and intrinsics are known, else scaled by a guess
of its GSD (a few guesses until a fix measures it) — and matched against windows of the map read at
that GSD around the candidates. Keypoints go back to the frame's own pixels for the pose.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.features import CLASSICAL_FEATURES
from geolink_edge.runtime.ground import GroundView, linear_scale, nadir_view, quantize_up, scaled_view
from geolink_edge.runtime.intrinsics import Intrinsics, load_intrinsics
from geolink_edge.runtime.mount import world_to_camera
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.runtime.verify import Verification, Verifier, VerifyConf
from geolink_edge.runtime.windows import MapWindows, WindowKey


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
    # ground-resolution matching against map windows (bundles that keep their map)
    ground_matching: bool = True
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
    tile_id: int | None = None
    window: list[float] | None = None  # [x, y, half_size_m, gsd_m] of the map window it matched
    search: str = ""  # "global", "near" (track prediction) or "area" (every candidate of a known area)
    consensus: str = ""  # "votes" (attitude, height and intrinsics known) or "homography"
    topk_ids: list[int] = field(default_factory=list)
    topk_scores: list[float] = field(default_factory=list)
    verified: int = 0
    timing_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _affine(tile) -> np.ndarray:
    return np.asarray(tile.pixel_to_xy, dtype=np.float64).reshape(2, 3)


def _to_ground(affine: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    return pixels @ affine[:, :2].T + affine[:, 2]


def _heading_from_rotation(rotation: np.ndarray) -> float:
    """Heading of the frame's top from a world→camera rotation (camera convention of docs/artifacts.md)."""
    return math.degrees(math.atan2(-rotation[0, 1], rotation[0, 0])) % 360.0


def _camera_centre(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    rotation, _ = cv2.Rodrigues(rvec)
    return -rotation.T @ tvec.reshape(3)


@dataclass
class Pose:
    centre: np.ndarray  # (east, north, up) of the camera in the index frame
    heading: float
    cov: np.ndarray  # 2×2 from the residuals (before the floor)


def planar_pnp(
    frame_xy: np.ndarray, ground_xyz: np.ndarray, intrinsics: Intrinsics, max_reproj_px: float
) -> tuple[Pose | None, str]:
    """Camera pose from pixel ↔ ground matches of a (near-)planar scene, or (None, why not)."""
    if len(frame_xy) < 6:
        return None, "fewer than 6 matches"
    offset = ground_xyz.mean(axis=0)  # centred coordinates keep the solver well conditioned
    obj = (ground_xyz - offset).astype(np.float64)
    img = np.asarray(frame_xy, dtype=np.float64).reshape(-1, 1, 2)
    k, dist = intrinsics.K, intrinsics.dist_array
    try:
        ok, rvec, tvec = cv2.solvePnP(obj, img, k, dist, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            return None, "PnP found no pose"
        rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, dist, rvec, tvec)
    except cv2.error as exc:
        return None, f"PnP failed ({str(exc).strip().splitlines()[-1][:80]})"
    projected, jacobian = cv2.projectPoints(obj, rvec, tvec, k, dist)
    residuals = (projected - img).reshape(-1)
    rms = float(np.sqrt(np.mean(residuals**2) * 2.0))
    if not np.isfinite(rms) or rms > max_reproj_px:
        return None, f"PnP reprojection error {rms:.1f} px"
    rotation, _ = cv2.Rodrigues(rvec)
    depths = (obj @ rotation.T + tvec.reshape(1, 3))[:, 2]
    centre = _camera_centre(rvec, tvec)
    if np.any(depths <= 0) or centre[2] <= 0:
        return None, "PnP pose below the ground"
    # pose covariance from the residuals, propagated to the camera centre by finite differences
    j = jacobian[:, :6]
    dof = max(residuals.size - 6, 1)
    sigma2 = float(residuals @ residuals) / dof
    try:
        cov_pose = sigma2 * np.linalg.inv(j.T @ j)
    except np.linalg.LinAlgError:
        return None, "PnP pose is not determined"
    pose = np.concatenate([rvec.ravel(), tvec.ravel()])
    jc = np.zeros((3, 6))
    for i in range(6):
        step = np.zeros(6)
        step[i] = 1e-6 * max(1.0, abs(pose[i]))
        jc[:, i] = (_camera_centre(*np.split(pose + step, 2)) - _camera_centre(*np.split(pose - step, 2))) / (
            2 * step[i]
        )
    cov = (jc @ cov_pose @ jc.T)[:2, :2]
    if not np.all(np.isfinite(cov)):
        return None, "PnP covariance is not finite"
    return Pose(centre + offset, _heading_from_rotation(rotation), cov), ""


def _world_to_camera(telemetry: Telemetry) -> np.ndarray:
    """World→camera rotation of the camera's yaw, pitch and roll (docs/artifacts.md; roll 0 if unknown)."""
    return world_to_camera(telemetry.yaw, telemetry.pitch, telemetry.roll or 0.0)


def attitude_known(telemetry: Telemetry | None) -> bool:
    return telemetry is not None and None not in (telemetry.yaw, telemetry.pitch, telemetry.altitude)


def ground_offsets(intrinsics: Intrinsics, telemetry: Telemetry, pixels: np.ndarray) -> np.ndarray:
    """East/north metres from the point below the camera to where each pixel's ray meets level
    ground ``telemetry.altitude`` below; NaN for rays at or above the horizon."""
    if len(pixels) == 0:
        return np.zeros((0, 2))
    rays = np.c_[intrinsics.undistort_points(pixels), np.ones(len(pixels))] @ np.linalg.inv(intrinsics.K).T
    world = rays @ _world_to_camera(telemetry)  # each row: R^T · ray
    down = -world[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        offsets = world[:, :2] * (telemetry.altitude / down)[:, None]
    offsets[down <= 1e-3] = np.nan
    return offsets


def nadir_pixel(intrinsics: Intrinsics, telemetry: Telemetry | None) -> np.ndarray | None:
    """Pixel (u, v) that sees the ground straight below the camera, from the attitude; None if the
    attitude is unknown or that point is outside the frame."""
    if telemetry is None or telemetry.yaw is None or telemetry.pitch is None:
        return None
    ray = intrinsics.K @ _world_to_camera(telemetry) @ np.array([0.0, 0.0, -1.0])
    if ray[2] <= 1e-6:
        return None
    uv = ray[:2] / ray[2]
    width, height = intrinsics.width or 2 * intrinsics.cx, intrinsics.height or 2 * intrinsics.cy
    return uv if 0 <= uv[0] < width and 0 <= uv[1] < height else None


class Locator:
    """One frame (and its descriptor) → a :class:`Fix`. ``index`` is a loaded ``TileIndex``."""

    def __init__(self, index, conf: LocateConf = LocateConf(), intrinsics: Intrinsics | None = None):
        self.index = index
        self.conf = conf
        self.intrinsics = intrinsics
        self.verifier = Verifier(conf.verify)
        self.windows: MapWindows | None = None
        if conf.ground_matching and getattr(index, "map_gsd_m", None):
            budget = conf.verify.max_features or getattr(self.verifier.extractor, "max_features", None)
            window_conf = replace(
                conf.verify,
                max_side=conf.max_window_px,
                max_features=(budget or CLASSICAL_FEATURES) * conf.window_features,
            )  # windows are detected at one turn (MapWindows): the map is north-up
            self.windows = MapWindows(index.map_window, Verifier(window_conf), conf.window_factor)
            self.canvas_verifier = Verifier(replace(conf.verify, max_side=conf.max_canvas_px))
        self._gsd: float | None = None  # the matching GSD in use
        self.frame_gsd: float | None = None  # measured by the last fix when the camera is unknown
        self.heading: float | None = None  # of the last fix, to turn frames for non-invariant features

    def retrieve(
        self, descriptor: np.ndarray, region: tuple[float, float, float] | None, exhaustive: bool = False
    ):
        query = np.asarray(descriptor, dtype=np.float32).reshape(1, -1)
        if region is None:
            return self.index.search(query, self.conf.k_global), "global"
        x, y, radius = region
        if exhaustive:  # a known area: every tile in it, nearest first, whatever its descriptor
            ids = self.index.ids_within(x, y, radius)
            distance = np.hypot(*(self.index.centers_xy[ids] - (x, y)).T) if len(ids) else []
            return SimpleNamespace(ids=ids[np.argsort(distance, kind="stable")], scores=[]), "area"
        result = self.index.search_xy(query, self.conf.k_track, x, y, radius)
        # nearest first: the tile centred closest to the prediction is the likeliest to hold the frame
        ids = np.asarray(result.ids).reshape(-1)
        valid = ids[ids >= 0]
        distance = [np.hypot(*(np.asarray(self.index.tile(i).center_xy) - (x, y))) for i in valid]
        order = np.argsort(distance, kind="stable")
        scores = np.asarray(result.scores).reshape(-1)[: len(valid)]
        return SimpleNamespace(ids=valid[order], scores=scores[order]), "near"

    def locate(
        self,
        image: np.ndarray,
        descriptor: np.ndarray,
        region: tuple[float, float, float] | None = None,
        telemetry: Telemetry | None = None,
        exhaustive: bool = False,
    ) -> Fix:
        """``region`` (x, y, radius_m): verify only there; ``exhaustive``: every candidate in it (a
        known area) instead of the descriptor's best."""
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        if self.windows is not None and region is not None:
            # the windows covering the region are the candidates: no descriptor search needed
            result, mode = SimpleNamespace(ids=[], scores=[]), "area" if exhaustive else "near"
        else:
            result, mode = self.retrieve(descriptor, region, exhaustive)
        ids = [int(i) for i in np.asarray(result.ids).reshape(-1) if int(i) >= 0]
        scores = [float(s) for s in np.asarray(result.scores).reshape(-1)[: len(ids)]]
        t1 = time.perf_counter()
        timing["search_ms"] = (t1 - t0) * 1e3
        fix = Fix(False, search=mode, topk_ids=ids, topk_scores=scores, timing_ms=timing)
        enough = self.conf.enough_inliers_near if region is not None else self.conf.enough_inliers
        best, rejected, what = None, [], "window" if self.windows is not None else "tile"
        # a frame no window verifies gets one coarser try (conf.retry_gsd_factor)
        for coarser in self._coarser_tries():
            if self.windows is not None:
                fix.consensus, candidates, check = self._window_checker(
                    image, telemetry, region, ids, exhaustive, coarser
                )
                order = list(range(len(candidates)))
            else:
                fix.consensus, check = self._checker(image, telemetry)
                candidates = order = ids
            if not candidates:
                break
            best, rejections = self._verify(order, check, enough)
            rejected += [(v, candidates) for v in rejections]
            if best is not None:
                break
        t2 = time.perf_counter()
        timing["verify_ms"] = (t2 - t1) * 1e3
        fix.verified = len(rejected) + (best is not None)
        if not rejected and best is None:
            fix.reason = f"no {what}s near the prediction" if region else "empty index"
            return fix
        if best is None:
            worst, among = max(rejected, key=lambda r: r[0].inliers)
            name = self._candidate_name(what, among, worst.tile_id)
            fix.reason = f"no {what} verified (best: {name}: {worst.reason})"
            return fix
        if what == "window":
            key = candidates[best.tile_id]
            best.tile_id = -1
            fix.window = [
                *key.centre(self.conf.window_factor),
                key.half_size(self.conf.window_factor),
                key.gsd_m,
            ]
        learning = fix.consensus in ("learned", "homography")
        fix.consensus = "votes" if best.position is not None else "homography"
        self._position(fix, best, image.shape, telemetry)
        if fix.ok and learning and best.homography is not None:
            self._learn_camera(fix, best, image.shape)
        timing["pose_ms"] = (time.perf_counter() - t2) * 1e3
        return fix

    def _coarser_tries(self) -> tuple[float, ...]:
        retry = self.conf.retry_gsd_factor
        return (1.0, retry) if self.windows is not None and retry > 1.0 else (1.0,)

    def _candidate_name(self, what: str, candidates: list, i: int) -> str:
        if what == "tile":
            return f"tile {i}"
        key = candidates[i]
        x, y = key.centre(self.conf.window_factor)
        return f"window at ({x:.0f}, {y:.0f}) m, {key.gsd_m:.2f} m/px"

    # -- verification at one ground resolution ---------------------------------------------------
    def _match_gsd(self, frame_gsd: float, coarser: float = 1.0) -> float:
        """The matching GSD; ``coarser`` > 1: that much coarser, on the ladder (a retry)."""
        if self.conf.match_gsd_m is not None:
            gsd = self.conf.match_gsd_m
        else:
            gsd = quantize_up(max(frame_gsd, self.index.map_gsd_m) * self.conf.match_gsd_factor, 4)
            # a steady resolution keeps the cached windows: move only when a whole ladder step off
            if self._gsd is None or abs(math.log2(gsd / self._gsd)) > 0.3:
                self._gsd = gsd
            gsd = self._gsd
        return gsd if coarser == 1.0 else quantize_up(gsd * coarser, 4)

    def _detail(self) -> float | None:
        """The finest ground detail views keep beyond their own GSD: with ``view_detail_factor``, what
        the map holds (its upsampled windows lack the frame's finer texture)."""
        return self.conf.view_detail_factor * self.index.map_gsd_m or None

    def _views(
        self, image: np.ndarray, telemetry: Telemetry | None, coarser: float = 1.0
    ) -> tuple[str, list[GroundView]]:
        """The consensus this frame allows and its ground views (one per GSD guess)."""
        intrinsics = self.intrinsics.for_size(image.shape[1], image.shape[0]) if self.intrinsics else None
        if intrinsics is not None and attitude_known(telemetry):
            slant = telemetry.altitude / max(math.sin(math.radians(telemetry.pitch)), 0.1)
            gsd = self._match_gsd(slant / intrinsics.fx, coarser)
            world_to_camera = _world_to_camera(telemetry)
            view = nadir_view(
                image,
                intrinsics,
                world_to_camera,
                telemetry.altitude,
                gsd,
                self.conf.max_canvas_px,
                detail_m=self._detail(),
            )
            return "votes", [view] if view is not None else []
        if self.frame_gsd is not None and self.heading is not None:
            # the camera a recent fix measured: a north-up view whose matches vote, like a known camera's
            gsd = self._match_gsd(self.frame_gsd, coarser)
            view = scaled_view(image, self.frame_gsd, gsd, self.heading, self._detail())
            return "learned", [view]
        guesses = [self.frame_gsd] if self.frame_gsd else list(self.conf.frame_gsd_tries)
        heading = None
        if not self.verifier.extractor.rotation_invariant and self._heading_known(telemetry):
            heading = telemetry.yaw
        gsd = self._match_gsd(guesses[0], coarser)  # one resolution for every guess: the windows are shared
        return "homography", [scaled_view(image, g, gsd, heading, self._detail()) for g in guesses]

    def _window_checker(
        self,
        image: np.ndarray,
        telemetry: Telemetry | None,
        region: tuple[float, float, float] | None,
        ids: list[int],
        exhaustive: bool,
        coarser: float = 1.0,
    ) -> tuple[str, list[WindowKey], Callable[[int], Verification]]:
        """Candidate windows (covering ``region``, or holding the retrieved tiles) and a check of one,
        at the matching GSD or ``coarser`` times it."""
        consensus, views = self._views(image, telemetry, coarser)
        if not views:
            return consensus, [], lambda i: Verification(i, 0, "the frame does not see the ground")
        footprint = views[0].radius_m  # the likeliest guess sizes the windows: the others still overlap
        gsd = views[0].gsd_m
        if region is not None:
            keys = self.windows.keys_near(*region, footprint, gsd)
            keys = keys if exhaustive else keys[: self.conf.k_track]
        else:
            centres = [tuple(self.index.centers_xy[i]) for i in ids]
            keys = self.windows.keys_for_points(centres, footprint, gsd)[: self.conf.k_windows]
        # a north-up view needs no turned tries; a view of unknown heading takes the conf's
        turns = 1 if consensus != "homography" or self._heading_known(telemetry) else None
        frames = [(view, self.canvas_verifier.features(view.image, view.mask, turns)) for view in views]
        offsets = [view.offsets_m(features.xy) for view, features in frames]
        matcher = self.windows.verifier

        def check(i: int) -> Verification:
            window = self.windows.window(keys[i])
            tried = []
            for (view, features), offset in zip(frames, offsets, strict=True):
                if consensus != "homography":
                    reference, prior = window.features, None
                    if region is not None and not exhaustive:
                        # the view's reference point lies within the prior circle: so does any match's
                        # ground point, give or take the view's radius; with the attitude told, each
                        # keypoint's own, closer (a heading measured by the last fix may have turned)
                        guide = self.conf.guided and consensus == "votes"
                        # a prior as wide as the view would allow nearly every pair, at brute-force cost
                        guide = guide and region[2] <= self.conf.guided_max_prior * view.radius_m
                        prior = region if guide else None
                        reach = region[2] + view.radius_m + self.conf.verify.vote_m
                        reference = window.near(region[0], region[1], reach)
                    # the view is north-up at the window's resolution: keypoint shapes must agree
                    result = matcher.verify_by_votes(
                        i, features, reference, offset, window.pixel_to_xy, aligned=True, prior=prior
                    )
                    if result.ok and consensus == "learned" and result.homography is None:
                        # votes alone would keep a stale heading: without a homography that measures
                        # the camera again, the RANSAC homography below decides
                        result.reason = "votes without a plausible homography"
                    if result.ok:
                        return _to_frame(result, view, window.pixel_to_xy)
                    tried.append(result)
                if consensus != "votes":  # the homography needs no heading (the drone may have turned)
                    ransac_px = self.conf.ground_ransac_m / view.gsd_m
                    ratio = self.conf.window_min_inlier_ratio
                    result = matcher.verify(i, features, window.features, ransac_px, ratio)
                    if result.ok:
                        return _to_frame(result, view, window.pixel_to_xy)
                    tried.append(result)
            return max(tried, key=lambda v: v.inliers)

        return consensus, keys, check

    @staticmethod
    def _heading_known(telemetry: Telemetry | None) -> bool:
        return telemetry is not None and telemetry.yaw is not None

    def _learn_camera(self, fix: Fix, match: Verification, shape: tuple[int, ...]) -> None:
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
        self.heading = fix.heading

    def _checker(
        self, image: np.ndarray, telemetry: Telemetry | None
    ) -> tuple[str, Callable[[int], Verification]]:
        """The consensus this frame allows ("votes" or "homography") and a check of one candidate tile."""
        frame = self.verifier.features(image)
        intrinsics = self.intrinsics.for_size(image.shape[1], image.shape[0]) if self.intrinsics else None
        if intrinsics is None or not attitude_known(telemetry):
            return "homography", lambda tile_id: self.verifier.verify(
                tile_id, frame, self.verifier.tile_features(tile_id, self.index.tile_image)
            )
        offsets = ground_offsets(intrinsics, telemetry, frame.xy)
        return "votes", lambda tile_id: self.verifier.verify_by_votes(
            tile_id,
            frame,
            self.verifier.tile_features(tile_id, self.index.tile_image),
            offsets,
            _affine(self.index.tile(tile_id)),
        )

    def verify_tile(
        self, image: np.ndarray, tile_id: int, telemetry: Telemetry | None = None
    ) -> Verification:
        """The verification ``locate`` would make of one tile (for pictures and debugging)."""
        return self._checker(image, telemetry)[1](tile_id)

    def _verify(
        self, ids: list[int], check: Callable[[int], Verification], enough: int
    ) -> tuple[Verification | None, list[Verification]]:
        best: Verification | None = None
        rejected: list[Verification] = []
        for tile_id in ids:
            try:
                result = check(tile_id)
            except GeolinkError as exc:  # one broken crop must not stop the flight
                rejected.append(Verification(tile_id, 0, str(exc)))
                continue
            if not result.ok:
                rejected.append(result)
                continue
            if best is None or result.inliers > best.inliers:
                best = result
            if best.inliers >= enough:
                break
        return best, rejected

    def _position(
        self, fix: Fix, match: Verification, shape: tuple[int, ...], telemetry: Telemetry | None
    ) -> None:
        if match.pixel_to_xy is not None:  # a map window
            affine = match.pixel_to_xy
        else:
            affine = _affine(self.index.tile(match.tile_id))
            fix.tile_id = match.tile_id
        fix.inliers = match.inliers
        height, width = shape[:2]
        intrinsics = self.intrinsics.for_size(width, height) if self.intrinsics else None
        pose, why_not = None, "no intrinsics"
        if intrinsics is not None:
            ground = np.c_[_to_ground(affine, match.tile_xy), np.zeros(len(match.tile_xy))]
            pose, why_not = planar_pnp(match.frame_xy, ground, intrinsics, self.conf.max_reproj_px)
        below = self._below_camera(match, affine, intrinsics, telemetry)
        if intrinsics is None and match.homography is not None:
            below = None  # an unknown camera: the homography gives the position and the heading
        if below is not None:
            # With the attitude known, the ground point below the camera gives the position without
            # assuming level ground; PnP on sloping terrain would tilt the camera and shift it sideways.
            method, xy = below
            sigma = self.conf.sigma_votes_m if method == "votes" else self.conf.sigma_floor_m
            cov = (pose.cov if pose is not None else np.zeros((2, 2))) + np.eye(2) * sigma**2
            heading = self._fix_heading(pose, telemetry)
            self._finish(fix, method, xy, cov, heading, float(pose.centre[2]) if pose is not None else None)
            return
        if pose is not None:
            cov = pose.cov + np.eye(2) * self.conf.sigma_floor_m**2
            self._finish(fix, "pnp", pose.centre[:2], cov, pose.heading, float(pose.centre[2]))
            return
        self._from_homography(fix, match, affine, (width, height), intrinsics, telemetry)
        fix.note = why_not

    def _fix_heading(self, pose: Pose | None, telemetry: Telemetry | None) -> float:
        """The image top's heading: from PnP, else from the whole camera attitude (yaw alone is 180° off
        once a body camera looks past the vertical), else the yaw, else the heading the last fix measured."""
        if pose is not None:
            return pose.heading
        if telemetry is not None and telemetry.yaw is not None and telemetry.pitch is not None:
            return _heading_from_rotation(_world_to_camera(telemetry))
        return float(telemetry.yaw if telemetry is not None and telemetry.yaw is not None else self.heading)

    def _below_camera(
        self,
        match: Verification,
        affine: np.ndarray,
        intrinsics: Intrinsics | None,
        telemetry: Telemetry | None,
    ) -> tuple[str, np.ndarray] | None:
        """("nadir", xy): the pixel straight below the camera mapped through the homography; or
        ("votes", xy): the position votes' median, when there is no such homography or the two
        disagree (the votes are robust, the homography is the more precise when it holds)."""
        nadir = nadir_pixel(intrinsics, telemetry) if intrinsics is not None else None
        xy = None
        if nadir is not None and match.homography is not None:
            xy = _to_ground(affine, cv2.perspectiveTransform(nadir.reshape(1, 1, 2), match.homography))[0]
        if match.position is None:
            return None if xy is None else ("nadir", xy)
        if xy is not None and np.hypot(*(xy - match.position)) <= self.conf.verify.vote_m:
            return "nadir", xy
        return "votes", np.asarray(match.position, dtype=np.float64)

    def _from_homography(
        self,
        fix: Fix,
        match: Verification,
        affine: np.ndarray,
        size: tuple[int, int],
        intrinsics: Intrinsics | None,
        telemetry: Telemetry | None,
    ) -> None:
        width, height = size
        centre = (intrinsics.cx, intrinsics.cy) if intrinsics else (width / 2.0, height / 2.0)
        probe = np.array([[centre[0], centre[1]], [centre[0], centre[1] - 0.1 * height]], dtype=np.float64)
        mapped = cv2.perspectiveTransform(probe.reshape(-1, 1, 2), match.homography).reshape(-1, 2)
        ground = _to_ground(affine, mapped)
        up = ground[1] - ground[0]
        heading = math.degrees(math.atan2(up[0], up[1])) % 360.0
        position = ground[0]
        sigma = self.conf.sigma_nadir_m
        known = telemetry is not None and telemetry.pitch is not None and telemetry.altitude is not None
        if known:
            # the optical axis meets the ground this far from the point below the camera
            yaw = telemetry.yaw if telemetry.yaw is not None else heading
            axis = world_to_camera(yaw, max(telemetry.pitch, 1.0), telemetry.roll or 0.0)[2]
            position = position - axis[:2] * telemetry.altitude / -axis[2]
            sigma = self.conf.sigma_homography_m
        self._finish(fix, "homography", position, np.eye(2) * sigma**2, heading, None)

    def _finish(
        self, fix: Fix, method: str, xy: np.ndarray, cov: np.ndarray, heading: float, alt: float | None
    ) -> None:
        values = [*xy, *cov.ravel(), heading] + ([alt] if alt is not None else [])
        if not np.all(np.isfinite(values)):
            fix.reason = f"{method} gave a non-finite position"
            return
        fix.ok, fix.method = True, method
        fix.x, fix.y = float(xy[0]), float(xy[1])
        fix.heading, fix.alt = float(heading), alt
        fix.cov = [[float(v) for v in row] for row in cov]
        frame = self.index.frame
        if frame is not None:
            lat, lon, _ = frame.to_geodetic(fix.x, fix.y)
            fix.lat, fix.lon = float(lat), float(lon)


def _to_frame(match: Verification, view: GroundView, window_to_xy: np.ndarray) -> Verification:
    """A verification made on a ground view, in the frame's own pixels."""
    match.frame_xy = view.frame_pixels(match.frame_xy)
    if match.homography is not None:
        match.homography = match.homography @ np.linalg.inv(view.canvas_to_frame)
    match.pixel_to_xy = window_to_xy
    return match


def near_region(index, near: tuple[float, float, float]) -> tuple[float, float, float]:
    """(lat, lon, radius_m) → (x, y, radius_m) in the index frame."""
    lat, lon, radius = near
    if index.frame is None:
        raise GeolinkError("--near needs an index with a geodetic origin (this one has a local frame)")
    east, north, _ = index.frame.to_enu(lat, lon)
    return float(east), float(north), float(radius)


def open_index(index_dir: str | Path, card: ModelCard, model: str | Path):
    """Load the tile index and refuse it if it was built with another encoder."""
    from geolink_edge.index.search import TileIndex

    index = TileIndex.load(index_dir)
    try:
        index.check_model(card.weights_hash)
    except GeolinkError:
        raise GeolinkError(
            f"model {model} (hash {card.short_hash}) does not match index {index_dir} "
            f"(built with model hash {str(index.model_hash)[:12]})"
        ) from None
    return index


def locate_image(
    image_path: str | Path,
    model: str | Path,
    index_dir: str | Path,
    intrinsics: str | Path | None = None,
    heading: float | None = None,
    altitude: float | None = None,
    conf: LocateConf = LocateConf(),
    pitch: float | None = None,
    roll: float | None = None,
    near: tuple[float, float, float] | None = None,
) -> dict:
    """One photo → one fix: a global search, or with ``near`` (lat, lon, radius_m) every candidate
    in that circle (a single image has no track to narrow it).

    ``heading``, ``pitch`` and ``roll`` are the camera's (the convention of :mod:`mount`); with
    them, the height and the intrinsics the matches vote for the position."""
    from geolink_edge.backends import load_embedder

    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise GeolinkError(f"{image_path}: not a readable image")
    embedder = load_embedder(model)
    index = open_index(index_dir, embedder.card, model)
    camera = load_intrinsics(intrinsics) if intrinsics is not None else None
    known = [v for v in (heading, pitch, roll, altitude) if v is not None]
    telemetry = Telemetry(heading, pitch, roll, altitude) if known else None
    t0 = time.perf_counter()
    descriptor = embedder.embed([image])[0]
    embed_ms = (time.perf_counter() - t0) * 1e3
    region = near_region(index, near) if near is not None else None
    fix = Locator(index, conf, camera).locate(
        image, descriptor, region, telemetry, exhaustive=region is not None
    )
    fix.timing_ms["embed_ms"] = embed_ms
    return {"image": str(image_path), **fix.to_dict()}
