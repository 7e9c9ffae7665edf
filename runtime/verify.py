"""Geometric verification: local features and a matcher by name, then a consensus.

Two consensus models, chosen by what is known about the camera:

- **homography** (nothing known): enough matches must agree on one RANSAC homography;
- **position votes** (attitude, height and intrinsics known, as on a drone with an autopilot):
  each match casts a vote for where the camera is — the tile point it matched, minus the ground
  offset its pixel ray has from the point below the camera — and the largest cluster of votes wins.
  One match fixes the only unknowns left (east, north), so a one-point consensus finds the true
  matches among many outliers, and its tolerance is in metres: roofs and tree tops displaced by
  parallax still agree, where a pixel-tight homography throws them away. The agreeing votes then
  fit the scale and turn between the assumed and the true ground (``vote_model="similarity"``): a
  drone's altitude is above its take-off point, not the ground below it, and over a 10 m dip a 40 m
  flight is 25 % higher than it says, which shifts a one-point vote by metres. Given a position
  prior (tracking), each frame keypoint meets only the map keypoints the prior allows (guided).

A RANSAC homography must also be a plausible view of the ground (no reflection, bounded scale and
shear, inliers spread over the frame); after a vote, a homography that is not is dropped and the
votes alone give the position. Passing candidates are ranked by inlier count. Keypoints are
reported in the original frame's pixels, even when the frame is shrunk (speed) before detection,
so the locator can use them with the camera intrinsics.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from geolink_edge.errors import GeolinkError
from geolink_edge.registry import check_name
from geolink_edge.runtime.features import Extractor, Features, create_extractor
from geolink_edge.runtime.features.base import gray
from geolink_edge.runtime.ground import linear_scale
from geolink_edge.runtime.matchers import Matcher, create_matcher
from geolink_edge.runtime.matchers.base import Pairs, Reach

VOTE_MODELS = ("shift", "similarity")
GRID_SAMPLE = 200  # matches the similarity grid search looks at


@dataclass(frozen=True)
class VerifyConf:
    features: str = "sift"  # an extractor of runtime.features, or an exported one (.onnx, .engine)
    matcher: str | None = None  # a matcher of runtime.matchers or an exported one; None: the features' own
    features_weights: str | None = None  # a state-dict file for a learned extractor (else the package's)
    matcher_weights: str | None = None  # the same for a learned matcher
    max_features: int | None = None  # None: the extractor's own budget (3000 classical, 1024 learned)
    max_side: int = 640  # images are shrunk to this longest side before detection
    ratio: float = 0.85  # Lowe's test, a little looser: nadir vs oblique views blur descriptors
    ransac_px: float = 4.0  # RANSAC homography tolerance, px
    min_inliers: int = 15  # fewer RANSAC inliers: not verified
    min_inlier_ratio: float = 0.15  # nor with fewer than this share of the putative matches
    max_scale: float = 8.0  # tile px per frame px, either way
    max_anisotropy: float = 3.0  # a homography stretched more one way than the other: refused
    min_spread: float = 0.04  # inlier bounding box / frame area
    vote_m: float = 4.0  # position votes within this distance agree (parallax of 10 m roofs, height error)
    kd_checks: int = 32  # leaves a SIFT k-d forest search visits (exact brute force is 3× slower)
    min_votes: int = 8  # agreeing votes to accept; tiles of elsewhere gather at most 5 on synthetic flights
    vote_model: str = "similarity"  # "shift": the votes' median; "similarity": also the height and yaw error
    max_height_error: float = 0.4  # the similarity's scale stays within 1/(1 + e) .. 1 + e
    max_yaw_error_deg: float = 10.0  # and its turn within ± this
    # guided by a prior of radius R, a random match's vote still lands within R + vote_m: the agreeing
    # votes must exceed this many times the share of them that chance puts in one vote_m circle
    over_chance: float = 2.0
    # ... or exceed that share by this many of its standard deviations (its square root), if fewer:
    # with many matches, twice chance lies far beyond anything chance gathers; 0: off
    over_chance_sigmas: float = 4.0
    homography_refine_m: float = 0.5  # the votes' homography keeps matches this close on the ground; 0: all
    # 2 or 4: a frame of unknown heading is also detected turned by 180° or by each 90°, and the best
    # matching turn kept; "auto": 4 for extractors that are not rotation-invariant (the learned ones), else 1
    rotations: int | str = "auto"


@dataclass
class Verification:
    tile_id: int
    inliers: int
    reason: str = ""  # empty when accepted
    homography: np.ndarray | None = None  # frame pixels → tile pixels
    frame_xy: np.ndarray | None = None  # inlier pixels in the frame (M, 2)
    tile_xy: np.ndarray | None = None  # their partners in the tile crop (M, 2)
    position: np.ndarray | None = None  # camera (east, north) agreed by the position votes, if voted
    pixel_to_xy: np.ndarray | None = None  # reference pixel → ground affine, when not the tile crop's

    @property
    def ok(self) -> bool:
        return not self.reason


class Verifier:
    """Features and matches by name (:mod:`features`, :mod:`matchers`), then a consensus.

    ``headroom``: :meth:`sized` siblings may detect up to this many times the budget; ``shared``: the
    extractor and matcher of another verifier (one network session however many image sizes).
    """

    def __init__(
        self,
        conf: VerifyConf = VerifyConf(),
        tile_cache: int = 512,
        headroom: int = 1,
        shared: tuple[Extractor, Matcher] | None = None,
    ):
        if conf.rotations not in ("auto", 1, 2, 4):
            raise GeolinkError(f"rotations must be 1, 2, 4 or auto, got {conf.rotations}")
        check_name("vote model", conf.vote_model, VOTE_MODELS)
        self.conf = conf
        if shared is None:
            extractor = create_extractor(conf.features, conf.max_features, conf.features_weights, headroom)
            options = {"ratio": conf.ratio, "kd_checks": conf.kd_checks, "weights": conf.matcher_weights}
            shared = extractor, create_matcher(conf.matcher, extractor, **options)
        self.extractor, self.matcher = shared
        self.budget = conf.max_features or self.extractor.max_features
        automatic = 1 if self.extractor.rotation_invariant else 4
        self.rotations = automatic if conf.rotations == "auto" else conf.rotations
        self._tiles: OrderedDict[Hashable, Features] = OrderedDict()
        self._tile_cache = tile_cache

    def sized(self, max_side: int, max_features: int | None = None) -> Verifier:
        """A verifier of the same extractor and matcher for images shrunk to ``max_side`` and
        ``max_features`` keypoints (default: this one's budget), with its own reference cache."""
        conf = replace(self.conf, max_side=max_side, max_features=max_features or self.budget)
        return Verifier(conf, self._tile_cache, shared=(self.extractor, self.matcher))

    def features(
        self, image: np.ndarray, mask: np.ndarray | None = None, rotations: int | None = None
    ) -> Features:
        """Keypoints (in the image's own pixels) and descriptors; none where ``mask`` is zero
        (nodata, the black outside of a resampled frame).

        ``rotations`` (default: the conf's, see :class:`VerifyConf`) 2 or 4 also detects on the image
        turned by 180° or by each 90° (exact turns, no resampling); each turn's part is matched on its
        own and the best is kept. A caller that knows the heading turns the frame north-up instead and
        passes 1, as do maps (north-up).

        The classical detectors are rotation-invariant, so a frame is not warped north-up for them:
        on a 200-frame synthetic flight warping cost 30 ms a frame (the rotated canvas has twice the
        pixels) and lost a quarter of the agreeing matches to interpolation blur and the black
        corners' edges. The heading enters the geometry instead.
        """
        parts = [self._detect(image, mask)]
        turns = rotations or self.rotations
        for quarter in range(4 // turns, 4, 4 // turns):
            turned = self._detect(np.rot90(image, quarter), None if mask is None else np.rot90(mask, quarter))
            turned.xy = _unturn(turned.xy, quarter, image.shape[1], image.shape[0])
            parts.append(turned)
        parts = [p for p in parts if len(p.xy)] or parts[:1]  # a turn that found nothing has no descriptors
        if len(parts) == 1:
            return parts[0]
        bounds = np.cumsum([0] + [len(p.xy) for p in parts])
        merged = Features(
            np.concatenate([p.xy for p in parts]),
            np.concatenate([p.descriptors for p in parts]),
            parts[0].size,
            scores=np.concatenate([p.scores for p in parts]),
            kind=parts[0].kind,
        )
        merged.turns = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        return merged

    def _detect(self, image: np.ndarray, mask: np.ndarray | None) -> Features:
        h, w = image.shape[:2]
        scale = min(1.0, self.conf.max_side / max(h, w))
        image = np.ascontiguousarray(image)
        image = gray(image) if self.extractor.grayscale else image
        if scale < 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if mask is not None:
                mask = cv2.resize(
                    np.ascontiguousarray(mask), image.shape[1::-1], interpolation=cv2.INTER_NEAREST
                )
        if mask is not None:
            mask = (np.asarray(mask) > 0).astype(np.uint8)
        xy, descriptors, scores, shapes = self.extractor.detect(image, mask, self.budget)
        if descriptors is None:  # OpenCV gives None when it finds nothing
            xy, scores = xy[:0], scores[:0]
            shapes = None if shapes is None else shapes[:0]
        if shapes is not None:
            shapes = shapes * np.array([1.0, 1.0 / scale], np.float32)  # sizes in the image's own pixels
        return Features(
            xy / scale, descriptors, (w, h), scores=scores, kind=self.extractor.name, shapes=shapes
        )

    def tile_features(self, key: Hashable, load: Callable[[Hashable], np.ndarray]) -> Features:
        """Features of a reference image, computed once and kept in an LRU cache."""
        cached = self._tiles.get(key)
        if cached is not None:
            self._tiles.move_to_end(key)
            return cached
        features = self.features(load(key), rotations=1)  # the map is north-up: only frames are turned
        self.matcher.prepare(features)
        self._tiles[key] = features
        if len(self._tiles) > self._tile_cache:
            self._tiles.popitem(last=False)
        return features

    def match(
        self, frame: Features, tile: Features, aligned: bool = False, reach: Reach | None = None
    ) -> Pairs | str:
        """Indices into ``frame.xy`` and ``tile.xy`` of the putative matches, or why there are too few.

        ``aligned``: both images are north-up at one ground resolution (a ground view against a map
        window), so a true match keeps its keypoint's orientation and size (see :mod:`matchers.nn`).
        ``reach``: where a position prior lets each frame keypoint's match lie, for the matcher to
        choose among (the caller drops matches out of reach).

        A frame detected at several turns is matched turn by turn; the turn whose matches agree best
        on one rotation-scale-shift wins (a wrong turn can still gather many scattered matches).
        """
        conf = self.conf
        if len(frame.xy) < 4 or len(tile.xy) < 4:
            return "too few keypoints"
        if frame.turns:
            tries = []
            for rows in frame.turns:
                q, t = self.matcher.match(frame.part(rows), tile)
                tries.append(
                    (_agreeing(frame.xy[rows][q], tile.xy[t], 3 * conf.ransac_px), q + rows.start, t)
                )
            _, query, train = max(tries, key=lambda item: item[0])
        else:
            query, train = self.matcher.match(frame, tile, aligned, reach)
        if len(query) < max(4, min(conf.min_inliers, conf.min_votes)):
            return f"too few matches ({len(query)})"
        return query, train

    def verify(
        self,
        tile_id: int,
        frame: Features,
        tile: Features,
        ransac_px: float | None = None,
        min_inlier_ratio: float | None = None,
    ) -> Verification:
        """Consensus on a RANSAC homography (nothing known about the camera); the tolerance and the
        least inlier share default to the conf's."""
        conf = self.conf
        ransac_px = conf.ransac_px if ransac_px is None else ransac_px
        min_ratio = conf.min_inlier_ratio if min_inlier_ratio is None else min_inlier_ratio
        matches = self.match(frame, tile)
        if isinstance(matches, str):
            return Verification(tile_id, 0, matches)
        src, dst = frame.xy[matches[0]], tile.xy[matches[1]]
        if len(src) < conf.min_inliers:
            return Verification(tile_id, 0, f"too few matches ({len(src)})")
        homography, mask = cv2.findHomography(
            src, dst, cv2.USAC_MAGSAC, ransac_px, confidence=0.999, maxIters=2000
        )
        if homography is None or mask is None:
            return Verification(tile_id, 0, "no homography")
        keep = mask.ravel().astype(bool)
        inliers = int(keep.sum())
        if inliers < conf.min_inliers or inliers < min_ratio * len(src):
            return Verification(tile_id, inliers, f"too few inliers ({inliers} of {len(src)})")
        return self._checked(tile_id, homography, src[keep], dst[keep], frame.size)

    def verify_by_votes(
        self,
        tile_id: int,
        frame: Features,
        tile: Features,
        ground_offsets: np.ndarray,
        tile_to_ground: np.ndarray,
        aligned: bool = False,
        prior: tuple[float, float, float] | None = None,
    ) -> Verification:
        """Consensus on the camera position (attitude and height known).

        ``ground_offsets`` (N, 2): east/north metres from the point below the camera to where each
        frame keypoint's ray meets level ground (NaN where it does not); ``tile_to_ground``: the tile's
        2×3 pixel → ground affine (map windows' features carry their ground points). The votes
        decide; the least-squares homography of the agreeing matches is kept only when it is a
        plausible view of the ground (bunched inliers extrapolate badly), for the locator to refine
        the position with. ``aligned`` as for :meth:`match`;
        ``prior`` (x, y, radius_m): where the camera is, give or take the radius: a frame keypoint
        then only matches tile keypoints where its ground point can lie (guided matching).
        """
        conf = self.conf
        tile_ground = tile.ground
        if tile_ground is None:
            tile_ground = tile.xy.astype(np.float64) @ tile_to_ground[:, :2].T + tile_to_ground[:, 2]
        reach = None if prior is None else self._reach(ground_offsets, prior, tile_ground)
        matches = self.match(frame, tile, aligned, reach)
        if isinstance(matches, str):
            return Verification(tile_id, 0, matches)
        q, t = matches
        if reach is not None:  # a matcher that does not use the prior still only keeps what it allows
            keep = reach.allows(q, t)
            q, t = q[keep], t[keep]
        finite = np.all(np.isfinite(ground_offsets[q]), axis=1)
        matched = len(q)
        q, t = q[finite], t[finite]
        offsets, ground = ground_offsets[q], tile_ground[t]
        agree = np.flatnonzero(consensus(ground - offsets, conf.vote_m))
        position = np.median(ground[agree] - offsets[agree], axis=0) if len(agree) else None
        if conf.vote_model == "similarity":
            turn = math.radians(conf.max_yaw_error_deg)
            fitted = fit_similarity(offsets, ground, conf.vote_m, 1.0 + conf.max_height_error, turn)
            # a refinement of the one-point consensus, not a search of its own: its extra freedom
            # would otherwise let look-alikes elsewhere in a window gather enough votes
            if fitted is not None and position is not None:
                if np.linalg.norm(fitted[0] - position) <= 2.0 * conf.vote_m:
                    position, agree = fitted
        needed = max(4, conf.min_votes)
        if prior is not None:
            needed = max(needed, self._over_chance(len(q), prior[2]))
        if len(agree) < needed:
            return Verification(
                tile_id, len(agree), f"too few agreeing votes ({len(agree)} of {matched}, {needed} needed)"
            )
        src, dst = frame.xy[q[agree]], tile.xy[t[agree]]
        homography = self._votes_homography(src, dst, tile_to_ground)
        if homography is not None and self.degenerate(homography, src, frame.size):
            homography = None
        return Verification(tile_id, len(agree), "", homography, src, dst, position)

    def _votes_homography(
        self, src: np.ndarray, dst: np.ndarray, tile_to_ground: np.ndarray
    ) -> np.ndarray | None:
        """Frame → tile homography of the agreeing votes: least squares on those a RANSAC fit keeps
        within ``homography_refine_m`` on the ground (the votes' 4 m let parallax and near misses pull
        a fit of them all, and the point below the camera with it), or on them all."""
        keep = np.ones(len(src), dtype=bool)
        if self.conf.homography_refine_m > 0 and len(src) > self.conf.min_votes:
            gsd = linear_scale(tile_to_ground[:, :2])  # metres per tile pixel
            cv2.setRNGSeed(0)  # the same frame gives the same fix
            fitted, inliers = cv2.findHomography(src, dst, cv2.RANSAC, self.conf.homography_refine_m / gsd)
            if fitted is not None and inliers is not None and inliers.sum() >= self.conf.min_votes:
                keep = inliers.ravel().astype(bool)
        homography, _ = cv2.findHomography(src[keep], dst[keep], 0)
        return homography

    def _over_chance(self, matches: int, radius_m: float) -> int:
        """Agreeing votes that ``matches`` random matches within ``radius_m`` of a prior rarely gather
        in one vote circle: ``over_chance`` times their share there, or that share plus
        ``over_chance_sigmas`` of its standard deviations when that is less."""
        conf = self.conf
        chance = matches * (conf.vote_m / (radius_m + conf.vote_m)) ** 2
        bar = conf.over_chance * chance
        if conf.over_chance_sigmas > 0:
            bar = min(bar, chance + conf.over_chance_sigmas * math.sqrt(chance))
        return math.ceil(bar)

    def _reach(
        self, ground_offsets: np.ndarray, prior: tuple[float, float, float], tile_ground: np.ndarray
    ) -> Reach:
        """Where the prior puts each frame keypoint's ground point, and how far from there its match
        may lie: the prior's radius, the votes' tolerance and the height error's stretch."""
        x, y, radius = prior
        stretch = self.conf.max_height_error * np.linalg.norm(ground_offsets, axis=1)
        reach = np.nan_to_num(radius + self.conf.vote_m + stretch, nan=-1.0)
        return Reach(np.asarray([x, y]) + ground_offsets, reach, tile_ground)

    def _checked(
        self, tile_id: int, homography: np.ndarray, src: np.ndarray, dst: np.ndarray, size: tuple[int, int]
    ) -> Verification:
        problem = self.degenerate(homography, src, size)
        if problem:
            return Verification(tile_id, len(src), f"degenerate homography ({problem})")
        return Verification(tile_id, len(src), "", homography, src, dst)

    def degenerate(self, homography: np.ndarray, frame_inliers: np.ndarray, size: tuple[int, int]) -> str:
        """Why a homography cannot be a view of flat ground, or '' if it can."""
        conf = self.conf
        if not np.all(np.isfinite(homography)) or abs(homography[2, 2]) < 1e-12:
            return "not finite"
        h = homography / homography[2, 2]
        w, hgt = size
        centre = np.array([w / 2.0, hgt / 2.0, 1.0])
        denom = h[2] @ centre
        if denom <= 1e-6:
            return "frame centre maps behind the camera"
        # local linearisation at the frame centre: the 2×2 Jacobian of the mapping
        mapped = (h[:2] @ centre) / denom
        jac = (h[:2, :2] - np.outer(mapped, h[2, :2])) / denom
        if np.linalg.det(jac) <= 0:
            return "mirror image"
        singular = np.linalg.svd(jac, compute_uv=False)
        scale = float(np.sqrt(singular[0] * singular[1]))
        if not (1.0 / conf.max_scale <= scale <= conf.max_scale):
            return f"scale {scale:.2f}"
        if singular[0] / singular[1] > conf.max_anisotropy:
            return f"shear {singular[0] / singular[1]:.1f}"
        corners = np.array([[0, 0, 1], [w, 0, 1], [w, hgt, 1], [0, hgt, 1]], dtype=np.float64)
        if np.any(corners @ h[2] <= 1e-6):
            return "horizon inside the frame"
        span = np.ptp(frame_inliers, axis=0) if len(frame_inliers) else np.zeros(2)
        if span[0] * span[1] < conf.min_spread * w * hgt:
            return "inliers bunched in one spot"
        return ""


def _agreeing(src: np.ndarray, dst: np.ndarray, tolerance_px: float) -> int:
    """How many matches one RANSAC rotation-scale-shift explains (0 when there are too few)."""
    if len(src) < 3:
        return 0
    _, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=tolerance_px)
    return 0 if inliers is None else int(inliers.sum())


def _unturn(xy: np.ndarray, quarter: int, width: int, height: int) -> np.ndarray:
    """Pixels of an image turned by ``np.rot90(image, quarter)`` back in the unturned image."""
    x, y = xy[:, 0], xy[:, 1]
    back = {1: (width - 1 - y, x), 2: (width - 1 - x, height - 1 - y), 3: (y, height - 1 - x)}[quarter]
    return np.stack(back, axis=1).astype(np.float32)


def consensus(votes: np.ndarray, radius: float) -> np.ndarray:
    """Mask of the largest group of 2-D votes that lie within ``radius`` of their median.

    Seeds on the vote with the most neighbours, then recentres once on the median of that group
    (the seed itself may sit at the group's edge).
    """
    if len(votes) == 0:
        return np.zeros(0, dtype=bool)
    x, y = votes[:, 0].astype(np.float32), votes[:, 1].astype(np.float32)  # float32: half the traffic
    dx, dy = x[:, None] - x[None, :], y[:, None] - y[None, :]
    near = dx * dx + dy * dy < radius**2
    group = near[int(np.argmax(near.sum(axis=1)))]
    return np.linalg.norm(votes - np.median(votes[group], axis=0), axis=1) < radius


def fit_similarity(
    offsets: np.ndarray,
    ground: np.ndarray,
    tolerance: float,
    max_scale: float,
    max_turn: float,
    steps: int = 6,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(camera position, members) of ``ground ≈ position + s·R(θ)·offset``, or None when fewer than 3
    matches agree on any. s is the true height over the told one (within 1/max_scale .. max_scale), θ
    the yaw error (within ±max_turn rad); the position is the fit at offset 0, below the camera.

    Each (s, θ) on a grid turns the matches into one-point votes; the grid point whose
    :func:`consensus` is largest (the told height and yaw on a tie) picks the members; a least
    squares scale and turn on them and the median of their votes, refitted on the matches it
    explains within ``tolerance``, give the result. Refitting from the unscaled votes alone crept
    towards the true scale too slowly: their consensus keeps only matches near the nadir, where a
    wrong scale costs little.
    """
    o = offsets[:, 0] + 1j * offsets[:, 1]
    g = ground[:, 0] + 1j * ground[:, 1]
    scales = np.exp(np.linspace(-1.0, 1.0, 2 * steps + 1) * math.log(max_scale))
    turns = np.linspace(-max_turn, max_turn, 5)
    # the grid is searched on an even sample: its cost grows with the square of the matches
    sample = np.linspace(0, len(o) - 1, min(len(o), GRID_SAMPLE)).astype(np.int64)
    best, a = (0, 0.0), 1.0 + 0j
    for scale in scales:
        for turn in turns:
            guess = scale * np.exp(1j * turn)
            votes = g[sample] - guess * o[sample]
            rank = (
                int(consensus(np.c_[votes.real, votes.imag], tolerance).sum()),
                -abs(math.log(scale)) - abs(turn),
            )
            if rank > best:
                best, a = rank, guess
    votes = g - a * o
    members = np.flatnonzero(consensus(np.c_[votes.real, votes.imag], tolerance))
    for _ in range(2):
        if len(members) < 3:
            return None
        om, gm = o[members] - o[members].mean(), g[members] - g[members].mean()
        spread = float(np.sum(np.abs(om) ** 2))
        if spread < 1e-9:
            return None
        a = np.sum(np.conj(om) * gm) / spread
        # the median vote, not the least-squares shift: roofs and crowns displaced by parallax pull a mean
        b = np.median((g - a * o)[members].real) + 1j * np.median((g - a * o)[members].imag)
        members = np.flatnonzero(np.abs(g - (a * o + b)) < tolerance)
    if len(members) < 3 or not 1.0 / max_scale <= abs(a) <= max_scale or abs(np.angle(a)) > max_turn:
        return None
    return np.array([b.real, b.imag]), members
