"""Where an area lies on Earth: a north-up grid in the local UTM zone, and GeoTIFF I/O.

Inside the generator, positions are *local* metres: ``x`` east from the grid's west edge and
``y`` south from its north edge, so that pixel (col, row) has its centre at ``((col + 0.5) gsd,
(row + 0.5) gsd)``. UTM coordinates are ~10^6 m, too large for float32 ray marching.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geolink_edge.errors import GeolinkError
from geolink_edge.geo import utm_epsg


@dataclass(frozen=True)
class AreaGrid:
    epsg: int
    west: float  # easting of the left edge of column 0
    north: float  # northing of the top edge of row 0
    gsd: float  # metres per pixel
    width: int
    height: int

    @classmethod
    def centred_on(cls, lat: float, lon: float, gsd: float, width: int, height: int) -> AreaGrid:
        epsg = utm_epsg(lat, lon)
        east, north = _transformer(4326, epsg).transform(lon, lat)
        # Whole-metre edges keep the GeoTIFF transform exact in decimal.
        return cls(
            epsg,
            float(round(east - width * gsd / 2)),
            float(round(north + height * gsd / 2)),
            gsd,
            width,
            height,
        )

    @classmethod
    def from_transform(cls, epsg: int, transform, width: int, height: int) -> AreaGrid:
        if abs(transform.b) > 1e-12 or abs(transform.d) > 1e-12 or abs(transform.a + transform.e) > 1e-9:
            raise GeolinkError(f"grid is not north-up with square pixels: {transform}")
        return cls(epsg, float(transform.c), float(transform.f), float(transform.a), width, height)

    @property
    def size_m(self) -> tuple[float, float]:
        return self.width * self.gsd, self.height * self.gsd

    def transform(self):
        from rasterio.transform import Affine

        return Affine(self.gsd, 0.0, self.west, 0.0, -self.gsd, self.north)

    def local_to_crs(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        return self.west + np.asarray(x, np.float64), self.north - np.asarray(y, np.float64)

    def crs_to_local(self, east, north) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(east, np.float64) - self.west, self.north - np.asarray(north, np.float64)

    def to_latlon(self, east, north) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = _transformer(self.epsg, 4326).transform(east, north)
        return np.asarray(lat), np.asarray(lon)

    def from_latlon(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        east, north = _transformer(4326, self.epsg).transform(lon, lat)
        return np.asarray(east), np.asarray(north)


def _transformer(src: int, dst: int):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def write_geotiff(path: Path, grid: AreaGrid, array: np.ndarray) -> Path:
    """RGB uint8 (H, W, 3) or one float32 band (H, W) as a tiled, deflated GeoTIFF on ``grid``."""
    import rasterio

    bands = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": bands.shape[0],
        "dtype": bands.dtype.name,
        "crs": f"EPSG:{grid.epsg}",
        "transform": grid.transform(),
        "compress": "deflate",
        "zlevel": 1,
        "predictor": 2 if bands.dtype == np.uint8 else 3,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if bands.shape[0] == 3:
        profile["photometric"] = "RGB"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
    return path


def read_geotiff(path: Path) -> tuple[np.ndarray, AreaGrid]:
    """(array, grid) of a GeoTIFF written by :func:`write_geotiff`; a bad file is one GeolinkError line."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            data = src.read()
            epsg = src.crs.to_epsg() if src.crs else None
            transform, width, height = src.transform, src.width, src.height
    except rasterio.errors.RasterioError as exc:
        raise GeolinkError(f"cannot read GeoTIFF {path} ({exc})") from None
    if epsg is None:
        raise GeolinkError(f"{path} has no EPSG coordinate reference system")
    grid = AreaGrid.from_transform(epsg, transform, width, height)
    return (data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)), grid
