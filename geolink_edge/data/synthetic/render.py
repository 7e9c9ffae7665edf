"""Pinhole views of a DSM by vectorised heightfield ray marching (numpy + OpenCV remap).

Every pixel's ray is marched from where it crosses the highest surface down to where it crosses the
lowest, in steps shorter than the pixel's ground footprint, then refined by bisection; the first
sample under the DSM is the visible surface, so occlusion is exact at the DSM's resolution. A hit
whose height lies well below the DSM cell it entered is a *wall*: it is coloured with the
building's facade (floors, windows, sun-dependent shading), so oblique views show facades.

Camera convention (docs/artifacts.md): world = east, north, up in the area CRS; camera = OpenCV;
R rows are right, down, forward for heading ``yaw`` (clockwise from north) and ``pitch`` below the
horizon; ``X_cam = R (X_world - C)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from geolink_edge.data.synthetic.georef import AreaGrid

WALL_TOLERANCE_M = 1.0  # a hit this far under the DSM top of its cell is on a wall
FLOOR_M = 3.2
MAX_SAMPLES = 3_000_000  # per chunk of rays: bounds memory


@dataclass(frozen=True)
class Camera:
    K: np.ndarray  # 3×3
    R: np.ndarray  # world→camera 3×3
    C: np.ndarray  # centre (E, N, height) in the area CRS
    width: int
    height: int
    yaw: float
    pitch: float

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) area-CRS points → (N, 2) pixel coordinates (OpenCV: pixel centres at integers)."""
        cam = (np.asarray(points, np.float64) - self.C) @ self.R.T
        uvw = cam @ self.K.T
        return uvw[:, :2] / uvw[:, 2:3]

    def to_json(self, file: str, ground_height: float) -> dict:
        return {
            "file": file,
            "width": self.width,
            "height": self.height,
            "K": self.K.tolist(),
            "R": self.R.tolist(),
            "C": [float(v) for v in self.C],
            "yaw": round(self.yaw, 6),
            "pitch": round(self.pitch, 6),
            "altitude": round(float(self.C[2] - ground_height), 4),
        }

    @classmethod
    def from_json(cls, record: dict) -> Camera:
        return cls(
            np.array(record["K"], np.float64),
            np.array(record["R"], np.float64),
            np.array(record["C"], np.float64),
            int(record["width"]),
            int(record["height"]),
            float(record["yaw"]),
            float(record["pitch"]),
        )


def rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    psi, theta = math.radians(yaw_deg), math.radians(pitch_deg)
    right = np.array([math.cos(psi), -math.sin(psi), 0.0])
    forward = np.array([math.sin(psi) * math.cos(theta), math.cos(psi) * math.cos(theta), -math.sin(theta)])
    return np.stack([right, np.cross(forward, right), forward])


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)


def make_camera(centre, yaw: float, pitch: float, width: int, height: int, hfov_deg: float) -> Camera:
    return Camera(
        intrinsics(width, height, hfov_deg),
        rotation(yaw, pitch),
        np.asarray(centre, np.float64),
        width,
        height,
        float(yaw),
        float(pitch),
    )


def orbit_camera(target, altitude: float, pitch: float, yaw: float, size: int, hfov_deg: float) -> Camera:
    """A camera ``altitude`` m above ``target`` (E, N, h) whose optical axis passes through it."""
    r = altitude / math.tan(math.radians(pitch))
    psi = math.radians(yaw)
    centre = np.asarray(target, np.float64) + [-r * math.sin(psi), -r * math.cos(psi), altitude]
    return make_camera(centre, yaw, pitch, size, size, hfov_deg)


@dataclass
class Surface:
    """What a camera can see: the DSM on its grid, and optionally what colours it."""

    grid: AreaGrid
    dsm: np.ndarray  # float32 (H, W)
    colour: list[np.ndarray] | None = None  # RGB float32 pyramid, level 0 on the grid
    facade: np.ndarray | None = None  # uint8 RGB (H, W, 3)
    ground: np.ndarray | None = None  # float32 terrain (for floor heights)
    classes: np.ndarray | None = None
    sun: tuple[float, float] = (135.0, 45.0)  # azimuth clockwise from north, elevation (deg)

    def __post_init__(self):
        self.zmin, self.zmax = float(self.dsm.min()), float(self.dsm.max())


@dataclass
class Hits:
    col: np.ndarray  # float32 (h, w) grid column of the hit (pixel-centre convention)
    row: np.ndarray
    z: np.ndarray  # height of the hit
    dist: np.ndarray  # distance from the camera
    wall: np.ndarray  # bool: on a building wall
    dirs: np.ndarray  # (h, w, 3) unit ray directions in local (x east, y south, z up)

    def crs_points(self, grid: AreaGrid) -> np.ndarray:
        """(h·w, 3) hit points in the area CRS (E, N, height)."""
        east, north = grid.local_to_crs(
            (self.col.ravel() + 0.5) * grid.gsd, (self.row.ravel() + 0.5) * grid.gsd
        )
        return np.stack([east, north, self.z.ravel().astype(np.float64)], 1)


def _lookup(image: np.ndarray, col: np.ndarray, row: np.ndarray, linear: bool = False) -> np.ndarray:
    """Sample ``image`` at grid coordinates (any 2-D shape); outside the area the world is mirrored."""
    flags = cv2.INTER_LINEAR if linear else cv2.INTER_NEAREST
    col, row = np.asarray(col, np.float32), np.asarray(row, np.float32)
    shape = col.shape
    if col.ndim == 2 and max(shape) < 32767:
        return cv2.remap(image, col, row, flags, borderMode=cv2.BORDER_REFLECT_101)
    size = int(np.prod(shape))
    width = 4096  # OpenCV maps must stay under 32767 on each side
    pad = (-size) % width
    maps = [np.pad(a.ravel(), (0, pad)).reshape(-1, width) for a in (col, row)]
    out = cv2.remap(image, maps[0], maps[1], flags, borderMode=cv2.BORDER_REFLECT_101)
    return out.reshape(-1, *image.shape[2:])[:size].reshape(*shape, *image.shape[2:])


def cast(surface: Surface, camera: Camera) -> Hits:
    grid, gsd = surface.grid, surface.grid.gsd
    h, w = camera.height, camera.width
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays_cam = np.stack(
        [(u - camera.K[0, 2]) / camera.K[0, 0], (v - camera.K[1, 2]) / camera.K[1, 1], np.ones_like(u)], -1
    )
    d = rays_cam.reshape(-1, 3) @ camera.R  # camera → world (E, N, up)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d[:, 1] *= -1  # north → local south
    d[:, 2] = np.minimum(d[:, 2], -1e-3)  # rays at or above the horizon meet the far ground
    cx, cy = grid.crs_to_local(camera.C[0], camera.C[1])
    c = np.array([float(cx) / gsd - 0.5, float(cy) / gsd - 0.5, camera.C[2]])  # (col, row, z)
    dg = d * [1 / gsd, 1 / gsd, 1]  # per unit t: columns, rows, metres
    t0 = np.maximum((c[2] - surface.zmax) / -d[:, 2], 0.0)
    t1 = (c[2] - surface.zmin) / -d[:, 2]
    # Step: about half the ground footprint of a pixel, never under one DSM cell.
    horiz = np.hypot(d[:, 0], d[:, 1])
    footprint = t0 / camera.K[0, 0] / np.maximum(-d[:, 2], 0.05)
    dt = np.maximum(0.7 * footprint, gsd * 2) / np.maximum(horiz, 1e-3)
    steps = np.minimum(np.ceil((t1 - t0) / dt), 4000).astype(np.int64) + 1
    t_hit = np.empty(len(d))
    order = np.argsort(steps, kind="stable")
    sorted_steps = steps[order]
    start = 0
    while start < len(order):  # chunks of rays with similar step counts, bounded in samples
        ends = np.arange(start + 1, len(order) + 1)
        end = start + max(
            1, int(np.searchsorted((ends - start) * sorted_steps[ends - 1], MAX_SAMPLES, "right"))
        )
        idx = order[start:end]
        t_hit[idx] = _march(surface, c, dg[idx], t0[idx], t1[idx], int(sorted_steps[end - 1]))
        start = end
    pts = c + t_hit[:, None] * dg
    col, row, z = (pts[:, i].reshape(h, w) for i in range(3))
    top = _lookup(surface.dsm, col, row)
    wall = (top - z) > WALL_TOLERANCE_M
    return Hits(
        col.astype(np.float32),
        row.astype(np.float32),
        z.astype(np.float32),
        t_hit.reshape(h, w),
        wall,
        d.reshape(h, w, 3),
    )


def _march(surface: Surface, c, dg, t0, t1, k: int, block: int = 24) -> np.ndarray:
    """First t (per ray) where the ray is under the DSM, to a small fraction of a step.

    Samples go in blocks along the rays; rays that hit leave the batch, so a ray costs the steps
    to its hit, not to the lowest height.
    """
    # float32 relative to the first sample keeps the big (n, block) arrays cheap and exact enough.
    n = len(dg)
    step = ((t1 - t0) / k).astype(np.float32)
    start = (c + t0[:, None] * dg).astype(np.float32)
    d32 = dg.astype(np.float32)
    hit_s = np.full(n, np.nan, np.float32)
    active = np.arange(n)
    for first in range(0, k + 1, block):
        j = np.arange(first, min(first + block, k + 1), dtype=np.float32)[None, :]
        s = step[active, None] * j
        p, d = start[active], d32[active]
        heights = _lookup(surface.dsm, p[:, 0:1] + s * d[:, 0:1], p[:, 1:2] + s * d[:, 1:2])
        under = (p[:, 2:3] + s * d[:, 2:3]) <= heights + 1e-4
        if first + block > k:
            under[:, -1] = True  # t1 is at the lowest height: always under
        got = under.any(axis=1)
        idx = under.argmax(axis=1)[got]
        hit_s[active[got]] = s[got, idx]
        active = active[~got]
        if not len(active):
            break
    hi = t0 + hit_s.astype(np.float64)
    lo = np.maximum(hi - step, t0)
    for _ in range(5):
        mid = (lo + hi) / 2
        below = (c[2] + mid * dg[:, 2]) <= _lookup(
            surface.dsm, c[0] + mid * dg[:, 0], c[1] + mid * dg[:, 1]
        ) + 1e-4
        hi = np.where(below, mid, hi)
        lo = np.where(below, lo, mid)
    return hi


def _ground_colour(surface: Surface, hits: Hits, camera: Camera) -> np.ndarray:
    """Trilinear lookup in the colour pyramid by each pixel's ground footprint (no aliasing)."""
    pyramid = surface.colour
    footprint = hits.dist / camera.K[0, 0] / np.maximum(-hits.dirs[..., 2], 0.2)
    level = np.clip(np.log2(np.maximum(footprint / surface.grid.gsd, 1e-6)), 0, len(pyramid) - 1)
    out = np.zeros((*level.shape, 3), np.float32)
    for i, image in enumerate(pyramid):
        weight = np.clip(1 - np.abs(level - i), 0, 1).astype(np.float32)
        if not weight.any():
            continue
        s = 2.0**i
        out += weight[..., None] * _lookup(
            image, (hits.col + 0.5) / s - 0.5, (hits.row + 0.5) / s - 0.5, True
        )
    return out


def _wall_colour(surface: Surface, hits: Hits) -> tuple[np.ndarray, np.ndarray]:
    """(facade albedo, lit facade with floors of windows): the sun lights each wall by its normal."""
    col, row = hits.col, hits.row
    # Step one cell into the wall to read the building behind it.
    inward = hits.dirs[..., :2] / np.maximum(np.linalg.norm(hits.dirs[..., :2], axis=-1, keepdims=True), 1e-6)
    ci, ri = col + inward[..., 0] * 1.5, row + inward[..., 1] * 1.5
    facade = _lookup(surface.facade, ci, ri).astype(np.float32) / 255.0
    gx = _lookup(surface.dsm, ci + 2, ri) - _lookup(surface.dsm, ci - 2, ri)
    gy = _lookup(surface.dsm, ci, ri + 2) - _lookup(surface.dsm, ci, ri - 2)
    n = np.stack([-gx, gy], -1)  # outward normal (east, north): downhill
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    az, el = map(math.radians, surface.sun)
    lit = np.clip(n[..., 0] * math.sin(az) + n[..., 1] * math.cos(az), 0, 1) * math.cos(el)
    shade = 0.45 + 0.75 * lit
    floor_z = hits.z - (_lookup(surface.ground, ci, ri) if surface.ground is not None else surface.zmin)
    along = (col * n[..., 1] + row * n[..., 0]) * surface.grid.gsd  # metres along the wall
    window = (
        (np.mod(floor_z, FLOOR_M) > 1.0)
        & (np.mod(floor_z, FLOOR_M) < 2.4)
        & (np.mod(along, 2.8) < 1.6)
        & (floor_z > 2.5)
    )
    colour = facade * shade[..., None]
    glass = np.array([0.16, 0.20, 0.26], np.float32) * (0.7 + 0.6 * lit[..., None])
    return facade, np.where(window[..., None], glass, colour)


def render(surface: Surface, camera: Camera, haze=(0.72, 0.76, 0.82), visibility_m: float = 5000.0):
    """(BGR uint8 image, Hits) of ``surface`` seen by ``camera``."""
    hits = cast(surface, camera)
    rgb = _ground_colour(surface, hits, camera)
    if surface.facade is not None:  # building walls get facades; tree crowns and banks keep their colour
        facade, colour = _wall_colour(surface, hits)
        rgb = np.where((hits.wall & (facade.max(axis=-1) > 0))[..., None], colour, rgb)
    fade = np.exp(-hits.dist / visibility_m)[..., None].astype(np.float32)
    rgb = rgb * fade + np.asarray(haze, np.float32) * (1 - fade)
    return cv2.cvtColor(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR), hits
