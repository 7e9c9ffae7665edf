"""One synthetic area from a seed and a style: albedo, DSM (terrain + objects), class map, facades.

Rasters are north-up, ``gsd`` metres per pixel, local frame of ``georef`` (x east, y south). The
look is built for the two jobs downstream: locations must be told apart (varied layouts, roof
colours, fields, water), and feature matchers need rich local texture (roof details, cars, tree
crowns, field rows), so nothing is a flat block of colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from geolink_edge.data.synthetic.styles import Style

CLASSES = {
    "bare": 0,
    "grass": 1,
    "field": 2,
    "road": 3,
    "building": 4,
    "tree": 5,
    "water": 6,
    "sand": 7,
    "paved": 8,
}
CAR_COLOURS = np.array(
    [
        (0.92, 0.92, 0.92),
        (0.08, 0.08, 0.09),
        (0.62, 0.63, 0.65),
        (0.60, 0.10, 0.08),
        (0.12, 0.22, 0.50),
        (0.40, 0.40, 0.42),
        (0.85, 0.80, 0.60),
    ],
    np.float32,
)
CONTAINER_COLOURS = np.array(
    [
        (0.70, 0.20, 0.12),
        (0.15, 0.35, 0.60),
        (0.20, 0.50, 0.30),
        (0.85, 0.60, 0.15),
        (0.55, 0.55, 0.58),
        (0.80, 0.80, 0.78),
    ],
    np.float32,
)
CROP_COLOURS = np.array(
    [
        (0.42, 0.55, 0.22),
        (0.70, 0.62, 0.32),
        (0.48, 0.38, 0.26),
        (0.55, 0.62, 0.30),
        (0.32, 0.45, 0.20),
        (0.78, 0.70, 0.45),
        (0.40, 0.33, 0.24),
    ],
    np.float32,
)


@dataclass
class World:
    style: Style
    gsd: float
    albedo: np.ndarray  # float32 (H, W, 3) RGB in [0, 1], no lighting
    dsm: np.ndarray  # float32 (H, W) metres: terrain + buildings + trees
    ground: np.ndarray  # float32 (H, W) bare terrain
    classes: np.ndarray  # uint8 (H, W), values of CLASSES
    facade: np.ndarray  # uint8 (H, W, 3) RGB wall colour under each building footprint


def noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float, octaves: int = 3) -> np.ndarray:
    """Smooth value noise (float32, unit std) whose coarsest features are ``cell_px`` pixels."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp = 1.0
    for _ in range(octaves):
        if cell_px <= 1.0:
            out += amp * rng.standard_normal(shape).astype(np.float32)
        else:
            small = rng.standard_normal((int(h / cell_px) + 4, int(w / cell_px) + 4)).astype(np.float32)
            big = cv2.resize(
                small,
                (int(small.shape[1] * cell_px), int(small.shape[0] * cell_px)),
                interpolation=cv2.INTER_CUBIC,
            )
            out += amp * big[:h, :w]
        cell_px /= 2.0
        amp *= 0.5
    return out / max(float(out.std()), 1e-6)


class _Canvas:
    """The rasters being painted, plus an occupancy map (1 m cells) that keeps objects apart."""

    def __init__(self, style: Style, size_px: int, gsd: float, rng: np.random.Generator):
        self.style, self.gsd, self.rng, self.n = style, gsd, rng, size_px
        self.px = 1.0 / gsd  # pixels per metre
        shape = (size_px, size_px)
        self.ground = (style.base_elevation + style.relief * noise(rng, shape, 160 * self.px, 2)).astype(
            np.float32
        )
        self.objects = np.zeros(shape, np.float32)  # height above ground
        self.classes = np.full(shape, CLASSES["grass"], np.uint8)
        tint = (
            noise(rng, shape, 40 * self.px, 3)[..., None] * 0.06
            + noise(rng, shape, 2 * self.px, 2)[..., None] * 0.05
        )
        base = np.array(style.ground_colour, np.float32)
        other = np.array(style.extra.get("ground_patches", style.ground_colour), np.float32)
        mix = np.clip(noise(rng, shape, 30 * self.px, 3) * 1.5, 0, 1)[..., None]
        self.albedo = np.clip((base * (1 - mix) + other * mix) * (1 + tint), 0, 1)
        self.facade = np.zeros((*shape, 3), np.uint8)
        self.occ_scale = max(1, int(round(self.px)))  # occupancy cell ≈ 1 m
        self.occupied = np.zeros((size_px // self.occ_scale + 1,) * 2, bool)

    # -- geometry helpers (pixel units, pixel centres at +0.5) --
    def patch(self, cx: float, cy: float, half_l: float, half_w: float, angle: float):
        """Slices of the bbox of an oriented rectangle and the (u along, v across) coords inside it."""
        r = math.hypot(half_l, half_w) + 1
        x0, x1 = max(0, int(cx - r)), min(self.n, int(cx + r) + 1)
        y0, y1 = max(0, int(cy - r)), min(self.n, int(cy + r) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        c, s = math.cos(angle), math.sin(angle)
        u = (xx - cx) * c + (yy - cy) * s
        v = -(xx - cx) * s + (yy - cy) * c
        return (slice(y0, y1), slice(x0, x1)), u, v

    def is_free(self, cx: float, cy: float, half_l: float, half_w: float, angle: float, pad_m: float) -> bool:
        k = self.occ_scale
        pad = pad_m * self.px
        c, s = math.cos(angle), math.sin(angle)
        corners = np.array(
            [[a * (half_l + pad), b * (half_w + pad)] for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        )
        pts = np.stack(
            [cx + corners[:, 0] * c - corners[:, 1] * s, cy + corners[:, 0] * s + corners[:, 1] * c], 1
        )
        if pts.min() < 0 or pts.max() >= self.n:
            return False
        cells = (pts / k).astype(np.int32)
        x0, y0 = cells.min(0)
        x1, y1 = cells.max(0) + 1
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, cells - [x0, y0], 1)
        return not bool(self.occupied[y0:y1, x0:x1][mask > 0].any())

    def occupy(self, mask_full: np.ndarray) -> None:
        k = self.occ_scale
        small = (
            cv2.resize(
                mask_full.astype(np.uint8),
                (self.occupied.shape[1], self.occupied.shape[0]),
                interpolation=cv2.INTER_NEAREST,
            )
            if k > 1
            else mask_full
        )
        self.occupied[: small.shape[0], : small.shape[1]] |= small.astype(bool)[
            : self.occupied.shape[0], : self.occupied.shape[1]
        ]

    def occupy_patch(self, sl, inside: np.ndarray) -> None:
        k = self.occ_scale
        ys, xs = np.nonzero(inside)
        self.occupied[(ys + sl[0].start) // k, (xs + sl[1].start) // k] = True

    def random_point(self, margin_m: float = 0.0) -> tuple[float, float]:
        m = margin_m * self.px
        return tuple(self.rng.uniform(m, self.n - m, 2))


def _jitter(rng: np.random.Generator, colour, amount: float = 0.06) -> np.ndarray:
    """Mostly a brightness change, a little hue: real roofs of one colour family vary that way."""
    gain = rng.uniform(1 - amount, 1 + amount) * rng.uniform(1 - amount / 4, 1 + amount / 4, 3)
    return np.clip(np.asarray(colour, np.float32) * gain, 0, 1).astype(np.float32)


# ---------------------------------------------------------------- water
def _paint_water(cv: _Canvas) -> None:
    rng, n, px = cv.rng, cv.n, cv.px
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    if cv.style.water == "sea":
        side = rng.integers(4)
        along = [yy, xx, n - yy, n - xx][side]  # distance from the chosen edge
        shore = n * rng.uniform(0.18, 0.28) + 25 * px * noise(rng, (n, n), 120 * px, 2)
        water = along < shore
    else:  # a meandering river
        t = np.linspace(-0.1, 1.1, 64)
        y0, amp, freq, ph = (
            rng.uniform(0.2, 0.8) * n,
            rng.uniform(40, 90) * px,
            rng.uniform(1.0, 2.2),
            rng.uniform(0, 6.3),
        )
        pts = np.stack([t * n, y0 + amp * np.sin(2 * np.pi * freq * t + ph)], 1)
        if rng.random() < 0.5:
            pts = pts[:, ::-1]
        mask = np.zeros((n, n), np.uint8)
        cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, int(rng.uniform(14, 26) * px))
        water = mask > 0
    level = float(np.percentile(cv.ground[water], 5)) - 1.5 if water.any() else 0.0
    bank = cv2.dilate(water.astype(np.uint8), np.ones((int(6 * px), int(6 * px)), np.uint8)) > 0
    if cv.style.water == "river":
        cv.classes[bank & ~water] = CLASSES["sand"]
        cv.albedo[bank & ~water] = _jitter(rng, (0.55, 0.50, 0.38))
    cv.ground[water] = level
    ripple = (
        noise(rng, (n, n), 4 * px, 2)[..., None] * 0.035 + noise(rng, (n, n), 60 * px, 1)[..., None] * 0.04
    )
    cv.albedo[water] = np.clip(np.array((0.10, 0.20, 0.24), np.float32) + ripple[water], 0, 1)
    cv.classes[water] = CLASSES["water"]
    cv.occupy(bank if cv.style.water == "river" else water)


# ---------------------------------------------------------------- roads
def _road_lines(cv: _Canvas) -> tuple[list[np.ndarray], list[float], float]:
    """Centrelines (pixel polylines), their widths (m) and the dominant grid angle."""
    st, rng, n, px = cv.style, cv.rng, cv.n, cv.px
    angle = rng.uniform(0, np.pi / 2)
    lines, widths = [], []
    if st.roads == "rural":
        for _ in range(rng.integers(2, 4)):
            a = rng.uniform(0, np.pi)
            p0 = np.array(cv.random_point(100))
            d = np.array([math.cos(a), math.sin(a)])
            t = np.linspace(-1.5 * n, 1.5 * n, 40)[:, None]
            bend = rng.uniform(10, 40) * px * np.sin(t / n * rng.uniform(2, 5))
            lines.append(p0 + t * d + bend * np.array([-d[1], d[0]]))
            widths.append(rng.uniform(*st.road_width))
        return lines, widths, angle
    c, s = math.cos(angle), math.sin(angle)
    centre = np.array([n / 2, n / 2])
    half = n * 0.75
    for axis in (0, 1):
        u = -half + rng.uniform(0, st.road_spacing[1] * px)
        while u < half:
            t = np.linspace(-half, half, 48)
            off = np.full_like(t, u)
            if st.roads == "curvy":
                off = off + rng.uniform(8, 22) * px * np.sin(
                    t / (rng.uniform(60, 140) * px) + rng.uniform(0, 6.3)
                )
            local = np.stack([t, off], 1) if axis == 0 else np.stack([off, t], 1)
            rot = np.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c], 1) + centre
            if st.roads == "curvy" and rng.random() < 0.35:  # a cul-de-sac: keep a random stretch
                k0 = rng.integers(0, 30)
                rot = rot[k0 : k0 + rng.integers(8, 18)]
            lines.append(rot)
            widths.append(rng.uniform(*st.road_width))
            u += rng.uniform(*st.road_spacing) * px
    return lines, widths, angle


def _paint_roads(cv: _Canvas) -> float:
    st, rng, n, px = cv.style, cv.rng, cv.n, cv.px
    lines, widths, angle = _road_lines(cv)
    road = np.zeros((n, n), np.uint8)
    walk = np.zeros((n, n), np.uint8)
    marks = np.zeros((n, n), np.uint8)
    for pts, w in zip(lines, widths, strict=False):
        poly = np.round(pts).astype(np.int32)
        if st.roads in ("grid", "wide_grid"):
            cv2.polylines(walk, [poly], False, 1, int((w + 6) * px))
        cv2.polylines(road, [poly], False, 1, int(w * px))
        if st.roads == "curvy" and len(pts) < 20:
            cv2.circle(road, tuple(int(v) for v in pts[-1]), int(w * 1.1 * px), 1, -1)
        if w >= 8 and st.roads != "rural":  # dashed centre line
            for a, b in zip(pts[:-1], pts[1:], strict=False):
                for k in range(0, 8, 2):
                    p, q = a + (b - a) * k / 8, a + (b - a) * (k + 1) / 8
                    cv2.line(
                        marks, tuple(int(v) for v in p), tuple(int(v) for v in q), 1, max(1, int(0.4 * px))
                    )
    free = cv.classes != CLASSES["water"]
    walk_m = (walk > 0) & (road == 0) & free
    road_m = (road > 0) & free
    shape = (n, n)
    cv.classes[walk_m] = CLASSES["paved"]
    cv.albedo[walk_m] = np.clip(np.float32(0.62) + 0.05 * noise(rng, shape, 1.5 * px, 2)[walk_m], 0, 1)[
        :, None
    ]
    if st.roads == "rural":
        asphalt = np.array((0.36, 0.35, 0.33), np.float32)
    else:
        asphalt = np.array((0.24, 0.24, 0.25), np.float32)
    tex = 0.05 * noise(rng, shape, 0.8 * px, 2) + 0.04 * noise(rng, shape, 25 * px, 1)
    cv.classes[road_m] = CLASSES["road"]
    cv.albedo[road_m] = np.clip(asphalt + tex[road_m][:, None], 0, 1)
    mark_m = (marks > 0) & road_m
    cv.albedo[mark_m] = (0.85, 0.85, 0.80)
    cv.occupy((walk > 0) | (road > 0))
    _place_cars(cv, lines, widths)
    return angle


def _draw_box(
    cv: _Canvas, cx, cy, half_l, half_w, angle, height, colour, cls=None, texture=0.0
) -> np.ndarray | None:
    """An oriented box (car, container, roof unit) on top of what is there; returns its mask."""
    got = cv.patch(cx, cy, half_l, half_w, angle)
    if got is None:
        return None
    sl, u, v = got
    inside = (np.abs(u) <= half_l) & (np.abs(v) <= half_w)
    colour = np.asarray(colour, np.float32)
    if texture:
        shade = 1 + texture * np.sign(np.sin(u * 1.7))[..., None]
        cv.albedo[sl][inside] = np.clip(colour * shade[inside], 0, 1)
    else:
        cv.albedo[sl][inside] = colour
    base = cv.objects[sl]
    base[inside] = np.maximum(base[inside], height)
    if cls is not None:
        cv.classes[sl][inside] = cls
    return inside


def _place_cars(cv: _Canvas, lines, widths) -> None:
    rng, px = cv.rng, cv.px
    for pts, w in zip(lines, widths, strict=False):
        seg = np.diff(pts, axis=0)
        lengths = np.hypot(seg[:, 0], seg[:, 1]) / px
        count = rng.poisson(cv.style.cars_per_100m * lengths.sum() / 100 * 0.35)
        probs = lengths / lengths.sum()
        for _ in range(count):
            k = rng.choice(len(seg), p=probs)
            p = pts[k] + seg[k] * rng.random()
            d = seg[k] / max(np.hypot(*seg[k]), 1e-6)
            side = rng.choice([-1, 1]) * w * 0.25 * px
            cx, cy = p + side * np.array([-d[1], d[0]])
            if not (0 <= cx < cv.n and 0 <= cy < cv.n) or cv.classes[int(cy), int(cx)] != CLASSES["road"]:
                continue
            _draw_box(
                cv,
                cx,
                cy,
                2.2 * px,
                0.9 * px,
                math.atan2(d[1], d[0]),
                1.5,
                CAR_COLOURS[rng.integers(len(CAR_COLOURS))],
            )


# ---------------------------------------------------------------- fields and forests
def _paint_fields(cv: _Canvas) -> None:
    from scipy.spatial import cKDTree

    rng, n, px = cv.rng, cv.n, cv.px
    k = 4
    m = n // k
    seeds = rng.uniform(0, m, (max(4, int((n / px / 110) ** 2 * 1.3)), 2))
    yy, xx = np.mgrid[0:m, 0:m]
    _, label = cKDTree(seeds).query(np.stack([xx.ravel(), yy.ravel()], 1))
    label = cv2.resize(
        label.reshape(m, m).astype(np.float32), (n, n), interpolation=cv2.INTER_NEAREST
    ).astype(np.int32)
    count = len(seeds)
    colours = CROP_COLOURS[rng.integers(len(CROP_COLOURS), size=count)] * rng.uniform(
        0.9, 1.1, (count, 3)
    ).astype(np.float32)
    angles = rng.uniform(0, np.pi, count).astype(np.float32)
    periods = rng.uniform(2.0, 5.0, count).astype(np.float32) * px
    strength = rng.uniform(0.03, 0.12, count).astype(np.float32)
    Y, X = np.mgrid[0:n, 0:n].astype(np.float32)
    a = angles[label]
    rows = np.sin(2 * np.pi * (X * np.cos(a) + Y * np.sin(a)) / periods[label])
    tex = 1 + strength[label] * rows + 0.06 * noise(rng, (n, n), 6 * px, 3)
    field = (cv.classes == CLASSES["grass"]) & (noise(rng, (n, n), 200 * px, 1) > -1.2)
    cv.albedo[field] = np.clip(colours[label[field]] * tex[field][:, None], 0, 1)
    cv.classes[field] = CLASSES["field"]
    edges = (label != np.roll(label, 1, 0)) | (label != np.roll(label, 1, 1))
    edges = cv2.dilate(edges.astype(np.uint8), np.ones((int(2 * px), int(2 * px)), np.uint8)) > 0
    cv.albedo[edges & field] *= 0.8
    # Hedgerows on some field edges: trees along the boundary.
    ys, xs = np.nonzero(edges[:: int(6 * px), :: int(6 * px)] & field[:: int(6 * px), :: int(6 * px)])
    hedge = rng.random(count) < 0.35
    for y, x in zip(ys * int(6 * px), xs * int(6 * px), strict=False):
        if hedge[label[y, x]]:
            _tree(
                cv,
                x + rng.normal(0, 1.5 * px),
                y + rng.normal(0, 1.5 * px),
                rng.uniform(2.0, 3.5),
                rng.uniform(6, 12),
            )


def _tree(cv: _Canvas, cx: float, cy: float, radius_m: float, height_m: float, colour=None) -> None:
    rng, px = cv.rng, cv.px
    r = radius_m * px
    got = cv.patch(cx, cy, r, r, 0.0)
    if got is None:
        return
    sl, u, v = got
    d2 = (u * u + v * v) / (r * r)
    inside = d2 < 1
    crown = height_m * (0.55 + 0.45 * np.sqrt(np.clip(1 - d2, 0, 1)))
    objects = cv.objects[sl]
    over = inside & (crown > objects) & (cv.classes[sl] != CLASSES["building"])
    if colour is None:
        colour = _jitter(rng, (0.18, 0.30, 0.12), 0.18)
    leaves = 1 + 0.22 * rng.standard_normal(u.shape).astype(np.float32) * (rng.random(u.shape) < 0.5)
    edge = 0.75 + 0.25 * np.sqrt(np.clip(1 - d2, 0, 1))
    cv.albedo[sl][over] = np.clip(colour * (leaves * edge)[over][:, None], 0, 1)
    objects[over] = crown[over]
    cv.classes[sl][over] = CLASSES["tree"]


def _paint_trees(cv: _Canvas) -> None:
    st, rng, n, px = cv.style, cv.rng, cv.n, cv.px
    area_ha = (n / px) ** 2 / 1e4
    if st.forest_fraction > 0:
        f = noise(rng, (n, n), 150 * px, 2)
        forest = (f > np.quantile(f, 1 - st.forest_fraction)) & np.isin(
            cv.classes, [CLASSES["grass"], CLASSES["field"]]
        )
        step = 5.5 * px
        for y in np.arange(step / 2, n, step):
            for x in np.arange(step / 2, n, step):
                jx, jy = x + rng.uniform(-0.4, 0.4) * step, y + rng.uniform(-0.4, 0.4) * step
                if 0 <= jx < n and 0 <= jy < n and forest[int(jy), int(jx)]:
                    _tree(
                        cv,
                        jx,
                        jy,
                        rng.uniform(2.8, 4.5),
                        rng.uniform(*st.tree_height),
                        _jitter(rng, (0.13, 0.25, 0.10), 0.25),
                    )
        cv.occupy(forest)
    for _ in range(int(rng.poisson(st.trees_per_ha * area_ha))):
        x, y = cv.random_point()
        if cv.classes[int(y), int(x)] in (CLASSES["grass"], CLASSES["paved"], CLASSES["sand"]):
            _tree(cv, x, y, rng.uniform(2.0, 5.0), rng.uniform(*st.tree_height))


# ---------------------------------------------------------------- buildings
def _roof_height(shape: str, u, v, half_l, half_w, rise):
    if shape == "gable":
        return rise * (1 - np.abs(v) / half_w)
    if shape == "hip":
        return rise * np.clip(np.minimum(1 - np.abs(v) / half_w, (half_l - np.abs(u)) / half_w), 0, 1)
    return np.zeros_like(u)


def _building(cv: _Canvas, cx, cy, length_m, width_m, angle, height_m, shape: str) -> None:
    st, rng, px = cv.style, cv.rng, cv.px
    half_l, half_w = length_m / 2 * px, width_m / 2 * px
    got = cv.patch(cx, cy, half_l, half_w, angle)
    if got is None:
        return
    sl, u, v = got
    if shape == "tank":
        inside = u * u + v * v <= half_w * half_w
    else:
        inside = (np.abs(u) <= half_l) & (np.abs(v) <= half_w)
    if shape == "flat" and width_m > 24 and rng.random() < st.courtyard_prob:
        m = rng.uniform(7, 10) * px
        yard = (np.abs(u) < half_l - m) & (np.abs(v) < half_w - m)
        inside &= ~yard
        cv.classes[sl][yard] = CLASSES["paved"]
        cv.albedo[sl][yard] = _jitter(rng, (0.55, 0.53, 0.50))
    rise = width_m / 2 * math.tan(math.radians(rng.uniform(25, 40)))
    roof = height_m + _roof_height(shape, u, v, half_l, half_w, rise)
    colour = _jitter(rng, st.roof_colours[rng.integers(len(st.roof_colours))], 0.1)
    if shape in ("gable", "hip"):  # tile rows across the slope, a lighter ridge
        tex = 1 + 0.07 * np.sin(np.abs(v) / (0.9 * px) * 2 * np.pi) + 0.05 * rng.standard_normal(u.shape)
        tex = tex + 0.12 * (np.abs(v) < 0.5 * px) * (shape == "gable")
    elif shape == "tank":
        tex = 1 + 0.08 * np.cos(np.hypot(u, v) / (1.5 * px) * 2 * np.pi)
    else:  # gravel / membrane with seams, parapet darker
        tex = 1 + 0.06 * rng.standard_normal(u.shape) + 0.05 * np.sign(np.sin(u / (3.0 * px)))
        tex = tex - 0.18 * ((half_l - np.abs(u) < 0.7 * px) | (half_w - np.abs(v) < 0.7 * px))
    cv.albedo[sl][inside] = np.clip(colour * tex[inside][:, None], 0, 1).astype(np.float32)
    objects = cv.objects[sl]
    objects[inside] = roof[inside]
    cv.classes[sl][inside] = CLASSES["building"]
    facade = np.round(255 * _jitter(rng, st.facade_colours[rng.integers(len(st.facade_colours))], 0.08))
    cv.facade[sl][inside] = facade.astype(np.uint8)
    cv.occupy_patch(sl, inside)
    if shape == "flat":  # roof units: AC boxes, skylights, stair houses
        for _ in range(int(rng.poisson(length_m * width_m / 150))):
            du, dv = rng.uniform(-0.8, 0.8) * (half_l - 2 * px), rng.uniform(-0.8, 0.8) * (half_w - 2 * px)
            ux, uy = (
                cx + du * math.cos(angle) - dv * math.sin(angle),
                cy + du * math.sin(angle) + dv * math.cos(angle),
            )
            shade = rng.choice([0.55, 0.75, 1.15, 1.3])
            _draw_box(
                cv,
                ux,
                uy,
                rng.uniform(0.8, 3.0) * px,
                rng.uniform(0.8, 2.0) * px,
                angle,
                height_m + rng.uniform(0.8, 2.5),
                np.clip(colour * shade, 0, 1),
                CLASSES["building"],
            )


def _paint_buildings(cv: _Canvas, angle: float) -> None:
    st, rng, px, n = cv.style, cv.rng, cv.px, cv.n
    shapes = list(st.roof_shapes)
    probs = np.array([st.roof_shapes[s] for s in shapes])
    area_ha = (n / px) ** 2 / 1e4
    if st.fields:  # farmsteads: a few clusters of barns and silos
        centres = [cv.random_point(60) for _ in range(rng.integers(3, 7))]
        attempts = [(c, 45.0) for c in centres for _ in range(14)]
    else:
        attempts = [(cv.random_point(), 0.0) for _ in range(int(st.building_attempts * area_ha))]
    # Large footprints first, so small ones fill the gaps instead of blocking them.
    sizes = np.sort(rng.uniform(*st.building_size, len(attempts)))[::-1]
    for ((cx, cy), spread), length in zip(attempts, sizes, strict=False):
        if spread:
            cx, cy = cx + rng.normal(0, spread * px / 2), cy + rng.normal(0, spread * px / 2)
        shape = shapes[rng.choice(len(shapes), p=probs / probs.sum())]
        width = rng.uniform(st.building_size[0], length) if shape != "tank" else rng.uniform(8, 24)
        if shape == "tank":
            length = width
        a = angle + rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05 if st.roads != "curvy" else 0.4)
        if not cv.is_free(cx, cy, length / 2 * px, width / 2 * px, a, st.setback):
            continue
        lo, hi = st.building_height
        height = lo + (hi - lo) * rng.random() ** 2  # many low, few tall
        _building(cv, cx, cy, length, width, a, height, shape)
        if st.pools_prob and rng.random() < st.pools_prob:
            off = (width / 2 + 5) * px
            side = rng.choice([-1, 1])
            pxc, pyc = cx - side * off * math.sin(a), cy + side * off * math.cos(a)
            if cv.is_free(pxc, pyc, 4 * px, 2 * px, a, 0.5):
                _draw_box(
                    cv,
                    pxc,
                    pyc,
                    4 * px,
                    2 * px,
                    a,
                    0.0,
                    _jitter(rng, (0.25, 0.70, 0.80)),
                    CLASSES["water"],
                    0.05,
                )
    if st.containers:
        for _ in range(int(area_ha * 0.6)):
            cx, cy = cv.random_point(20)
            rows, cols = rng.integers(3, 8), rng.integers(2, 5)
            span_l, span_w = cols * 12.5 * px, rows * 2.7 * px
            if not cv.is_free(cx, cy, span_l / 2, span_w / 2, angle, 2.0):
                continue
            for i in range(rows):
                for j in range(cols):
                    du, dv = (j - (cols - 1) / 2) * 12.5 * px, (i - (rows - 1) / 2) * 2.7 * px
                    ux, uy = (
                        cx + du * math.cos(angle) - dv * math.sin(angle),
                        cy + du * math.sin(angle) + dv * math.cos(angle),
                    )
                    mask = _draw_box(
                        cv,
                        ux,
                        uy,
                        6.0 * px,
                        1.2 * px,
                        angle,
                        2.6 * rng.integers(1, 4),
                        CONTAINER_COLOURS[rng.integers(len(CONTAINER_COLOURS))],
                        CLASSES["building"],
                        0.08,
                    )
                    if mask is not None:
                        cv.occupy_patch(cv.patch(ux, uy, 6.0 * px, 1.2 * px, angle)[0], mask)
    if st.parking_prob:
        _paint_parking(cv, angle, int(area_ha * st.parking_prob * 2))


def _paint_parking(cv: _Canvas, angle: float, count: int) -> None:
    rng, px = cv.rng, cv.px
    for _ in range(count):
        cx, cy = cv.random_point(30)
        half_l, half_w = rng.uniform(15, 35) * px, rng.uniform(10, 20) * px
        if not cv.is_free(cx, cy, half_l, half_w, angle, 1.0):
            continue
        sl, u, v = cv.patch(cx, cy, half_l, half_w, angle)
        inside = (np.abs(u) <= half_l) & (np.abs(v) <= half_w)
        lines = (np.abs(np.mod(u, 2.6 * px) - 1.3 * px) < 0.12 * px + 0.5) & (np.mod(v, 12 * px) < 5 * px)
        colour = np.where(lines[..., None], np.float32(0.85), np.float32(0.33))
        cv.albedo[sl][inside] = (colour + 0.03 * rng.standard_normal(u.shape)[..., None])[inside]
        cv.classes[sl][inside] = CLASSES["paved"]
        cv.occupy_patch(sl, inside)
        for su in np.arange(-half_l + 1.3 * px, half_l, 2.6 * px):
            for sv in np.arange(-half_w + 2.5 * px, half_w, 6 * px):
                if rng.random() < 0.6:
                    x = cx + su * math.cos(angle) - sv * math.sin(angle)
                    y = cy + su * math.sin(angle) + sv * math.cos(angle)
                    _draw_box(
                        cv, x, y, 0.9 * px, 2.2 * px, angle, 1.5, CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
                    )


def generate(style: Style, seed: int, size_px: int = 2048, gsd: float = 0.3) -> World:
    """A deterministic area of ``size_px`` × ``size_px`` pixels for ``(style, seed)``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib_crc(style.name)]))
    cv = _Canvas(style, size_px, gsd, rng)
    if style.water:
        _paint_water(cv)
    angle = _paint_roads(cv)
    if style.fields:
        _paint_fields(cv)
    _paint_trees(cv)  # forests first so buildings keep out of them
    _paint_buildings(cv, angle)
    ground = cv.ground
    dsm = (ground + cv.objects).astype(np.float32)
    return World(
        style, gsd, cv.albedo.astype(np.float32), dsm, ground.astype(np.float32), cv.classes, cv.facade
    )


def zlib_crc(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())
