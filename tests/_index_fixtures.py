"""Small georeferenced maps for the index tests: a textured GeoTIFF, a corner CSV, an XYZ pyramid."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# A point in Zurich; UTM zone 32N.
LAT0, LON0 = 47.3769, 8.5417
UTM = "EPSG:32632"


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """BGR uint8 with structure at several scales (blobs, roads, roofs), distinct everywhere."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((64, 0.5), (16, 0.3), (4, 0.2)):
        coarse = rng.random((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        image += weight * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image = np.clip(image * 255, 0, 255).astype(np.uint8)
    for _ in range(height * width // 4000):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            cv2.rectangle(
                image, (x, y), (x + int(rng.integers(4, 30)), y + int(rng.integers(4, 30))), color, -1
            )
        else:
            cv2.line(image, (x, y), (int(rng.integers(0, width)), int(rng.integers(0, height))), color, 2)
    return image


def utm_origin() -> tuple[float, float]:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(LON0, LAT0)


def write_geotiff(
    path: Path,
    image_bgr: np.ndarray,
    gsd: float = 1.0,
    crs: str | None = UTM,
    nodata: int | None = None,
    origin: tuple[float, float] | None = None,
) -> Path:
    """An RGB GeoTIFF whose top-left corner is at ``origin`` (default: the UTM point of LAT0, LON0)."""
    import rasterio
    from rasterio.transform import from_origin

    east, north = origin or utm_origin()
    height, width = image_bgr.shape[:2]
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "transform": from_origin(east, north, gsd, gsd),
        "nodata": nodata,
    }
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(image_bgr[..., ::-1].transpose(2, 0, 1))
    return path


def write_corner_csv(
    folder: Path,
    image_bgr: np.ndarray,
    lat_top: float,
    lon_left: float,
    deg_per_px: tuple[float, float],
    grid: int = 2,
) -> Path:
    """Cut ``image_bgr`` into grid×grid north-up images with lat/lon corners and a wildnav CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = image_bgr.shape[:2]
    dlat, dlon = deg_per_px
    lines = ["Filename,Top_left_lat,Top_left_lon,Bottom_right_lat,Bottom_right_long"]
    for r in range(grid):
        for c in range(grid):
            r0, r1 = r * height // grid, (r + 1) * height // grid
            c0, c1 = c * width // grid, (c + 1) * width // grid
            name = f"img/{r}_{c}.png"
            (folder / "img").mkdir(exist_ok=True)
            cv2.imwrite(str(folder / name), image_bgr[r0:r1, c0:c1])
            lines.append(
                f"{name},{lat_top - r0 * dlat},{lon_left + c0 * dlon},"
                f"{lat_top - r1 * dlat},{lon_left + c1 * dlon}"
            )
    path = folder / "map.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_xyz(
    folder: Path, zoom: int, lat: float, lon: float, count: int = 3, seed: int = 0
) -> tuple[Path, np.ndarray]:
    """count×count 256 px tiles starting at the tile holding (lat, lon); returns the folder and mosaic."""
    import mercantile

    first = mercantile.tile(lon, lat, zoom)
    mosaic = texture(256 * count, 256 * count, seed)
    for dy in range(count):
        for dx in range(count):
            tile_dir = folder / str(zoom) / str(first.x + dx)
            tile_dir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(
                str(tile_dir / f"{first.y + dy}.png"),
                mosaic[dy * 256 : (dy + 1) * 256, dx * 256 : (dx + 1) * 256],
            )
    return folder, mosaic
