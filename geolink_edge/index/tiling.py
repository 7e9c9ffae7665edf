"""North-up tiles of a fixed ground footprint cut from georeferenced layers.

Tiles live on a regular grid in the bundle's metric frame: ENU metres about an origin at the centre
of the imagery (so "north-up" means true north everywhere, not a projection's grid north), or the
raster's own metres for ``local``. Each tile is rendered by mapping its crop pixels through
ENU → WGS84 → the layer's CRS → the layer's pixels (pyproj), fitted as an affine per tile (the
mapping is affine to well under a pixel across a few hundred metres) and warped with OpenCV from
one window read at about the crop's resolution (rasterio uses overviews for coarse scales).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from geolink_edge.errors import GeolinkError
from geolink_edge.geo import LocalFrame
from geolink_edge.index.sources import LOCAL, WGS84, Layer

# A crop for geometric verification should hold enough texture for local features at about the
# drone frame's ground resolution; 512 px over the default 150 m is ~0.3 m/px. The embedder resizes
# the same crop to its input, so one stored image serves both.
MIN_CROP_PX = 512
MAX_TILES = 20_000_000
# Least share of a tile that must hold imagery. Real orthomosaics have ragged nodata borders: on a
# 0.9 km campus mosaic (150 m tiles, stride 75 m) 0.98 kept 55 tiles covering 81 % of the imagery,
# 0.75 kept 78 (98.7 %), 0.6 kept 83 (99.6 %), 0.5 kept 91 (99.8 %).
DEFAULT_MIN_VALID = 0.6


class TilingConfig(BaseModel):
    """Footprint ``tile_m`` and grid step ``stride_m`` at scale 1; scale s multiplies both."""

    model_config = ConfigDict(extra="forbid")

    tile_m: float = Field(gt=0, le=100_000)
    stride_m: float = Field(gt=0, le=100_000)
    scales: tuple[float, ...] = (1.0,)
    crop_px: int = Field(MIN_CROP_PX, ge=16, le=4096)
    min_valid: float = Field(DEFAULT_MIN_VALID, gt=0, le=1)

    @field_validator("scales")
    @classmethod
    def _positive_scales(cls, scales: tuple[float, ...]) -> tuple[float, ...]:
        if not scales or any(not (0 < s <= 100) for s in scales):
            raise ValueError("scales must be positive numbers up to 100")
        return tuple(sorted(set(scales)))


class Georef:
    """Conversions between the bundle's xy frame, lat/lon and a layer's CRS (pyproj, cached)."""

    def __init__(self, frame: LocalFrame | None):
        self.frame = frame
        self._to_crs: dict[str, object] = {}
        self._from_crs: dict[str, object] = {}

    def _transformers(self, crs: str):
        if crs not in self._to_crs:
            from pyproj import Transformer

            self._to_crs[crs] = Transformer.from_crs(WGS84, crs, always_xy=True)
            self._from_crs[crs] = Transformer.from_crs(crs, WGS84, always_xy=True)
        return self._to_crs[crs], self._from_crs[crs]

    def xy_to_latlon(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        lat, lon, _ = self.frame.to_geodetic(np.asarray(x, float), np.asarray(y, float))
        return lat, lon

    def xy_to_crs(self, crs: str, x, y) -> tuple[np.ndarray, np.ndarray]:
        if self.frame is None:
            return np.asarray(x, float), np.asarray(y, float)
        lat, lon = self.xy_to_latlon(x, y)
        return self._transformers(crs)[0].transform(lon, lat)

    def crs_to_xy(self, crs: str, cx, cy) -> tuple[np.ndarray, np.ndarray]:
        if self.frame is None:
            return np.asarray(cx, float), np.asarray(cy, float)
        lon, lat = self._transformers(crs)[1].transform(np.asarray(cx, float), np.asarray(cy, float))
        enu = self.frame.to_enu(lat, lon)
        return enu[..., 0], enu[..., 1]


def make_georef(layers: list[Layer]) -> Georef:
    """ENU about the centre of the imagery's lat/lon extent, or no frame for ``local`` rasters."""
    if layers[0].crs == LOCAL:
        return Georef(None)
    probe = Georef(LocalFrame(0.0, 0.0))
    lats, lons = [], []
    for layer in layers:
        cx, cy = layer.outline_crs()
        lon, lat = probe._transformers(layer.crs)[1].transform(cx, cy)
        lats.append(np.asarray(lat)), lons.append(np.asarray(lon))
    lat, lon = np.concatenate(lats), np.concatenate(lons)
    if not np.all(np.isfinite(lat)) or not np.all(np.isfinite(lon)):
        raise GeolinkError(f"{layers[0].name}: its corners do not map to WGS84 (check the CRS)")
    return Georef(LocalFrame(float((lat.min() + lat.max()) / 2), float((lon.min() + lon.max()) / 2)))


def layer_boxes(layers: list[Layer], georef: Georef) -> np.ndarray:
    """(L, 4) xmin, ymin, xmax, ymax of each layer in the xy frame."""
    boxes = []
    for layer in layers:
        x, y = georef.crs_to_xy(layer.crs, *layer.outline_crs())
        boxes.append((np.min(x), np.min(y), np.max(x), np.max(y)))
    return np.asarray(boxes, dtype=np.float64)


def plan_tiles(boxes: np.ndarray, conf: TilingConfig) -> np.ndarray:
    """(M, 4) rows ``x, y, footprint_m, scale``: grid centres per scale, rows north to south, whose
    footprint overlaps at least one layer (pixel coverage is checked when rendering)."""
    xmin, ymin = boxes[:, 0].min(), boxes[:, 1].min()
    xmax, ymax = boxes[:, 2].max(), boxes[:, 3].max()
    plans = []
    for scale in conf.scales:
        size, step = conf.tile_m * scale, conf.stride_m * scale
        if size > xmax - xmin or size > ymax - ymin:
            continue
        count = (math.floor((xmax - xmin - size) / step) + 1) * (math.floor((ymax - ymin - size) / step) + 1)
        if count > MAX_TILES:
            raise GeolinkError(
                f"{count} tiles at scale {scale}: raise --stride-m or --tile-m (limit {MAX_TILES})"
            )
        xs = xmin + size / 2 + step * np.arange(math.floor((xmax - xmin - size) / step) + 1)
        ys = ymax - size / 2 - step * np.arange(math.floor((ymax - ymin - size) / step) + 1)
        gx, gy = np.meshgrid(xs, ys)
        centres = np.stack([gx.ravel(), gy.ravel()], axis=1)
        half = size / 2
        keep = np.zeros(len(centres), bool)
        for box in boxes:  # loop over layers (few), vectorised over tiles
            keep |= (
                (centres[:, 0] + half > box[0])
                & (centres[:, 0] - half < box[2])
                & (centres[:, 1] + half > box[1])
                & (centres[:, 1] - half < box[3])
            )
        centres = centres[keep]
        plans.append(np.column_stack([centres, np.full(len(centres), size), np.full(len(centres), scale)]))
    return np.concatenate(plans) if plans else np.zeros((0, 4))


def pixel_to_xy(x: float, y: float, size: float, crop_px: int) -> np.ndarray:
    """Affine from OpenCV crop pixels (integer = pixel centre) to xy for a north-up crop."""
    gsd = size / crop_px
    return np.array([[gsd, 0.0, x - size / 2 + gsd / 2], [0.0, -gsd, y + size / 2 - gsd / 2]])


@dataclass
class RenderedTile:
    image: np.ndarray
    valid_fraction: float
    meta: dict


def _warp_from_layer(layer: Layer, georef: Georef, affine: np.ndarray, size: tuple[int, int]):
    """Warp a layer into a (width, height) north-up grid: (image, valid mask, window) or None when
    it does not overlap."""
    width, height = size
    u, v = (
        a.ravel() for a in np.meshgrid(np.linspace(-0.5, width - 0.5, 3), np.linspace(-0.5, height - 0.5, 3))
    )
    x, y = affine @ np.stack([u, v, np.ones_like(u)])
    col, row = layer.crs_to_pixel(*georef.xy_to_crs(layer.crs, x, y))
    c0, r0 = max(math.floor(col.min()) - 1, 0), max(math.floor(row.min()) - 1, 0)
    c1, r1 = min(math.ceil(col.max()) + 1, layer.width), min(math.ceil(row.max()) + 1, layer.height)
    if c1 <= c0 or r1 <= r0:
        return None
    # Read at about the output's resolution: never more pixels than it needs (overviews, speed).
    ratio = max((col.max() - col.min()) / width, (row.max() - row.min()) / height, 1.0)
    out_w, out_h = max(1, round((c1 - c0) / ratio)), max(1, round((r1 - r0) / ratio))
    image, valid = layer.read(c0, r0, c1 - c0, r1 - r0, out_w, out_h)
    # Window pixel corners → output pixel centres (OpenCV convention), then a least-squares affine.
    src_u = (col - c0) * out_w / (c1 - c0) - 0.5
    src_v = (row - r0) * out_h / (r1 - r0) - 0.5
    design = np.stack([u, v, np.ones_like(u)], axis=1)
    to_src = np.linalg.lstsq(design, np.stack([src_u, src_v], axis=1), rcond=None)[0].T
    flags = cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(
        image, to_src, size, flags=flags | cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    mask = cv2.warpAffine(
        valid.astype(np.uint8), to_src, size, flags=flags | cv2.INTER_NEAREST, borderValue=0
    )
    return warped, mask > 0, (c0, r0, c1 - c0, r1 - r0)


@dataclass
class RenderedRegion:
    image: np.ndarray
    valid: np.ndarray
    source: Layer | None  # the layer that filled most pixels
    window: tuple[int, int, int, int]  # that layer's pixels read: col, row, width, height


def render_region(
    layers: list[Layer], boxes: np.ndarray, georef: Georef, affine: np.ndarray, size: tuple[int, int]
) -> RenderedRegion:
    """Composite the layers overlapping a north-up (width, height) grid whose pixel centres map to xy
    through ``affine`` (earlier layers win where they overlap)."""
    width, height = size
    cx, cy = affine @ np.array([[-0.5, width - 0.5], [-0.5, height - 0.5], [1.0, 1.0]])
    overlapping = np.flatnonzero(
        (boxes[:, 0] < cx.max())
        & (boxes[:, 2] > cx.min())
        & (boxes[:, 1] < cy.max())
        & (boxes[:, 3] > cy.min())
    )
    image = np.zeros((height, width, 3), np.uint8)
    filled = np.zeros((height, width), bool)
    best, best_count, best_window = None, -1, (0, 0, 0, 0)
    for index in overlapping:
        warped = _warp_from_layer(layers[index], georef, affine, size)
        if warped is None:
            continue
        part, valid, window = warped
        new = valid & ~filled
        image[new] = part[new]
        filled |= new
        if new.sum() > best_count:
            best, best_count, best_window = layers[index], int(new.sum()), window
        if filled.all():
            break
    return RenderedRegion(image=image, valid=filled, source=best, window=best_window)


def render_tile(
    layers: list[Layer], boxes: np.ndarray, georef: Georef, planned: np.ndarray, crop_px: int
) -> RenderedTile:
    """Render one planned tile as a ``crop_px`` square crop and describe it."""
    x, y, size, scale = (float(v) for v in planned)
    affine = pixel_to_xy(x, y, size, crop_px)
    region = render_region(layers, boxes, georef, affine, (crop_px, crop_px))
    best = region.source
    corner_u = np.array([-0.5, crop_px - 0.5, crop_px - 0.5, -0.5])
    corner_v = np.array([-0.5, -0.5, crop_px - 0.5, crop_px - 0.5])
    cx, cy = affine @ np.stack([corner_u, corner_v, np.ones(4)])
    meta = {
        "center_xy": [x, y],
        "gsd_m": size / crop_px,
        "scale": scale,
        "tile_m": size,
        "pixel_to_xy": affine.tolist(),
        "source": best.name if best is not None else "",
        "window": list(region.window),
        "center_lat": None,
        "center_lon": None,
        "corners_latlon": None,
        "corners_crs": np.stack([cx, cy], axis=1).tolist(),
    }
    if georef.frame is not None:
        lat, lon = georef.xy_to_latlon(np.append(cx, x), np.append(cy, y))
        meta.update(center_lat=float(lat[4]), center_lon=float(lon[4]))
        meta["corners_latlon"] = np.stack([lat[:4], lon[:4]], axis=1).tolist()
        if best is not None:
            meta["corners_crs"] = np.stack(georef.xy_to_crs(best.crs, cx, cy), axis=1).tolist()
    return RenderedTile(image=region.image, valid_fraction=float(region.valid.mean()), meta=meta)


def native_gsd(layers: list[Layer], georef: Georef) -> float:
    """The finest ground resolution among the layers, in metres of the xy frame per pixel (measured
    by mapping one pixel step at each layer's centre)."""
    finest = math.inf
    for layer in layers:
        col = np.array([layer.width / 2, layer.width / 2 + 1, layer.width / 2])
        row = np.array([layer.height / 2, layer.height / 2, layer.height / 2 + 1])
        x, y = georef.crs_to_xy(layer.crs, *layer.pixel_to_crs(col, row))
        area = abs((x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0]))
        finest = min(finest, math.sqrt(area))
    if not np.isfinite(finest) or finest <= 0:
        raise GeolinkError(f"{layers[0].name}: its pixels have no ground size (check the CRS)")
    return float(finest)
