"""``synth`` as a stage: plan areas and locations, render every area, write the dataset root.

Layout (docs/artifacts.md): University-1652 folders, ``gps.csv``, ``locations.csv``,
``pointclouds/``, ``areas/<area>/{ortho.tif,dsm.tif,area.json}``, ``dataset.json`` and, with
flight frames, ``flight/``. Train areas use the first half of the styles, test areas the rest
(cross-area). Every area is independent and seeded from ``(seed, area index)``, so areas render
in parallel and the output does not depend on the number of workers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from geolink_edge import atomic
from geolink_edge.data.synthetic import look, seasons, styles
from geolink_edge.data.synthetic.flight import FlightSpec, write_flight
from geolink_edge.data.synthetic.georef import AreaGrid, write_geotiff
from geolink_edge.data.synthetic.pointcloud import cloud_from_points, location_seed
from geolink_edge.data.synthetic.render import Surface, orbit_camera, render
from geolink_edge.data.synthetic.world import generate
from geolink_edge.errors import GeolinkError
from geolink_edge.registry import check_name

GENERATOR = "geolink-edge synth/1"
DISTRACTOR_RATIO = 0.35  # University-1652: 250 extra gallery ids for 701 query ids


class SynthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locations: int = Field(24, ge=2, le=20000)
    views: int = Field(8, ge=1, le=64)
    size: int = Field(256, ge=32, le=2048)
    sat_px: int | None = Field(None, ge=32, le=2048)
    tile_m: float = Field(150.0, ge=30, le=400)
    seed: int = Field(0, ge=0)
    styles: list[str] = list(styles.DEFAULT_STYLES)
    flight_frames: int = Field(0, ge=0, le=100000)
    flight_size: int = Field(320, ge=32, le=2048)
    flight_altitude: float = Field(130.0, ge=40, le=400)
    flight_pitch: float = Field(90.0, ge=45, le=90)
    altitude: tuple[float, float] = (80.0, 300.0)
    pitch: tuple[float, float] = (45.0, 90.0)
    hfov: float = Field(60.0, gt=10, lt=120)
    area_px: int = Field(2048, ge=512, le=8192)
    gsd: float = Field(0.3, gt=0.05, le=2.0)
    per_area: int = Field(12, ge=1, le=200)
    points: int = Field(2048, ge=1024, le=65536)
    workers: int = Field(min(2, os.cpu_count() or 1), ge=1, le=64)
    # The test areas' maps (ortho.tif and satellite tiles) in another season than their drone views,
    # and every ortho.tif written coarser than the world (e.g. 0.5 m/px under a 40 m flight).
    map_season: str = seasons.SAME
    map_gsd: float | None = Field(None, le=5.0)

    @field_validator("map_season")
    @classmethod
    def _known_season(cls, value: str) -> str:
        check_name("season", value, seasons.SEASON_NAMES, ValueError)
        return value

    @field_validator("map_gsd")
    @classmethod
    def _map_not_finer_than_world(cls, value: float | None, info: ValidationInfo) -> float | None:
        world = info.data.get("gsd", 0.0)
        if value is not None and value < world:
            raise ValueError(f"{value} m/px is finer than the world's {world} m/px")
        return value

    @field_validator("styles")
    @classmethod
    def _known_styles(cls, value: list[str]) -> list[str]:
        for style in value:
            check_name("style", style, styles.STYLES, ValueError)
        if len(set(value)) < 2 or len(set(value)) != len(value):
            raise ValueError("give at least two distinct styles: one to train on, one held out for testing")
        return value

    @property
    def train_styles(self) -> list[str]:
        return self.styles[: len(self.styles) // 2]

    @property
    def test_styles(self) -> list[str]:
        return self.styles[len(self.styles) // 2 :]


@dataclass
class Location:
    id: str
    role: str  # "train" | "query" | "distractor"
    x: float  # local metres in the area grid
    y: float


@dataclass
class AreaPlan:
    index: int
    name: str
    style: str
    split: str
    locations: list[Location] = field(default_factory=list)
    flight: bool = False


def plan(conf: SynthConfig) -> list[AreaPlan]:
    """Areas and the roles and positions of their locations (ids numbered in area order)."""
    n_train = (conf.locations + 1) // 2
    n_query = conf.locations - n_train
    n_distractor = max(1, round(DISTRACTOR_RATIO * n_query))
    areas: list[AreaPlan] = []
    for split, roles, names in (
        ("train", ["train"] * n_train, conf.train_styles),
        ("test", ["query"] * n_query + ["distractor"] * n_distractor, conf.test_styles),
    ):
        count = max(len(names) if split == "test" else 1, math.ceil(len(roles) / conf.per_area))
        count = min(count, len(roles))
        rng = np.random.default_rng([conf.seed, 7, len(areas)])
        roles = list(rng.permutation(roles))  # distractors spread over the test areas
        for k in range(count):
            index = len(areas)
            style = names[k % len(names)]
            area = AreaPlan(index, f"{split}-{index:02d}-{style}", style, split)
            area.locations = [
                Location("", r, *p)
                for r, p in zip(roles[k::count], _positions(conf, index, len(roles[k::count])), strict=False)
            ]
            areas.append(area)
    next_id = 1
    for area in areas:
        for loc in area.locations:
            loc.id = f"{next_id:04d}"
            next_id += 1
    if conf.flight_frames:
        next(a for a in areas if a.split == "test").flight = True
    return areas


def _positions(conf: SynthConfig, area_index: int, count: int) -> list[tuple[float, float]]:
    """Dart throwing in the area's inner square; the spacing shrinks until ``count`` fit."""
    rng = np.random.default_rng([conf.seed, 11, area_index])
    size = conf.area_px * conf.gsd
    margin = conf.tile_m / 2 + 40
    if size - 2 * margin < 20:
        raise GeolinkError(f"areas of {size:.0f} m are too small for {conf.tile_m} m tiles")
    spacing = conf.tile_m * 0.6
    while True:
        points: list[np.ndarray] = []
        for _ in range(count * 60):
            p = rng.uniform(margin, size - margin, 2)
            if all(np.hypot(*(p - q)) >= spacing for q in points):
                points.append(p)
                if len(points) == count:
                    return [(float(a), float(b)) for a, b in points]
        spacing *= 0.85


def _folders(role: str) -> tuple[list[str], list[str]]:
    """(drone folders, satellite folders) that a location of ``role`` appears in."""
    if role == "train":
        return ["train/drone"], ["train/satellite"]
    if role == "query":
        return ["test/query_drone", "test/gallery_drone"], ["test/query_satellite", "test/gallery_satellite"]
    return [], ["test/gallery_satellite"]


def render_area(conf: SynthConfig, area: AreaPlan, out: Path, on_progress=None) -> list[dict]:
    """Write one area's rasters, every location's views, tile and cloud; return locations.csv rows."""
    import cv2

    cv2.setNumThreads(1)  # areas already run in parallel
    style = styles.STYLES[area.style]
    rng = np.random.default_rng([conf.seed, 1, area.index])
    world = generate(style, conf.seed * 1000 + area.index, conf.area_px, conf.gsd)
    lat0 = style.origin[0] + 0.03 * (area.index % 5)  # areas of one style sit a few km apart
    lon0 = style.origin[1] + 0.04 * (area.index // 5)
    grid = AreaGrid.centred_on(lat0, lon0, conf.gsd, conf.area_px, conf.area_px)
    drone_sun = (float(rng.uniform(0, 360)), float(rng.uniform(35, 65)))
    sat_sun = ((drone_sun[0] + rng.choice([-1, 1]) * rng.uniform(70, 160)) % 360, float(rng.uniform(30, 70)))
    season = seasons.SAME if area.split == "train" else conf.map_season
    mapped = seasons.in_season(world, season, np.random.default_rng([conf.seed, 5, area.index]))
    sat_rgb = look.satellite_colour(mapped, sat_sun, look.Grade.random(rng))
    folder = out / "areas" / area.name
    folder.mkdir(parents=True, exist_ok=True)
    write_geotiff(folder / "ortho.tif", *_map_raster(grid, sat_rgb, conf.map_gsd))
    write_geotiff(folder / "dsm.tif", grid, world.dsm)
    lat_c, lon_c = grid.to_latlon(*grid.local_to_crs(grid.size_m[0] / 2, grid.size_m[1] / 2))
    extra = (
        {"map": {"season": season, "gsd_m": conf.map_gsd or conf.gsd}}
        if season != seasons.SAME or conf.map_gsd
        else {}
    )
    atomic.write_json(
        folder / "area.json",
        {
            "name": area.name,
            "style": area.style,
            "split": area.split,
            "epsg": grid.epsg,
            "origin": {"lat": float(lat_c), "lon": float(lon_c)},
            "gsd_m": conf.gsd,
            "size_px": conf.area_px,
            "drone_sun": {"azimuth": drone_sun[0], "elevation": drone_sun[1]},
            "satellite_sun": {"azimuth": sat_sun[0], "elevation": sat_sun[1]},
            **extra,
        },
    )
    surface = Surface(
        grid,
        world.dsm,
        look.pyramid(look.drone_colour(world, drone_sun)),
        world.facade,
        world.ground,
        world.classes,
        drone_sun,
    )
    rows = [
        _write_location(conf, out, grid, world.ground, surface, sat_rgb, area, loc, on_progress)
        for loc in area.locations
    ]
    if area.flight:
        spec = FlightSpec(
            conf.flight_frames, conf.flight_size, conf.flight_altitude, conf.flight_pitch, conf.hfov
        )
        write_flight(
            out / "flight", surface, area.name, spec, np.random.default_rng([conf.seed, 3]), on_progress
        )
    return rows


def _map_raster(grid: AreaGrid, sat_rgb: np.ndarray, map_gsd: float | None):
    """(grid, uint8 RGB) of ortho.tif: the satellite look, averaged down to ``map_gsd`` when given."""
    import cv2

    if map_gsd is not None and map_gsd != grid.gsd:
        width, height = (round(n * grid.gsd / map_gsd) for n in (grid.width, grid.height))
        sat_rgb = cv2.resize(sat_rgb, (width, height), interpolation=cv2.INTER_AREA)
        grid = AreaGrid(grid.epsg, grid.west, grid.north, map_gsd, width, height)
    return grid, np.clip(sat_rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def _write_location(conf, out, grid, ground, surface, sat_rgb, area, loc, on_progress) -> dict:
    rng = np.random.default_rng([conf.seed, 2, int(loc.id)])
    east, north = grid.local_to_crs(loc.x, loc.y)
    lat, lon = grid.to_latlon(east, north)
    col, row = int(loc.x / conf.gsd), int(loc.y / conf.gsd)
    ground_h = float(ground[row, col])
    sat_px = conf.sat_px or conf.size
    tile = look.satellite_tile(
        sat_rgb, grid, loc.x, loc.y, conf.tile_m, sat_px, rng, int(rng.integers(55, 80))
    )
    for sat_dir in _folders(loc.role)[1]:
        atomic.write_bytes(out / sat_dir / loc.id / f"{loc.id}.jpg", tile)
    drone_dirs = _folders(loc.role)[0]
    if drone_dirs:
        yaw0 = rng.uniform(0, 360)
        records, points = [], []
        for v in range(conf.views):
            yaw = (yaw0 + 360 * v / conf.views + rng.uniform(-10, 10)) % 360
            cam = orbit_camera(
                (float(east), float(north), ground_h),
                float(rng.uniform(*conf.altitude)),
                float(rng.uniform(*conf.pitch)),
                float(yaw),
                conf.size,
                conf.hfov,
            )
            image, hits = render(surface, cam)
            name = f"image-{v + 1:02d}.jpg"
            data = look.encode_jpeg(image, 90)
            for d in drone_dirs:
                atomic.write_bytes(out / d / loc.id / name, data)
            records.append(cam.to_json(name, ground_h))
            points.append(hits.crs_points(grid))
        for d in drone_dirs:
            atomic.write_json(out / d / loc.id / "cameras.json", records)
        from geolink_edge.data import pointclouds

        cloud = cloud_from_points(
            np.concatenate(points),
            (float(east), float(north)),
            conf.tile_m * 0.75,
            conf.points,
            location_seed(loc.id),
        )
        pointclouds.save(out / "pointclouds" / f"{loc.id}.npz", cloud)
    if on_progress:
        on_progress()
    return {
        "location_id": loc.id,
        "area": area.name,
        "split": area.split,
        "role": loc.role,
        "x": f"{float(east):.3f}",
        "y": f"{float(north):.3f}",
        "lat": f"{float(lat):.8f}",
        "lon": f"{float(lon):.8f}",
    }


def _area_job(args):
    conf, area, out = args
    return area.index, render_area(conf, area, out)


def main(conf: SynthConfig, out: Path, force: bool = False, progress=None) -> Path:
    """Write the whole dataset into ``out`` (atomically: all or nothing)."""
    areas = plan(conf)
    with atomic.atomic_dir(out, force) as tmp:
        results: dict[int, list[dict]] = {}
        weight = {a.index: len(a.locations) + (conf.flight_frames if a.flight else 0) for a in areas}
        jobs = [(conf, a, tmp) for a in sorted(areas, key=lambda a: -weight[a.index])]
        if conf.workers > 1 and len(areas) > 1:
            methods = multiprocessing.get_all_start_methods()
            # never plain fork: a parent that already ran OpenCV/torch thread pools deadlocks its children
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            with ctx.Pool(min(conf.workers, len(areas))) as pool:
                for index, rows in pool.imap_unordered(_area_job, jobs):
                    results[index] = rows
                    if progress:
                        progress(weight[index])
        else:
            for job in jobs:
                index, rows = _area_job(job)
                results[index] = rows
                if progress:
                    progress(weight[index])
        rows = [r for a in areas for r in results[a.index]]
        _write_tables(conf, tmp, areas, rows)
    return Path(out)


def total_work(conf: SynthConfig) -> int:
    return conf.locations + max(1, round(DISTRACTOR_RATIO * (conf.locations // 2))) + conf.flight_frames


def _write_tables(conf: SynthConfig, out: Path, areas: list[AreaPlan], rows: list[dict]) -> None:
    for name, columns in (("locations.csv", list(rows[0])), ("gps.csv", ["location_id", "lat", "lon"])):
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic.write_text(out / name, text.getvalue())
    counts = {role: sum(r["role"] == role for r in rows) for role in ("train", "query", "distractor")}
    atomic.write_json(
        out / "dataset.json",
        {
            "format": "geolink-edge/synthetic/1",
            "generator": GENERATOR,
            "seed": conf.seed,
            "styles": conf.styles,
            "splits": {"train": conf.train_styles, "test": conf.test_styles},
            "tile_m": conf.tile_m,
            "sat_px": conf.sat_px or conf.size,
            "drone_px": conf.size,
            "views": conf.views,
            "drone": {
                "altitude_m": list(conf.altitude),
                "pitch_deg": list(conf.pitch),
                "hfov_deg": conf.hfov,
            },
            "gsd_m": conf.gsd,
            "counts": counts,
            "points": conf.points,
            "areas": [
                {
                    "name": a.name,
                    "style": a.style,
                    "split": a.split,
                    "locations": [loc.id for loc in a.locations],
                    "flight": a.flight,
                }
                for a in areas
            ],
            "flight": "flight" if conf.flight_frames else None,
            "config": json.loads(conf.model_dump_json()),
        },
    )
