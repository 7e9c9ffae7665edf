"""Reference imagery as georeferenced pixel grids ("layers") the tiler can read by windows.

Three kinds of source, each opened into one or more layers:

- a GeoTIFF (rasterio, any CRS, 3+ bands or one band with a colour palette, read by windows and
  through overviews when a tile needs fewer pixels, so a country-sized raster is never loaded whole;
  nodata from an alpha band, the nodata tag (a palette index for palette rasters), internal masks,
  or a colour value declared by the user, since real orthomosaics often carry an untagged black border);
- a corner CSV (``Filename, Top_left_lat, Top_left_lon, Bottom_right_lat, Bottom_right_long``,
  the format of the wildnav drone localizer): one north-up image per row, paths relative to the CSV;
- an XYZ Web-Mercator pyramid ``{z}/{x}/{y}.png|jpg`` (the deepest zoom level present is used).

Pixel coordinates follow rasterio: (col, row) with (0, 0) the top-left corner of the first pixel.

A raster that fails in the middle of a read (a truncated file whose header is intact) stops the
build with one line naming the file and the window. A tile image of an XYZ pyramid or a corner CSV
that cannot be decoded is left out, as a map server's missing tile is, and counted in a warning
(:func:`unreadable_tiles`), as long as the rest of the map is usable.
"""

from __future__ import annotations

import csv
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from geolink_edge.errors import GeolinkError, first_line, require

LOCAL = "local"
WGS84 = "EPSG:4326"
WEB_MERCATOR = "EPSG:3857"
CSV_COLUMNS = ("filename", "top_left_lat", "top_left_lon", "bottom_right_lat", "bottom_right_long")
_RASTERIO_HINT = "reading GeoTIFFs needs rasterio: pip install rasterio (or 'geolink-edge[train]')"


def normalise_crs(text: str) -> str:
    """``EPSG:xxxx`` (any case) or ``local``; anything else is refused in one line."""
    value = text.strip()
    if value.lower() == LOCAL:
        return LOCAL
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        epsg = CRS.from_user_input(value).to_epsg()
    except CRSError:
        epsg = None
    if epsg is None:
        raise GeolinkError(f"--crs {text!r}: expected EPSG:<code> or 'local'")
    return f"EPSG:{epsg}"


class Layer:
    """A pixel grid with an affine or analytic map between its pixels and a CRS."""

    name: str
    crs: str
    width: int
    height: int

    def pixel_to_crs(self, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def crs_to_pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def read(self, col: int, row: int, width: int, height: int, out_w: int, out_h: int):
        """An in-bounds window resampled to (out_h, out_w): (BGR uint8, valid bool mask)."""
        raise NotImplementedError

    def unreadable(self) -> set[Path]:
        """Image files of this layer that could not be decoded and were left out."""
        return set()

    def outline_crs(self, per_side: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Points along the grid's border in its CRS (dense enough for curved reprojections)."""
        t = np.linspace(0.0, 1.0, per_side)
        cols = np.concatenate(
            [t * self.width, np.full_like(t, self.width), (1 - t) * self.width, np.zeros_like(t)]
        )
        rows = np.concatenate(
            [np.zeros_like(t), t * self.height, np.full_like(t, self.height), (1 - t) * self.height]
        )
        return self.pixel_to_crs(cols, rows)


class RasterLayer(Layer):
    """A GeoTIFF read by windows (rasterio picks overviews when the output is smaller).

    ``crs`` overrides the raster's own label (which is sometimes wrong); ``nodata`` marks pixels whose
    every colour band (after palette expansion) equals that value as holding no imagery.
    """

    def __init__(self, path: Path, crs: str | None = None, nodata: float | None = None):
        rasterio = require("rasterio", _RASTERIO_HINT)
        from rasterio.enums import MaskFlags

        self.path = Path(path)
        if not self.path.is_file():
            raise GeolinkError(f"{self.path}: raster not found")
        self._rasterio = rasterio
        self._handles = threading.local()
        try:
            self._handles.ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as exc:
            raise GeolinkError(f"{self.path}: not a readable raster ({first_line(exc, 120)})") from None
        ds = self.ds
        self.name = self.path.name
        self.palette = _palette(ds)
        if ds.count < 3 and self.palette is None:
            raise GeolinkError(
                f"{self.path}: {ds.count} band(s), no palette; an RGB raster (3+ bands) is needed"
            )
        if ds.transform.is_identity and not ds.gcps[0]:
            raise GeolinkError(f"{self.path}: raster has no geotransform (not georeferenced)")
        if crs is not None:
            self.crs = crs
        elif ds.crs is not None:
            self.crs = f"EPSG:{ds.crs.to_epsg()}" if ds.crs.to_epsg() else ds.crs.to_wkt()
        else:
            raise GeolinkError(
                f"{self.path}: raster has no CRS; give one with --crs EPSG:<code> or --crs local"
            )
        self.width, self.height = ds.width, ds.height
        self.transform = ds.transform
        self.inverse = ~ds.transform
        _check_plausible_bounds(self)
        self.bands = [1] if self.palette is not None else [1, 2, 3]
        self.nodata = nodata
        self.all_valid = all(flags == [MaskFlags.all_valid] for flags in ds.mask_flag_enums)
        self.stretch = None if ds.dtypes[0] == "uint8" or self.palette is not None else self._stretch()

    @property
    def ds(self):
        """This thread's dataset handle (GDAL handles must not be shared between threads)."""
        if not hasattr(self._handles, "ds"):
            self._handles.ds = self._rasterio.open(self.path)
        return self._handles.ds

    def _stretch(self) -> tuple[float, float]:
        """2–98 % range of a decimated read: maps 16-bit or float imagery to 8 bits once per raster."""
        scale = max(self.width, self.height) / 512.0
        shape = (3, max(1, int(self.height / scale)), max(1, int(self.width / scale)))
        try:
            sample = self.ds.read([1, 2, 3], out_shape=shape, masked=True).astype(np.float64)
        except self._rasterio.errors.RasterioError as exc:
            raise GeolinkError(
                f"{self.path}: read failed (a truncated or damaged file? {first_line(exc, 100)})"
            ) from None
        values = sample.compressed() if np.ma.isMaskedArray(sample) else sample.ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise GeolinkError(f"{self.path}: no valid pixels")
        lo, hi = np.percentile(values, [2.0, 98.0])
        return float(lo), float(max(hi, lo + 1e-6))

    def pixel_to_crs(self, col, row):
        t = self.transform
        col, row = np.asarray(col, float), np.asarray(row, float)
        return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f

    def crs_to_pixel(self, x, y):
        t = self.inverse
        x, y = np.asarray(x, float), np.asarray(y, float)
        return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f

    def _to_bgr(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Bands as read → (BGR uint8, validity from ``nodata``, or None when it is not declared)."""
        valid = None
        if self.palette is not None:
            bgr = self.palette[data[0]][..., ::-1]
        else:
            if self.nodata is not None:
                valid = ~np.all(data == self.nodata, axis=0)
            if self.stretch is not None:
                lo, hi = self.stretch
                data = np.clip((np.nan_to_num(data.astype(np.float32)) - lo) * (255.0 / (hi - lo)), 0, 255)
            bgr = data[::-1].transpose(1, 2, 0).astype(np.uint8)
        if self.nodata is not None and self.palette is not None:
            valid = ~np.all(bgr == self.nodata, axis=2)
        return np.ascontiguousarray(bgr), valid

    def read(self, col, row, width, height, out_w, out_h):
        try:
            return self._read(col, row, width, height, out_w, out_h)
        except self._rasterio.errors.RasterioError as exc:
            raise GeolinkError(
                f"{self.path}: read failed in the window at column {col}, row {row}, {width}×{height} px "
                f"(a truncated or damaged file? {first_line(exc, 100)})"
            ) from None

    def _read(self, col, row, width, height, out_w, out_h):
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        window = Window(col, row, width, height)
        if self.palette is None and self.nodata is None:
            data = self.ds.read(
                self.bands, window=window, out_shape=(3, out_h, out_w), resampling=Resampling.average
            )
            bgr, _ = self._to_bgr(data)
            if self.all_valid:
                return bgr, np.ones((out_h, out_w), bool)
            mask = self.ds.dataset_mask(
                window=window, out_shape=(out_h, out_w), resampling=Resampling.nearest
            )
            return bgr, mask > 0
        # Palette indices and declared nodata values cannot be averaged: read them by nearest
        # neighbour at up to twice the output's size, then average the colours over valid pixels.
        read_w, read_h = min(width, 2 * out_w), min(height, 2 * out_h)
        data = self.ds.read(
            self.bands,
            window=window,
            out_shape=(len(self.bands), read_h, read_w),
            resampling=Resampling.nearest,
        )
        bgr, valid = self._to_bgr(data)
        if not self.all_valid:
            mask = self.ds.dataset_mask(
                window=window, out_shape=(read_h, read_w), resampling=Resampling.nearest
            )
            valid = valid & (mask > 0) if valid is not None else mask > 0
        return _average_valid(bgr, valid, out_w, out_h)


def _palette(ds) -> np.ndarray | None:
    """(256, 3) RGB lookup table of a one-band palette raster, else None."""
    from rasterio.enums import ColorInterp

    if ds.count != 1 or ds.colorinterp[0] != ColorInterp.palette:
        return None
    if ds.dtypes[0] != "uint8":
        raise GeolinkError(f"{ds.name}: a {ds.dtypes[0]} palette raster; only 8-bit palettes are read")
    table = np.zeros((256, 3), np.uint8)
    for index, colour in ds.colormap(1).items():
        table[index] = colour[:3]
    return table


def _check_plausible_bounds(layer: RasterLayer) -> None:
    """A raster labelled with a geographic CRS must lie within ±180° / ±90°: metres mislabelled as
    degrees would otherwise plan billions of tiles."""
    if layer.crs == LOCAL:
        return
    from pyproj import CRS

    if not CRS.from_user_input(layer.crs).is_geographic:
        return
    lon, lat = layer.pixel_to_crs(np.array([0, layer.width]), np.array([0, layer.height]))
    if np.abs(lon).max() > 360 or np.abs(lat).max() > 90:
        raise GeolinkError(
            f"{layer.path}: bounds x {lon.min():.6g}..{lon.max():.6g}, y {lat.min():.6g}..{lat.max():.6g} "
            f"are impossible in its geographic CRS {layer.crs}; give the right one with "
            "--crs EPSG:<code> (or --crs local for plain metres)"
        )


def _average_valid(bgr: np.ndarray, valid: np.ndarray | None, out_w: int, out_h: int):
    """Resize to (out_h, out_w) averaging only valid pixels; a pixel is valid when half of it was."""
    if valid is None:
        return _resize(bgr, out_w, out_h), np.ones((out_h, out_w), bool)
    weight = valid.astype(np.float32)
    colour = _resize_float(bgr.astype(np.float32) * weight[..., None], out_w, out_h)
    share = _resize_float(weight, out_w, out_h)
    image = np.clip(colour / np.maximum(share, 1e-6)[..., None] + 0.5, 0, 255).astype(np.uint8)
    keep = share >= 0.5
    image[~keep] = 0
    return image, keep


def _resize_float(image: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    if image.shape[1] == out_w and image.shape[0] == out_h:
        return image
    return cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA)


class ImageLayer(Layer):
    """One north-up image whose corners are given in lat/lon (linear in lat and lon)."""

    def __init__(self, path: Path, top_left: tuple[float, float], bottom_right: tuple[float, float], cache):
        self.path = path
        self.name = path.name
        self.crs = WGS84
        self.lat0, self.lon0 = top_left
        self.lat1, self.lon1 = bottom_right
        self._cache = cache

    def image(self) -> np.ndarray:
        return self._cache.get(self.path)

    @property
    def width(self) -> int:
        return self.image().shape[1]

    @property
    def height(self) -> int:
        return self.image().shape[0]

    def pixel_to_crs(self, col, row):
        h, w = self.image().shape[:2]
        lon = self.lon0 + np.asarray(col, float) / w * (self.lon1 - self.lon0)
        lat = self.lat0 - np.asarray(row, float) / h * (self.lat0 - self.lat1)
        return lon, lat

    def crs_to_pixel(self, x, y):
        h, w = self.image().shape[:2]
        col = (np.asarray(x, float) - self.lon0) / (self.lon1 - self.lon0) * w
        row = (self.lat0 - np.asarray(y, float)) / (self.lat0 - self.lat1) * h
        return col, row

    def outline_crs(self, per_side: int = 16):
        lon = np.array([self.lon0, self.lon1, self.lon1, self.lon0])
        lat = np.array([self.lat0, self.lat0, self.lat1, self.lat1])
        return lon, lat

    def read(self, col, row, width, height, out_w, out_h):
        patch = self.image()[row : row + height, col : col + width]
        return _resize(patch, out_w, out_h), np.ones((out_h, out_w), bool)

    def unreadable(self) -> set[Path]:
        return self._cache.unreadable


class ImageCache:
    """The last few decoded images (tiles are planned in raster order, so neighbours share images).

    Shared by the tile-rendering threads: the dictionary is guarded by a lock, decoding is not.
    """

    def __init__(self, size: int = 8):
        self.size = size
        self.images: OrderedDict[Path, np.ndarray | None] = OrderedDict()
        self.lock = threading.Lock()
        self.unreadable: set[Path] = set()  # files present that did not decode

    def get(self, path: Path, required: bool = True) -> np.ndarray | None:
        with self.lock:
            cached = path in self.images
            image = self.images.get(path)
            if cached:
                self.images.move_to_end(path)
        if not cached:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
            with self.lock:
                if image is None and path.is_file():
                    self.unreadable.add(path)
                self.images[path] = image
                while len(self.images) > self.size:
                    self.images.popitem(last=False)
        if image is None and required:
            raise GeolinkError(f"{path}: missing or unreadable tile image")
        return image


def _resize(image: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    if image.shape[1] == out_w and image.shape[0] == out_h:
        return np.ascontiguousarray(image)
    return cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA)


def read_corner_csv(path: Path, cache: ImageCache | None = None) -> list[ImageLayer]:
    """Layers of a corner CSV; a malformed row or a missing image is named by its line number."""
    path = Path(path)
    if not path.is_file():
        raise GeolinkError(f"{path}: tile CSV not found")
    cache = cache or ImageCache()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise GeolinkError(f"{path}: empty CSV")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise GeolinkError(
            f"{path}: header lacks column(s) {', '.join(missing)} (expected {', '.join(CSV_COLUMNS)})"
        )
    columns = [header.index(c) for c in CSV_COLUMNS]
    layers = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}: row {line}"
        if len(row) < len(header):
            raise GeolinkError(f"{where}: {len(row)} fields, expected {len(header)}")
        name = row[columns[0]].strip()
        try:
            lat0, lon0, lat1, lon1 = (float(row[c]) for c in columns[1:])
        except ValueError:
            raise GeolinkError(f"{where}: corner values must be numbers, got {row}") from None
        if not (-90 <= lat1 < lat0 <= 90 and -180 <= lon0 < lon1 <= 180):
            raise GeolinkError(f"{where}: corners must satisfy top-left lat > bottom-right lat and lon < lon")
        image_path = (path.parent / name).resolve()
        if not name or not image_path.is_file():
            raise GeolinkError(f"{where}: tile image {name!r} not found")
        layers.append(ImageLayer(image_path, (lat0, lon0), (lat1, lon1), cache))
    if not layers:
        raise GeolinkError(f"{path}: no tile rows")
    usable = [layer for layer in layers if cache.get(layer.path, required=False) is not None]
    if not usable:
        raise GeolinkError(f"{path}: none of its {len(layers)} tile images decode")
    return usable


class XyzLayer(Layer):
    """The deepest zoom level of an XYZ pyramid, as one virtual raster over the tiles present."""

    def __init__(self, root: Path, cache: ImageCache | None = None):
        mercantile = require("mercantile", "pip install mercantile")
        self.root = Path(root)
        if not self.root.is_dir():
            raise GeolinkError(f"{self.root}: XYZ folder not found")
        zooms = sorted(int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())
        if not zooms:
            raise GeolinkError(f"{self.root}: no zoom folders ({{z}}/{{x}}/{{y}}.png|jpg expected)")
        self.zoom = zooms[-1]
        self.tiles: dict[tuple[int, int], Path] = {}
        for x_dir in (self.root / str(self.zoom)).iterdir():
            if not x_dir.name.isdigit():
                continue
            for image in x_dir.iterdir():
                if image.suffix.lower() in (".png", ".jpg", ".jpeg") and image.stem.isdigit():
                    self.tiles[(int(x_dir.name), int(image.stem))] = image
        if not self.tiles:
            raise GeolinkError(f"{self.root}/{self.zoom}: no tile images")
        self.cache = cache or ImageCache(64)
        xs, ys = [x for x, _ in self.tiles], [y for _, y in self.tiles]
        self.x0, self.y0 = min(xs), min(ys)
        decoded = (self.cache.get(tile, required=False) for tile in self.tiles.values())
        first = next((image for image in decoded if image is not None), None)
        if first is None:
            raise GeolinkError(f"{self.root}/{self.zoom}: none of its {len(self.tiles)} tile images decode")
        self.tile_px = first.shape[0]
        self.width = (max(xs) - self.x0 + 1) * self.tile_px
        self.height = (max(ys) - self.y0 + 1) * self.tile_px
        corner = mercantile.xy_bounds(mercantile.Tile(self.x0, self.y0, self.zoom))
        self.left, self.top = corner.left, corner.top
        self.metres_per_px = (corner.right - corner.left) / self.tile_px
        self.name = f"{self.root.name}/z{self.zoom}"
        self.crs = WEB_MERCATOR

    def pixel_to_crs(self, col, row):
        return self.left + np.asarray(col, float) * self.metres_per_px, self.top - np.asarray(
            row, float
        ) * self.metres_per_px

    def crs_to_pixel(self, x, y):
        return (np.asarray(x, float) - self.left) / self.metres_per_px, (
            self.top - np.asarray(y, float)
        ) / self.metres_per_px

    def read(self, col, row, width, height, out_w, out_h):
        size = self.tile_px
        canvas = np.zeros((height, width, 3), np.uint8)
        valid = np.zeros((height, width), bool)
        for ty in range(row // size, (row + height - 1) // size + 1):
            for tx in range(col // size, (col + width - 1) // size + 1):
                path = self.tiles.get((tx + self.x0, ty + self.y0))
                image = self.cache.get(path, required=False) if path else None
                if image is None:
                    continue
                image = _resize(image, size, size)
                c0, r0 = max(col, tx * size), max(row, ty * size)
                c1, r1 = min(col + width, (tx + 1) * size), min(row + height, (ty + 1) * size)
                canvas[r0 - row : r1 - row, c0 - col : c1 - col] = image[
                    r0 - ty * size : r1 - ty * size, c0 - tx * size : c1 - tx * size
                ]
                valid[r0 - row : r1 - row, c0 - col : c1 - col] = True
        mask = cv2.resize(valid.astype(np.uint8), (out_w, out_h), interpolation=cv2.INTER_NEAREST) > 0
        return _resize(canvas, out_w, out_h), mask

    def unreadable(self) -> set[Path]:
        return self.cache.unreadable


def unreadable_tiles(layers: list[Layer]) -> None:
    """Warn on stderr, in one line, of the tile images the layers left out because they did not decode."""
    broken = sorted(set().union(*(layer.unreadable() for layer in layers)))
    if broken:
        print(
            f"warning: {len(broken)} tile image(s) could not be decoded and were left out "
            f"(first: {broken[0]})",
            file=sys.stderr,
        )


def open_sources(
    ortho: list[Path] | None = None,
    tiles_csv: Path | None = None,
    xyz: Path | None = None,
    crs: str | None = None,
    nodata: float | None = None,
) -> list[Layer]:
    """Every layer of the given sources, all in geodetic CRSs or all ``local``. ``crs`` and
    ``nodata`` apply to the rasters (``crs`` replaces their own label)."""
    crs = normalise_crs(crs) if crs else None
    layers: list[Layer] = [RasterLayer(Path(p), crs, nodata) for p in ortho or []]
    if tiles_csv is not None:
        layers += read_corner_csv(Path(tiles_csv))
    if xyz is not None:
        layers.append(XyzLayer(Path(xyz)))
    if not layers:
        raise GeolinkError("no reference imagery: give --ortho MAP.tif, --tiles map.csv or --xyz DIR")
    kinds = {layer.crs == LOCAL for layer in layers}
    if len(kinds) > 1:
        raise GeolinkError("cannot mix 'local' rasters with georeferenced imagery in one index")
    return layers
