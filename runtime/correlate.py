"""Area correlation: a frame of known heading and height placed on the map by normalized cross-correlation.

A drone with a compass and a baro or rangefinder knows how its frame lies on the ground up to a
shift: resampled north-up at the map's resolution (:func:`ground.nadir_view`), the frame is a
template of the map. Both become fields of edge orientation (:mod:`edge_fields`), and the template
is slid over the candidate map areas by FFT; the normalized cross-correlation (zero-mean over the
frame's footprint, normalized by the map's energy under it) peaks where the frame was taken.

1. Coarse search: the template at a ladder of scales (``scales``: the told height is above the
   take-off point or the mean ground, not the ground below) over every area, in blocks.
2. The ``candidates`` best peaks that lie ``distinct_m`` apart are refined: a few degrees of heading
   and a few percent of scale (coordinate search on a small crop), then a sub-pixel peak.
3. Acceptance: the best refined peak must reach ``min_score`` and stand out from the best peak
   elsewhere (second-peak ratio at most ``max_ratio``, peaks compared by their significance: score
   over the spread of the surface they came from); a frame over a look-alike area has two
   near-equal peaks and is refused. Thresholds and how they were chosen: docs/design/correlation.md.

The result is the ground point below the camera (the template's origin) with a covariance, as the
feature verifier's fix gives it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from geolink_edge.runtime.edge_fields import edge_field
from geolink_edge.runtime.ground import nadir_view, quantize_up
from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.mount import world_to_camera
from geolink_edge.runtime.sources import Telemetry

PEAKS_PER_SURFACE = 4  # local peaks kept from each (block, scale) surface before pooling


@dataclass(frozen=True)
class CorrelateConf:
    field: str = "orientation"  # edge_fields.FIELDS
    blur_px: float = 1.0  # Gaussian blur (px) of both edge fields before they are compared
    gsd_factor: float = 1.0  # correlate at this × the map's GSD (never finer than the frame's)
    # true / told height, a ladder of 2^(1/6) (the refinement's ±6 % fills the steps): the told height
    # is above the take-off point or the mean ground, and hills change the height above the ground
    # below by ±40 % at 40 m (the votes' max_height_error)
    scales: tuple[float, ...] = (0.71, 0.79, 0.89, 1.0, 1.12, 1.26, 1.41)
    refine_yaw_deg: tuple[float, ...] = (-4.0, -2.0, 2.0, 4.0)  # heading tries about the told one
    refine_scale: tuple[float, ...] = (0.94, 0.97, 1.03, 1.06)  # scale tries about the coarse one
    refine_px: int = 3  # shift searched about a candidate while refining
    candidates: int = 3  # distinct peaks refined before the best is chosen
    distinct_m: float = 6.0  # peaks closer than this are one answer
    min_coverage: float = 0.9  # share of the template that must fall on valid map
    block_px: int = 2048  # areas are correlated in blocks of at most this side (memory)
    # the acceptance, calibrated on synthetic look-alikes (docs/design/correlation.md)
    min_score: float = 0.15  # a floor: faint look-alikes of a sparse template score ≤ 0.10
    max_ratio: float = 0.7  # second peak / best at most this (look-alikes alone gave ≥ 0.81)
    # 1-σ of an accepted position per axis: the locator's georeferencing floor (the spread on
    # synthetic flights, 0.3–0.4 m, is below it)
    sigma_m: float = 1.5
    min_texture: float = 0.01  # `auto`: a frame with less (texture()) goes to the features (noise: 0)


@dataclass
class Template:
    """A frame's edge field on the ground grid, the footprint ``mask`` and the canvas pixel of the
    point below the camera."""

    field: np.ndarray  # (h, w, C) float32
    mask: np.ndarray  # (h, w) float32, 1 inside the footprint
    origin_px: np.ndarray  # (2,) canvas pixel of the reference ground point

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape[:2]


TemplateMaker = Callable[[float, float], "Template | None"]  # (heading correction deg, scale) → template


@dataclass
class Area:
    """A north-up map area as an edge field: ``[x, y] = pixel_to_xy @ [u, v, 1]``."""

    field: np.ndarray  # (H, W, C)
    valid: np.ndarray  # (H, W) float32
    pixel_to_xy: np.ndarray  # (2, 3)
    _spectra: dict = field(default_factory=dict, repr=False)

    def spectra(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FFTs (at ``size``) of the field, its energy and the valid mask, kept for the next template."""
        cached = self._spectra.get(size)
        if cached is None:
            energy = np.einsum("hwc,hwc->hw", self.field, self.field)
            cached = (
                np.fft.rfft2(self.field, s=size, axes=(0, 1)),
                np.fft.rfft2(energy, s=size),
                np.fft.rfft2(self.valid, s=size),
            )
            self._spectra = {size: cached}
        return cached

    def crop(self, u0: int, v0: int, u1: int, v1: int) -> Area:
        """Pixels [u0, u1) × [v0, v1) (``u0, v0`` ≥ 0; the far side is clipped to the area)."""
        height, width = self.valid.shape
        u1, v1 = min(u1, width), min(v1, height)
        affine = self.pixel_to_xy.copy()
        affine[:, 2] = self.pixel_to_xy @ [u0, v0, 1.0]
        return Area(self.field[v0:v1, u0:u1], self.valid[v0:v1, u0:u1], affine)


def map_area(image: np.ndarray, valid: np.ndarray, pixel_to_xy: np.ndarray, conf: CorrelateConf) -> Area:
    """A map window (image, valid mask, pixel → xy) as a correlation :class:`Area`."""
    mask = (np.asarray(valid) > 0).astype(np.float32)
    values = edge_field(image, mask, conf.field, conf.blur_px)
    return Area(values, mask, np.asarray(pixel_to_xy, dtype=np.float64).reshape(2, 3))


def make_template(
    image: np.ndarray, mask: np.ndarray, origin_px: np.ndarray, conf: CorrelateConf
) -> Template:
    """A ground view (canvas, footprint mask, origin) as a correlation :class:`Template`."""
    inside = (np.asarray(mask) > 0).astype(np.float32)
    values = edge_field(image, inside, conf.field, conf.blur_px)
    return Template(values, inside, np.asarray(origin_px, dtype=np.float64))


def correlation_gsd(
    map_gsd_m: float, intrinsics: Intrinsics, telemetry: Telemetry, conf: CorrelateConf
) -> float:
    """The ground resolution to correlate at: ``gsd_factor`` × the map's, never finer than the frame's
    own at the centre (upsampling adds nothing to correlate), on the quantize_up ladder."""
    slant = telemetry.altitude / max(math.sin(math.radians(telemetry.pitch)), 0.1)
    return quantize_up(max(map_gsd_m * conf.gsd_factor, slant / intrinsics.fx), 4)


def ground_templates(
    image: np.ndarray, intrinsics: Intrinsics, telemetry: Telemetry, gsd_m: float, conf: CorrelateConf
) -> TemplateMaker:
    """``make(yaw, scale)`` of a frame: the frame seen from its told attitude with the heading turned
    by ``yaw`` degrees and the height times ``scale``, resampled north-up at ``gsd_m``."""

    def make(yaw: float, scale: float) -> Template | None:
        rotation = world_to_camera(telemetry.yaw + yaw, telemetry.pitch, telemetry.roll or 0.0)
        view = nadir_view(image, intrinsics, rotation, telemetry.altitude * scale, gsd_m, detail_m=gsd_m)
        if view is None or view.gsd_m != gsd_m:  # a frame too big for one canvas at this GSD
            return None
        return make_template(view.image, view.mask, view.origin_px, conf)

    return make


def texture(template: Template) -> float:
    """Share of the footprint whose edge weight is above its neighbourhood's average: a lawn has few."""
    energy = np.sqrt(np.einsum("hwc,hwc->hw", template.field, template.field))
    inside = template.mask > 0
    return float(np.mean(energy[inside] > 1.0)) if inside.any() else 0.0


def ncc_surface(template: Template, area: Area, min_coverage: float) -> np.ndarray:
    """Masked zero-mean NCC of ``template`` at every placement wholly inside ``area``: entry (v, u) is
    the score with the template's pixel (0, 0) on the area's pixel (u, v); placements that see less
    than ``min_coverage`` of valid map are NaN."""
    h, w = template.shape
    height, width = area.valid.shape
    if height < h or width < w:
        return np.zeros((0, 0), np.float32)
    size = (cv2.getOptimalDFTSize(height), cv2.getOptimalDFTSize(width))
    mask = template.mask
    count = float(mask.sum())
    if count < 1:
        return np.full((height - h + 1, width - w + 1), np.nan, np.float32)
    mean = np.einsum("hwc,hw->c", template.field, mask) / count
    centred = (template.field - mean) * mask[..., None]
    template_energy = float(np.sum(centred * centred))
    field_fft, energy_fft, valid_fft = area.spectra(size)
    mask_fft = np.conj(np.fft.rfft2(mask, s=size))

    def correlate(spectrum: np.ndarray, axes=(0, 1)) -> np.ndarray:
        return np.fft.irfft2(spectrum, s=size, axes=axes)[: height - h + 1, : width - w + 1]

    numerator = correlate(
        np.einsum("hwc,hwc->hw", field_fft, np.conj(np.fft.rfft2(centred, s=size, axes=(0, 1))))
    )
    sums = correlate(field_fft * mask_fft[..., None])
    variance = correlate(energy_fft * mask_fft) - np.einsum("hwc,hwc->hw", sums, sums) / count
    coverage = correlate(valid_fft * mask_fft) / count
    # a flat map (snow, water) under the template is no match: its energy floors the denominator
    variance = np.maximum(variance, 0.05 * template_energy)
    score = numerator / np.sqrt(max(template_energy, 1e-12) * variance)
    score[coverage < min_coverage] = np.nan
    return score.astype(np.float32)


def subpixel(surface: np.ndarray, v: int, u: int) -> tuple[float, float]:
    """(u, v) of the peak at integer (v, u), moved by a parabola through each axis' neighbours."""

    def offset(before: float, at: float, after: float) -> float:
        curvature = before - 2.0 * at + after  # NaN (a neighbour off the map) fails the test: no move
        return float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0

    height, width = surface.shape
    du = offset(surface[v, u - 1], surface[v, u], surface[v, u + 1]) if 0 < u < width - 1 else 0.0
    dv = offset(surface[v - 1, u], surface[v, u], surface[v + 1, u]) if 0 < v < height - 1 else 0.0
    return u + du, v + dv


def local_peaks(surface: np.ndarray, count: int, radius_px: int) -> list[tuple[float, int, int]]:
    """Up to ``count`` (score, v, u) maxima at least ``radius_px`` apart, best first."""
    work = np.nan_to_num(surface, nan=-np.inf)
    peaks = []
    for _ in range(count):
        if work.size == 0:
            break
        v, u = np.unravel_index(int(np.argmax(work)), work.shape)
        score = float(work[v, u])
        if score <= 0:
            break
        peaks.append((score, int(v), int(u)))
        work[max(v - radius_px, 0) : v + radius_px + 1, max(u - radius_px, 0) : u + radius_px + 1] = -np.inf
    return peaks


def blocks(area: Area, block_px: int, overlap_px: int) -> list[Area]:
    """``area`` cut into overlapping blocks (every placement of a template up to ``overlap_px`` wide
    lies wholly in one of them)."""
    height, width = area.valid.shape
    if max(height, width) <= block_px:
        return [area]
    step = max(block_px - overlap_px, 1)
    return [
        area.crop(u, v, u + block_px, v + block_px)
        for v in range(0, max(height - overlap_px, 1), step)
        for u in range(0, max(width - overlap_px, 1), step)
    ]


@dataclass
class Peak:
    score: float
    xy: np.ndarray  # ground point below the camera, (east, north) in the map's frame
    yaw_deg: float = 0.0  # heading correction the template was made with
    scale: float = 1.0  # true / told height the template was made with
    area: Area | None = None
    origin_px: np.ndarray | None = None  # the point below the camera, in ``area``'s pixels (sub-pixel)
    sidelobe: int = -1  # which coarse surface it came from (its mean and spread give the PSR)
    spread: float = 1.0  # the standard deviation of that surface: how far chance alone reaches

    @property
    def significance(self) -> float:
        """The score in units of its surface's spread: a smaller template (a lower scale) scores
        wrong placements higher by chance, so peaks of different scales compare by this."""
        return self.score / self.spread


@dataclass
class Correlation:
    ok: bool
    reason: str = ""
    xy: np.ndarray | None = None  # accepted (or best refused) ground point below the camera
    cov: np.ndarray | None = None
    score: float = 0.0
    ratio: float = 1.0  # significance of the best peak ``distinct_m`` or more away / the best's
    psr: float = 0.0  # peak-to-sidelobe ratio of the coarse surface the best peak came from
    yaw_deg: float = 0.0
    scale: float = 1.0
    texture: float = 0.0
    timing_ms: dict[str, float] = field(default_factory=dict)


class Correlator:
    def __init__(self, conf: CorrelateConf = CorrelateConf()):
        self.conf = conf

    def search(self, make: TemplateMaker, areas: list[Area], gsd_m: float) -> Correlation:
        """Place the frame over ``areas``. ``make(yaw_deg, scale)`` is the frame's template with its
        heading corrected by ``yaw_deg`` and its height multiplied by ``scale``."""
        conf = self.conf
        t0 = time.perf_counter()
        templates: dict[tuple[float, float], Template | None] = {}

        def template(yaw: float, scale: float) -> Template | None:
            key = (round(yaw, 3), round(scale, 4))
            if key not in templates:
                templates[key] = make(yaw, scale)
            return templates[key]

        nominal = template(0.0, 1.0)
        if nominal is None or nominal.mask.sum() < 1:
            return Correlation(False, "the frame does not see the ground")
        widest = max(max(t.shape) for t in (template(0.0, s) for s in conf.scales) if t is not None)
        pieces = [b for a in areas for b in blocks(a, conf.block_px, widest)]
        radius = max(1, round(conf.distinct_m / gsd_m))
        coarse: list[Peak] = []
        sidelobes: list[tuple[float, float]] = []
        spreads: dict[tuple[int, float], float] = {}  # (piece, scale) → its surface's spread
        for scale in conf.scales:
            current = template(0.0, scale)
            if current is None:
                continue
            for piece in pieces:
                surface = ncc_surface(current, piece, conf.min_coverage)
                if not np.any(np.isfinite(surface)):
                    continue
                # over the placements on valid map only: chance's reach where the frame could be
                spread = spreads[id(piece), scale] = max(float(np.nanstd(surface)), 1e-6)
                sidelobes.append((float(np.nanmean(surface)), spread))
                for score, v, u in local_peaks(surface, PEAKS_PER_SURFACE, radius):
                    origin = np.array([u, v]) + current.origin_px
                    xy = piece.pixel_to_xy @ [*origin, 1.0]
                    coarse.append(Peak(score, xy, 0.0, scale, piece, origin, len(sidelobes) - 1, spread))
        t1 = time.perf_counter()
        timing = {"correlation_coarse_ms": (t1 - t0) * 1e3}
        kept = _distinct(coarse, conf.distinct_m)
        if not kept:
            return Correlation(False, "no placement of the frame on valid map", timing_ms=timing)
        refined = [self._refine(peak, template, spreads, radius) for peak in kept[: conf.candidates]]
        refined.sort(key=lambda p: -p.significance)
        best = refined[0]
        others = refined[1:] + kept[conf.candidates :]
        distinct = [p.significance for p in others if np.hypot(*(p.xy - best.xy)) >= conf.distinct_m]
        mean, std = sidelobes[best.sidelobe]
        timing["correlation_refine_ms"] = (time.perf_counter() - t1) * 1e3
        result = Correlation(
            False,
            xy=best.xy,
            cov=np.eye(2) * conf.sigma_m**2,
            score=best.score,
            ratio=max(distinct, default=0.0) / best.significance if best.score > 0 else 1.0,
            psr=(best.score - mean) / std,
            yaw_deg=best.yaw_deg,
            scale=best.scale,
            texture=texture(nominal),
            timing_ms=timing,
        )
        if result.score < conf.min_score:
            result.reason = f"correlation peak {result.score:.2f} below {conf.min_score:.2f}"
        elif result.ratio > conf.max_ratio:
            result.reason = (
                f"correlation peak not distinct (second peak {result.ratio:.2f} of the best, "
                f"above {conf.max_ratio:.2f})"
            )
        result.ok = not result.reason
        return result

    def _refine(
        self,
        peak: Peak,
        template: Callable[[float, float], Template | None],
        spreads: dict[tuple[int, float], float],
        radius_px: int,
    ) -> Peak:
        """The peak's place, by the raw score: its best scale of the ladder within ``radius_px`` (a
        wrong scale can peak a few metres off), then its heading and its scale corrected on a small
        crop; then sub-pixel. Its spread is that of the ladder scale's surface."""
        conf = self.conf
        best = peak
        for scale in conf.scales:
            tried = self._place(peak, template(0.0, scale), 0.0, scale, radius_px)
            if tried is not None and tried.score > best.score:
                best = tried
                best.spread = spreads.get((id(peak.area), scale), peak.spread)
        start = best
        for yaw in conf.refine_yaw_deg:
            tried = self._place(start, template(yaw, start.scale), yaw, start.scale)
            best = tried if tried is not None and tried.score > best.score else best
        for factor in conf.refine_scale:
            scale = start.scale * factor
            tried = self._place(start, template(best.yaw_deg, scale), best.yaw_deg, scale)
            best = tried if tried is not None and tried.score > best.score else best
        return best

    def _place(
        self, peak: Peak, current: Template | None, yaw: float, scale: float, pad: int | None = None
    ) -> Peak | None:
        """The best sub-pixel placement of ``current`` within ``pad`` (default ``refine_px``) of where
        ``peak`` puts the point below the camera."""
        if current is None:
            return None
        area, pad = peak.area, self.conf.refine_px if pad is None else pad
        corner = np.round(peak.origin_px - current.origin_px).astype(int) - pad
        h, w = current.shape
        u0, v0 = max(corner[0], 0), max(corner[1], 0)
        crop = area.crop(u0, v0, corner[0] + w + 2 * pad + 1, corner[1] + h + 2 * pad + 1)
        surface = ncc_surface(current, crop, self.conf.min_coverage)
        if not np.any(np.isfinite(surface)):
            return None
        v, u = np.unravel_index(int(np.nanargmax(surface)), surface.shape)
        origin = np.array(subpixel(surface, v, u)) + (u0, v0) + current.origin_px
        xy = area.pixel_to_xy @ [*origin, 1.0]
        return Peak(float(surface[v, u]), xy, yaw, scale, area, origin, peak.sidelobe, peak.spread)


def _distinct(peaks: list[Peak], distinct_m: float) -> list[Peak]:
    """Best first, each at least ``distinct_m`` from every better one."""
    kept: list[Peak] = []
    for peak in sorted(peaks, key=lambda p: -p.significance):
        if all(np.hypot(*(peak.xy - k.xy)) >= distinct_m for k in kept):
            kept.append(peak)
    return kept
