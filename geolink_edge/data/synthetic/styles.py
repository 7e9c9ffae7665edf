"""Area styles: the knobs that make a dense city, a suburb, farmland and an industrial port differ.

A style is data only; ``world.py`` turns it into rasters. Real areas differ in layout (road grid,
plot sizes), in what the roofs look like (shape, colour, height) and in how much ground is
vegetation, fields or water; those are the parameters here. Colours are RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Style:
    name: str
    origin: tuple[float, float]  # a real (lat, lon) the areas of this style are placed near
    base_elevation: float  # metres above the ellipsoid of the flattest ground
    relief: float  # amplitude of the rolling terrain, metres
    roads: str  # "grid" | "curvy" | "rural" | "wide_grid"
    road_spacing: tuple[float, float]  # block size range, metres
    road_width: tuple[float, float]
    building_size: tuple[float, float]  # footprint side range, metres
    building_height: tuple[float, float]
    building_attempts: int  # placement tries per hectare of buildable land
    setback: float  # free border kept around each building, metres
    roof_shapes: dict[str, float]  # "flat" | "gable" | "hip" | "tank" → probability
    roof_colours: tuple[tuple[float, float, float], ...]
    facade_colours: tuple[tuple[float, float, float], ...]
    windows: bool
    courtyard_prob: float
    trees_per_ha: float
    tree_height: tuple[float, float]
    ground_colour: tuple[float, float, float]
    water: str | None = None  # "sea" | "river" | None
    fields: bool = False
    forest_fraction: float = 0.0
    pools_prob: float = 0.0
    cars_per_100m: float = 2.0
    parking_prob: float = 0.0
    containers: bool = False
    extra: dict = field(default_factory=dict)


DENSE_CITY = Style(
    name="dense_city",
    origin=(45.7578, 4.8320),
    base_elevation=170.0,
    relief=4.0,
    roads="grid",
    road_spacing=(55.0, 95.0),
    road_width=(9.0, 16.0),
    building_size=(10.0, 42.0),
    building_height=(12.0, 48.0),
    building_attempts=400,
    setback=1.0,
    roof_shapes={"flat": 0.65, "hip": 0.2, "gable": 0.15},
    roof_colours=(
        (0.55, 0.55, 0.57),
        (0.68, 0.64, 0.58),
        (0.35, 0.37, 0.42),
        (0.62, 0.42, 0.33),
        (0.76, 0.74, 0.70),
        (0.45, 0.47, 0.46),
        (0.50, 0.36, 0.30),
    ),
    facade_colours=((0.80, 0.76, 0.68), (0.70, 0.66, 0.60), (0.62, 0.58, 0.55), (0.78, 0.70, 0.58)),
    windows=True,
    courtyard_prob=0.45,
    trees_per_ha=8.0,
    tree_height=(8.0, 16.0),
    ground_colour=(0.48, 0.47, 0.45),
    cars_per_100m=9.0,
    parking_prob=0.1,
    extra={"ground_patches": (0.60, 0.57, 0.52)},
)

SUBURB = Style(
    name="suburb",
    origin=(33.0198, -96.6989),
    base_elevation=190.0,
    relief=8.0,
    roads="curvy",
    road_spacing=(70.0, 110.0),
    road_width=(7.0, 10.0),
    building_size=(10.0, 20.0),
    building_height=(5.0, 9.0),
    building_attempts=40,
    setback=4.0,
    roof_shapes={"gable": 0.5, "hip": 0.4, "flat": 0.1},
    roof_colours=(
        (0.36, 0.30, 0.27),
        (0.55, 0.30, 0.22),
        (0.42, 0.42, 0.44),
        (0.60, 0.52, 0.42),
        (0.25, 0.26, 0.30),
        (0.66, 0.38, 0.28),
        (0.48, 0.44, 0.36),
    ),
    facade_colours=((0.86, 0.82, 0.74), (0.74, 0.62, 0.50), (0.82, 0.80, 0.78), (0.66, 0.52, 0.42)),
    windows=True,
    courtyard_prob=0.0,
    trees_per_ha=45.0,
    tree_height=(6.0, 15.0),
    ground_colour=(0.36, 0.50, 0.26),
    extra={"ground_patches": (0.45, 0.50, 0.30)},
    pools_prob=0.25,
    cars_per_100m=3.0,
)

FARMLAND = Style(
    name="farmland",
    origin=(41.9947, -93.6200),
    base_elevation=290.0,
    relief=14.0,
    roads="rural",
    road_spacing=(250.0, 400.0),
    road_width=(5.0, 7.0),
    building_size=(10.0, 30.0),
    building_height=(5.0, 11.0),
    building_attempts=1,
    setback=6.0,
    roof_shapes={"gable": 0.7, "flat": 0.15, "tank": 0.15},
    roof_colours=((0.62, 0.20, 0.16), (0.70, 0.72, 0.74), (0.30, 0.42, 0.30), (0.52, 0.50, 0.46)),
    facade_colours=((0.70, 0.25, 0.20), (0.80, 0.78, 0.72), (0.60, 0.55, 0.48)),
    windows=False,
    courtyard_prob=0.0,
    trees_per_ha=4.0,
    tree_height=(10.0, 22.0),
    ground_colour=(0.45, 0.52, 0.30),
    water="river",
    fields=True,
    forest_fraction=0.22,
    cars_per_100m=0.3,
)

INDUSTRIAL_COAST = Style(
    name="industrial_coast",
    origin=(51.9500, 4.0500),
    base_elevation=3.0,
    relief=1.5,
    roads="wide_grid",
    road_spacing=(90.0, 160.0),
    road_width=(12.0, 20.0),
    building_size=(20.0, 110.0),
    building_height=(8.0, 24.0),
    building_attempts=60,
    setback=4.0,
    roof_shapes={"flat": 0.75, "tank": 0.15, "gable": 0.10},
    roof_colours=(
        (0.82, 0.83, 0.84),
        (0.60, 0.62, 0.64),
        (0.30, 0.45, 0.60),
        (0.35, 0.50, 0.38),
        (0.72, 0.70, 0.66),
        (0.55, 0.35, 0.30),
        (0.90, 0.90, 0.88),
    ),
    facade_colours=((0.70, 0.72, 0.74), (0.55, 0.60, 0.66), (0.78, 0.76, 0.70)),
    windows=False,
    courtyard_prob=0.0,
    trees_per_ha=2.0,
    tree_height=(6.0, 12.0),
    ground_colour=(0.50, 0.49, 0.46),
    water="sea",
    cars_per_100m=4.0,
    parking_prob=0.35,
    containers=True,
    extra={"ground_patches": (0.42, 0.45, 0.32)},
)

STYLES: dict[str, Style] = {s.name: s for s in (DENSE_CITY, FARMLAND, SUBURB, INDUSTRIAL_COAST)}
# Default order: the first half trains, the second half is held out (cross-area test).
DEFAULT_STYLES = ("dense_city", "farmland", "suburb", "industrial_coast")
