"""Localization relative to the last geo-registered frame, where the map no longer fixes.

A frame the map placed is kept as the keyframe, with its pixels' place on the ground: the told
attitude and height put them on level ground about the fix. A later frame no map window verifies
— a landing's: below some 20 m over a 0.4 m/px map its footprint holds a few dozen map pixels — is
aligned with the keyframe instead, at the frames' own resolution: the same camera, the same light,
a view that overlaps.

Both are resampled to one north-up ground canvas, averaged where it is coarser than the frame: the
new frame about the point below its camera, the keyframe about the prior position (the track's
prediction) out to ``search_m``, so what is left between them is a shift. The view is matched
everywhere in that square (normalized cross-correlation: a swaying landing's prediction is often
off by a third of a low view); ECC (enhanced correlation coefficient: a dense alignment that needs
no keypoints, for a low frame over a coarse map is smooth) refines the best place and the prior
itself, coarse to fine, and the better aligned must correlate to ``min_correlation``, each quarter
of it to ``min_part_correlation`` (a look-alike elsewhere shares the view's overall shading, not
its every part) and stay in the searched square. The shift moves the prior to the camera.

Its σ is the keyframe's plus one step's (``step_sigma_m``, and a canvas pixel), as variances. A
frame so located becomes the next keyframe once its height differs by ``renew_scale`` or it has
moved a ``renew_shift`` share of its view away (a landing sways), so a descent stays located while
each step aligns like views; the chain is bounded (``max_chain`` steps from the last map fix,
``max_sigma_m``, ``max_misses`` frames in a row not located: the prior has then coasted beyond
where a search can be trusted), so drift cannot run on unseen, and a map fix starts it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from geolink_edge.runtime.features.base import gray
from geolink_edge.runtime.ground import ground_to_image
from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.pose import attitude_known, telemetry_rotation
from geolink_edge.runtime.sources import Telemetry

PYRAMID = (4, 2, 1)  # the ground canvas is aligned at a quarter, a half, then its full size
# what may differ between two nadir views on one canvas: a scale (the told heights' errors differ a
# little), a turn (the told yaws'); no shear. An affine beyond it fits two unrelated smooth views.
MAX_SCALE = 0.15
MAX_TURN = math.radians(3.0)
MAX_SKEW = 0.05


@dataclass(frozen=True)
class KeyframeConf:
    max_chain: int = 16  # keyframe-located steps after the last map fix; beyond, no fix
    max_misses: int = 6  # frames in a row not located, after which the keyframe locates none (2 s at 3/s)
    max_sigma_m: float = 10.0  # a keyframe this uncertain gives no fix
    step_sigma_m: float = 0.5  # σ one step adds (the keyframe's mapping away from where it was fixed)
    min_correlation: float = 0.8  # ECC's correlation of the aligned ground views
    # ... and of each quarter of them: a look-alike elsewhere matches the view's overall shading, the
    # same ground matches in every part
    min_part_correlation: float = 0.2
    min_overlap: float = 0.5  # share of the canvas the keyframe must see
    canvas_px: int = 192  # side of the ground canvas both frames are resampled to
    canvas_share: float = 0.7  # the canvas spans this share of the new frame's shorter ground side
    search_m: float = 2.0  # the keyframe is searched this far about the prior (the track's prediction)
    renew_scale: float = 1.3  # a located frame this much lower (or higher) becomes the keyframe,
    renew_shift: float = 0.25  # ... as does one this share of the canvas away from it
    min_height_m: float = 0.5  # below this the view spans centimetres (on the ground: none)


@dataclass
class Keyframe:
    image: np.ndarray  # grey
    to_ground: np.ndarray  # 3×3 homography: frame pixels → ground (east, north) metres
    cov: np.ndarray  # 2×2 m² of the fix it was located by
    xy: np.ndarray  # the camera's position when it was taken
    altitude: float
    chain: int  # steps from the last map fix (0: the map fixed it)


@dataclass(frozen=True)
class Step:
    """A frame located on the keyframe."""

    xy: np.ndarray  # the camera's (east, north)
    cov: np.ndarray  # the keyframe's covariance plus this step's
    chain: int
    correlation: float


class Keyframes:
    """The last geo-registered frame, and frames located on it when the map no longer fixes."""

    def __init__(self, conf: KeyframeConf = KeyframeConf()):
        self.conf = conf
        self.current: Keyframe | None = None
        self.candidate: Keyframe | None = None  # the last frame's, until the track accepts its fix
        self.misses = 0  # frames in a row the keyframe located none of

    def remember(
        self, image: np.ndarray, xy, cov, intrinsics: Intrinsics | None, telemetry: Telemetry | None
    ) -> None:
        """Keep a frame the map placed at ``xy``: its pixels on level ground about that point, by the
        told attitude and height (without them the last keyframe stays)."""
        if (
            intrinsics is not None
            and attitude_known(telemetry)
            and telemetry.altitude >= self.conf.min_height_m
        ):
            to_ground = _about(xy) @ np.linalg.inv(_to_image(intrinsics, telemetry))
            self.candidate = Keyframe(gray(image), to_ground, np.asarray(cov, float), np.asarray(xy, float),
                                      telemetry.altitude, 0)  # fmt: skip

    def step(
        self, image: np.ndarray, intrinsics: Intrinsics | None, telemetry: Telemetry | None, prior=None
    ) -> tuple[Step | None, str]:
        """Locate ``image`` on the keyframe, searching about ``prior`` (east, north; else the
        keyframe's own position): the step, or None and why (nothing when there is no keyframe)."""
        # after a run of misses the prior has coasted so far that the truth may lie outside the
        # search, and what is left there to match is a look-alike
        if self.current is not None and self.misses >= self.conf.max_misses:
            return None, f"{self.misses} frames in a row not located: the prior has coasted too far"
        step, why = self._locate(image, intrinsics, telemetry, prior)
        self.misses = 0 if step is not None or self.current is None else self.misses + 1
        return step, why

    def _locate(
        self, image: np.ndarray, intrinsics: Intrinsics | None, telemetry: Telemetry | None, prior
    ) -> tuple[Step | None, str]:
        key = self.current
        if key is None:
            return None, ""
        if intrinsics is None or not attitude_known(telemetry):
            return None, "attitude, height and intrinsics are needed"
        if telemetry.altitude < self.conf.min_height_m:
            return None, f"below {self.conf.min_height_m:g} m"
        if key.chain >= self.conf.max_chain:
            return None, f"chain of {key.chain} steps at its limit"
        cov = key.cov + np.eye(2) * self.conf.step_sigma_m**2
        if math.sqrt(max(cov[0, 0], cov[1, 1])) > self.conf.max_sigma_m:
            return None, f"σ beyond {self.conf.max_sigma_m:g} m"
        n = self.conf.canvas_px
        frame = gray(image)
        to_image = _to_image(intrinsics, telemetry)
        span = self.conf.canvas_share * min(frame.shape) * telemetry.altitude / intrinsics.fy
        gsd = span / n
        prior = key.xy if prior is None else np.asarray(prior, float)
        view = _warp(frame, to_image @ _canvas(gsd, n), n)
        # the keyframe's ground about the prior, out to the search radius (at most a canvas each side:
        # low down, the keyframe sees little more): where the view matches best is the first guess
        margin = min(round(self.conf.search_m / gsd), n)
        wide = n + 2 * margin
        to_key = np.linalg.inv(key.to_ground) @ _about(prior) @ _canvas(gsd, wide)
        area, area_seen = _warp(key.image, to_key, wide), _warp(_white(key.image), to_key, wide) > 0
        guess = _best_match(view, area, area_seen, self.conf.min_overlap)
        if guess is None:
            return None, "the keyframe does not cover the prior"
        guess = guess - margin
        # view pixel x shows what the reference shows at x + shift: ECC refines the match (no shift)
        # and the prior itself, the better aligned wins
        origin = prior + gsd * np.array([guess[0], -guess[1]])
        to_key = np.linalg.inv(key.to_ground) @ _about(origin) @ _canvas(gsd, n)
        reference = _warp(key.image, to_key, n)
        seen = _warp(_white(key.image), to_key, n)
        if np.mean(seen > 0) < self.conf.min_overlap:
            return None, "the keyframe does not cover the prior"
        mask = (seen > 0).astype(np.uint8)
        aligned = [_align(view, reference, mask, start) for start in ((0.0, 0.0), -guess)]
        # ECC may wander off a smooth view: beyond the searched square no look-alike was ruled out
        aligned = [a for a in aligned if np.abs(guess + a[2]).max() <= margin]
        if not aligned:
            return None, "the alignment left the searched area"
        rho, part, shift = max(aligned)
        if rho < self.conf.min_correlation:
            return None, f"correlation {rho:.2f} below {self.conf.min_correlation:g}"
        if part < self.conf.min_part_correlation:
            return None, f"a quarter's correlation {part:.2f} below {self.conf.min_part_correlation:g}"
        xy = origin + gsd * np.array([shift[0], -shift[1]])
        cov = cov + np.eye(2) * gsd**2
        step = Step(xy, cov, key.chain + 1, float(rho))
        lower = not 1.0 / self.conf.renew_scale < key.altitude / telemetry.altitude < self.conf.renew_scale
        if lower or np.linalg.norm(xy - key.xy) > self.conf.renew_shift * span:
            to_ground = _about(xy) @ np.linalg.inv(to_image)
            self.candidate = Keyframe(frame, to_ground, cov, xy, telemetry.altitude, step.chain)
        return step, ""

    def confirm(self, accepted: bool) -> None:
        """The track accepted (or refused) the last frame's fix: only an accepted one's frame may
        become the keyframe (a fix the track gates is likely wrong)."""
        if accepted and self.candidate is not None:
            self.current, self.misses = self.candidate, 0
        self.candidate = None

    def forget(self) -> None:
        self.current = self.candidate = None
        self.misses = 0


def _warp(image: np.ndarray, canvas_to_image: np.ndarray, n: int) -> np.ndarray:
    """``image`` resampled to the canvas, averaged first where the canvas is coarser (many frame pixels
    to a canvas pixel: sampled alone, they alias and keep the read noise)."""
    shrink = _pixels_per_canvas_pixel(canvas_to_image, n)
    if shrink > 1.2:
        size = (max(1, round(image.shape[1] / shrink)), max(1, round(image.shape[0] / shrink)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        scale = np.diag([size[0] / image.shape[1], size[1] / image.shape[0], 1.0])
        image, canvas_to_image = small, scale @ canvas_to_image
    return cv2.warpPerspective(
        image, canvas_to_image, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0
    )


def _pixels_per_canvas_pixel(canvas_to_image: np.ndarray, n: int) -> float:
    """The image's linear pixels per canvas pixel at the canvas's centre."""
    points = np.array([[n / 2, n / 2], [n / 2 + 1, n / 2], [n / 2, n / 2 + 1]], np.float64)
    mapped = cv2.perspectiveTransform(points[None], canvas_to_image)[0]
    return math.sqrt(abs(np.linalg.det(np.column_stack([mapped[1] - mapped[0], mapped[2] - mapped[0]]))))


def _canvas(gsd: float, n: int) -> np.ndarray:
    """An n × n north-up canvas of ``gsd`` metres a pixel → ground (east, north) about its centre."""
    return np.array([[gsd, 0.0, -gsd * n / 2], [0.0, -gsd, gsd * n / 2], [0.0, 0.0, 1.0]])


def _white(image: np.ndarray) -> np.ndarray:
    return np.full(image.shape[:2], 255, np.uint8)


def _best_match(
    view: np.ndarray, area: np.ndarray, seen: np.ndarray, min_overlap: float
) -> np.ndarray | None:
    """(x, y) of the view's corner in ``area`` where the two correlate best, among the places where
    ``seen`` covers ``min_overlap`` of the view (None: nowhere)."""
    n = view.shape[0]
    if not seen.any():
        return None
    filled = np.where(seen, area, np.float32(area[seen].mean())).astype(np.float32)  # unseen: flat
    score = cv2.matchTemplate(filled, np.float32(view), cv2.TM_CCOEFF_NORMED)
    covered = cv2.matchTemplate(seen.astype(np.float32), np.ones((n, n), np.float32), cv2.TM_CCORR) / n**2
    score = np.where((covered >= min_overlap) & np.isfinite(score), score, -np.inf)
    if not np.isfinite(score.max()):
        return None
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return np.array([x, y], float)


def _to_image(intrinsics: Intrinsics, telemetry: Telemetry) -> np.ndarray:
    """Level ground (east, north about the point below the camera) → frame pixels."""
    return ground_to_image(intrinsics, telemetry_rotation(telemetry), telemetry.altitude)


def _about(xy) -> np.ndarray:
    return np.array([[1.0, 0.0, xy[0]], [0.0, 1.0, xy[1]], [0.0, 0.0, 1.0]])


def _correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Zero-mean normalized correlation of ``a`` and ``b`` where ``mask`` is set."""
    keep = mask > 0
    if keep.sum() < 16:
        return 0.0
    x, y = a[keep].astype(np.float64), b[keep].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / (math.sqrt((x @ x) * (y @ y)) + 1e-9))


def _align(
    view: np.ndarray, reference: np.ndarray, mask: np.ndarray, start
) -> tuple[float, float, tuple[float, float]]:
    """(correlation, its least quarter's, shift): ECC from ``start``, a shift coarse to fine (a smooth
    low view's basin is wide at a quarter of its size), then an affine at full size (near the ground
    a told height a few decimetres off is a scale): the view's centre ↔ the reference's centre +
    shift."""
    shift = np.asarray(start, np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-3)
    n = view.shape[0]
    for level in PYRAMID:
        size = (view.shape[1] // level, view.shape[0] // level)
        small = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in (view, reference, mask)]
        warp = np.array([[1.0, 0.0, shift[0] / level], [0.0, 1.0, shift[1] / level]], np.float32)
        moved = _ecc(*small, warp, cv2.MOTION_TRANSLATION, criteria)[:, 2] * level
        # an ill-conditioned (smooth) view can send ECC far off: a level may move the shift a quarter
        shift = moved if np.abs(moved - shift).max() <= n / 4 else shift
    translation = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]], np.float32)
    affine = _ecc(view, reference, mask, translation.copy(), cv2.MOTION_AFFINE, criteria)
    centre = np.array([n / 2.0, n / 2.0, 1.0])
    scored = []
    for warp in (translation, affine) if _rigid_and_scaled(affine) else (translation,):
        to_reference = np.vstack([warp, [0.0, 0.0, 1.0]])
        moved_reference, moved_mask = _warp(reference, to_reference, n), _warp(mask, to_reference, n)
        rho = _correlation(view, moved_reference, moved_mask)
        part = _least_quarter_correlation(view, moved_reference, moved_mask)
        moved = warp @ centre - centre[:2]
        scored.append((rho, part, (float(moved[0]), float(moved[1]))))
    return max(scored)


def _least_quarter_correlation(view: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """The lowest correlation of the views' four quarters, of those the mask mostly keeps and whose
    contrast stands out of the view's noise (a flat quarter's correlation is the noise's: none: 1)."""
    h = view.shape[0] // 2
    quarters = [(slice(i, i + h), slice(j, j + h)) for i in (0, h) for j in (0, h)]
    # the canvas holds the ground smooth over many pixels: what a 3 × 3 mean takes away is noise
    seen = mask > 0
    grain = np.float32(view) - cv2.blur(np.float32(view), (3, 3))
    noise = grain[seen].var() if seen.any() else 0.0
    telling = [q for q in quarters if np.mean(seen[q]) >= 0.25 and view[q][seen[q]].var() >= 4.0 * noise]
    return min((_correlation(view[q], reference[q], mask[q]) for q in telling), default=1.0)


def _rigid_and_scaled(warp: np.ndarray) -> bool:
    """Whether an affine's linear part is a turn and a scale within what two nadir views differ by."""
    (a, b), (c, d) = warp[:, :2]
    scale, turn = math.hypot((a + d) / 2, (c - b) / 2), math.atan2((c - b) / 2, (a + d) / 2)
    skew = math.hypot((a - d) / 2, (b + c) / 2)
    return abs(scale - 1.0) <= MAX_SCALE and abs(turn) <= MAX_TURN and skew <= MAX_SKEW


def _ecc(view, reference, mask, warp: np.ndarray, motion: int, criteria) -> np.ndarray:
    try:
        return cv2.findTransformECC(view, reference, warp, motion, criteria, mask, 3)[1]
    except cv2.error:
        return warp  # ECC stopped short of convergence: the warp so far stands
