"""The map in another season than the flight: vegetation and open ground recoloured by class.

Real reference maps are often years and seasons away from the flight: trees turn or lose their
leaves, fields are ploughed or harvested, snow lies on open ground and flat roofs. A season here
recolours the world's albedo per class while keeping each pixel's relative brightness, so texture
and layout survive (local features can still meet) but colours and contrasts change. Built
structures, roads and water keep their look.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from geolink_edge.data.synthetic.world import CLASSES, World, noise

SAME = "same"


@dataclass(frozen=True)
class Season:
    """Target colours (RGB in [0, 1]) per class; ``snow`` is the share of open ground under snow."""

    tree: tuple[tuple[float, float, float], ...]
    grass: tuple[float, float, float]
    field: tuple[float, float, float]
    snow: float = 0.0


SEASONS = {
    "autumn": Season(
        tree=((0.62, 0.35, 0.12), (0.70, 0.52, 0.16), (0.48, 0.20, 0.10), (0.35, 0.36, 0.16)),
        grass=(0.52, 0.50, 0.28),
        field=(0.45, 0.34, 0.24),  # ploughed
    ),
    "winter": Season(
        tree=((0.30, 0.27, 0.24), (0.36, 0.33, 0.30)),  # bare branches over the ground
        grass=(0.45, 0.43, 0.36),
        field=(0.50, 0.45, 0.38),
        snow=0.6,
    ),
    "dry": Season(
        tree=((0.36, 0.38, 0.20), (0.42, 0.40, 0.24)),
        grass=(0.72, 0.64, 0.42),
        field=(0.80, 0.72, 0.50),
    ),
}
SEASON_NAMES = (SAME, *SEASONS)


def _recolour(albedo: np.ndarray, mask: np.ndarray, colour) -> None:
    """Pixels of ``mask`` take ``colour`` scaled by their brightness relative to the class mean."""
    if not mask.any():
        return
    luma = albedo[mask].mean(axis=1)
    relative = luma / max(float(luma.mean()), 1e-3)
    albedo[mask] = np.clip(np.asarray(colour, np.float32) * relative[:, None], 0, 1)


def in_season(world: World, season: str, rng: np.random.Generator) -> World:
    """A copy of ``world`` whose albedo shows ``season`` (the same world for ``same``)."""
    if season == SAME:
        return world
    spec = SEASONS[season]
    albedo = world.albedo.copy()
    classes = world.classes
    trees = classes == CLASSES["tree"]
    # Each tree crown keeps one colour: pick per coarse cell (crowns are a few metres wide).
    pick = ((noise(rng, classes.shape, 6.0 / world.gsd, 1) + 3.0) * 7).astype(np.int64) % len(spec.tree)
    for k, colour in enumerate(spec.tree):
        _recolour(albedo, trees & (pick == k), colour)
    _recolour(albedo, classes == CLASSES["grass"], spec.grass)
    _recolour(albedo, classes == CLASSES["field"], spec.field)
    if spec.snow:
        open_ground = np.isin(classes, [CLASSES[c] for c in ("grass", "field", "bare", "sand")])
        slope_rows, slope_cols = np.gradient(world.dsm)
        flat_roofs = (classes == CLASSES["building"]) & (np.hypot(slope_rows, slope_cols) < 0.05)
        drifts = noise(rng, classes.shape, 25.0 / world.gsd, 3)
        cover = drifts > np.quantile(drifts, 1 - spec.snow)
        snowy = (open_ground | flat_roofs) & cover
        grain = 0.9 + 0.04 * noise(rng, classes.shape, 1.5 / world.gsd, 2)
        albedo[snowy] = np.clip(np.array([0.92, 0.93, 0.96], np.float32) * grain[snowy, None], 0, 1)
    return replace(world, albedo=albedo)
