"""A landing's last metres, located on keyframes alone, as a copter flies them.

The map placed the vehicle at ``top_m`` (at the truth, with a 1.5 m σ: the last map fix) and it sinks
at ArduCopter's 0.5 m/s to the ground, one frame every ``1 / fps`` s, rendered by the simulated camera
(nadir, on a gimbal) and located by :class:`Keyframes` alone. What the runtime is told is what an
autopilot tells:

- the vehicle sways as it chases its fixes: its horizontal velocity is a random walk
  (Ornstein–Uhlenbeck, ``sway_s`` and ``sway_m_s`` a axis: speeds of 0.3–1.5 m/s), its yaw drifts
  (a slow turn and jitter);
- the told height (the autopilot's relative altitude) is off by 0.1–0.25 m, varying slowly;
- the prior is the track's: a constant-velocity prediction from the last two located frames, with its
  own error (``prior_sigma_m`` a axis, varying over a second).

A frame no keyframe locates is a miss; the next is tried again, about the prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geolink_edge.geo import LocalFrame
from geolink_edge.runtime.keyframe import Keyframes, Step
from geolink_edge.runtime.mount import BodyAttitude
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.sim.camera import Exposure, ExposureModel, MapRenderer, Pose

MAP_FIX_SIGMA_M = 1.5


def suburb_map(root: Path) -> Path:
    """The SITL mission's map, a 307 m synthetic suburb at 0.15 m/px, made under ``root`` (once)."""
    from geolink_edge.data.synthetic import writer

    ortho = root / "areas" / "mission-suburb" / "ortho.tif"
    if not ortho.is_file():
        conf = writer.SynthConfig(
            locations=2, views=1, size=64, area_px=2048, gsd=0.15, workers=1, styles=["farmland", "suburb"]
        )
        writer.render_area(conf, writer.AreaPlan(1, "mission-suburb", "suburb", "test"), root)
    return ortho


@dataclass(frozen=True)
class LandingConf:
    top_m: float = 7.0  # height of the last map fix
    bottom_m: float = 0.5
    sink_m_s: float = 0.5  # ArduCopter's LAND_SPEED
    fps: float = 3.0
    sway_m_s: float = 0.6  # the horizontal velocity's stationary σ a axis
    sway_s: float = 2.0  # ... and its correlation time
    told_height_bias_m: tuple[float, float] = (0.1, 0.25)
    prior_sigma_m: float = 0.35  # the track's prediction error a axis, beyond constant velocity


@dataclass(frozen=True)
class Frame:
    """One frame of the descent: the truth, the prior searched about, and its step (None: missed)."""

    height: float
    xy: np.ndarray  # the camera's true (east, north) about the map point the descent started over
    prior: np.ndarray
    step: Step | None
    why: str


def descend(
    renderer: MapRenderer, start: tuple[float, float], keyframes: Keyframes, seed: int, conf=LandingConf()
) -> list[Frame]:
    """Every frame below the last map fix, over ``start`` (lat, lon) of the renderer's map."""
    rng = np.random.default_rng(seed)
    exposure = ExposureModel(Exposure(seed=seed))
    here = LocalFrame(*start)
    dt = 1.0 / conf.fps
    decay, prior_decay = math.exp(-dt / conf.sway_s), math.exp(-dt)
    velocity = rng.normal(0.0, conf.sway_m_s, 2)
    bias = rng.choice([-1.0, 1.0]) * rng.uniform(*conf.told_height_bias_m)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    yaw, turn = rng.uniform(0.0, 360.0), rng.normal(0.0, 1.0)  # degrees, degrees/s
    prior_error = rng.normal(0.0, conf.prior_sigma_m, 2)
    xy, height, t = np.zeros(2), conf.top_m, 0.0

    def shot() -> tuple[np.ndarray, Telemetry]:
        told = height + bias + 0.08 * math.sin(2.0 * math.pi * t / 15.0 + phase)
        return render(renderer, exposure, here, xy, height, yaw, told, t)

    image, telemetry = shot()
    keyframes.remember(image, xy, np.eye(2) * MAP_FIX_SIGMA_M**2, renderer.intrinsics, telemetry)
    keyframes.confirm(True)
    located, frames = [(0, xy.copy())], []
    for k in range(1, math.ceil((conf.top_m - conf.bottom_m) / (conf.sink_m_s * dt)) + 1):
        height, t = conf.top_m - k * conf.sink_m_s * dt, k * dt
        velocity = decay * velocity + rng.normal(0.0, conf.sway_m_s * math.sqrt(1.0 - decay**2), 2)
        xy = xy + velocity * dt
        turn = 0.9 * turn + rng.normal(0.0, 0.3)
        yaw += turn * dt + rng.normal(0.0, 0.3)
        prior_error = prior_decay * prior_error + rng.normal(
            0.0, conf.prior_sigma_m * math.sqrt(1.0 - prior_decay**2), 2
        )
        prior = _predict(located, k) + prior_error
        image, telemetry = shot()
        step, why = keyframes.step(image, renderer.intrinsics, telemetry, prior)
        keyframes.confirm(step is not None)
        if step is not None:
            located.append((k, step.xy))
        frames.append(Frame(height, xy.copy(), prior, step, why))
    return frames


def render(
    renderer: MapRenderer,
    exposure: ExposureModel,
    here: LocalFrame,
    xy,
    height: float,
    yaw: float,
    told_height: float,
    t: float = 0.0,
) -> tuple[np.ndarray, Telemetry]:
    """The frame at ``xy`` (east, north about ``here``), ``height`` up, heading ``yaw`` degrees, with
    the told attitude and ``told_height``."""
    lat, lon, _ = here.to_geodetic(*xy)
    pose = Pose(t, float(lat), float(lon), height, BodyAttitude(0.0, 0.0, math.radians(yaw)))
    return exposure(renderer.render(pose)), Telemetry(*renderer.camera_angles(pose.body), told_height)


def _predict(located: list, k: int) -> np.ndarray:
    """The track's constant-velocity prediction for frame ``k`` from the last two located frames."""
    (k0, a), (k1, b) = located[-2:] if len(located) > 1 else (located[0], located[0])
    return b + (b - a) / max(k1 - k0, 1) * (k - k1)
