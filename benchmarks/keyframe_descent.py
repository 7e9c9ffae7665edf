"""A landing's last metres on keyframes: how low the chain holds, and how far off it is.

Over the synthetic suburb at 0.15 m/px (the SITL mission's map: the map fixes a descent down to
some 5–7 m), each run starts with a keyframe the map placed at ``--top`` metres (at the truth, with
a 1.5 m σ) and descends at 0.5 m/s, 3 frames/s, to 0.5 m, every frame rendered by the simulated
camera (read noise, gain drift) and located by :class:`Keyframes` alone, as in the mission:

- the vehicle sways: its horizontal velocity is a random walk (Ornstein–Uhlenbeck, 2 s, 0.6 m/s a
  axis, so 0.3–1.5 m/s), its yaw drifts (a slow turn and jitter); the camera is nadir (gimbal);
- the told height (the autopilot's relative altitude) is off by 0.1–0.25 m, varying slowly;
- the prior is the track's: a constant-velocity prediction from the last two located frames, and its
  own error (a slowly varying 0.35 m a axis), so some 0.2–1 m off.

A frame no keyframe locates is a miss; the next frame is tried again on the same keyframe, about
the prediction. Per run: the height of the last located frame ("end"; 0.5 m: it held to the
ground), the height of the first miss, the largest true error of a located frame and the share of
located frames within 2 σ. Runs over the map's centre (where the mission lands: ``home``) and
over random spots (``spots``; some are uniform ground that nothing can align on: an honest miss).

    python benchmarks/keyframe_descent.py --runs 16
    git show REV:runtime/keyframe.py > before.py && python benchmarks/keyframe_descent.py --before before.py
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _results import publish_tables  # a sibling module: tables into RESULTS.md

from geolink_edge.geo import LocalFrame
from geolink_edge.runtime import keyframe
from geolink_edge.runtime.mount import BodyAttitude, CameraMount
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.sim.camera import Exposure, ExposureModel, MapRenderer, MapScene, Pose, default_intrinsics

SIZE = (640, 480)
FPS = 3.0
SINK_M_S = 0.5  # ArduCopter's LAND_SPEED below 10 m
BOTTOM_M = 0.5
SPOT_M = 120.0  # random spots lie this far from the map's centre at most


def suburb_map(work: Path) -> Path:
    """The mission's map: a 307 m suburb at 0.15 m/px (made once under ``work``)."""
    from geolink_edge.data.synthetic import writer

    ortho = work / "areas" / "mission-suburb" / "ortho.tif"
    if not ortho.is_file():
        conf = writer.SynthConfig(locations=2, views=1, size=64, area_px=2048, gsd=0.15, workers=1,
                                  styles=["farmland", "suburb"])  # fmt: skip
        writer.render_area(conf, writer.AreaPlan(1, "mission-suburb", "suburb", "test"), work)
    return ortho


@dataclass
class Outcome:
    end_m: float  # height of the last located frame
    first_miss_m: float  # height of the first frame not located (0: none)
    max_error_m: float  # of the located frames, against the truth
    within_2sigma: float  # share of located frames
    prior_error_m: float  # the prior's median error


class Descent:
    """The simulated camera over the map, and one run's vehicle."""

    def __init__(self, ortho: Path):
        self.scene = MapScene(ortho)
        self.intrinsics = default_intrinsics(SIZE, 60.0)
        self.renderer = MapRenderer(self.scene, self.intrinsics, CameraMount.parse("gimbal:90"), SIZE)
        self.here = LocalFrame(*self.scene.centre())

    def run(self, module, seed: int, start: np.ndarray, top_m: float) -> Outcome:
        rng = np.random.default_rng(seed)
        exposure = ExposureModel(Exposure(seed=seed))
        dt = 1.0 / FPS
        tau, sway = 2.0, 0.6  # the velocity's correlation time (s) and stationary σ a axis (m/s)
        decay = math.exp(-dt / tau)
        velocity = rng.normal(0.0, sway, 2)
        bias = rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.25)  # the told height's slow error
        phase = rng.uniform(0.0, 2.0 * math.pi)
        yaw, turn = rng.uniform(0.0, 360.0), rng.normal(0.0, 1.0)  # degrees, degrees/s
        prior_error, prior_decay = rng.normal(0.0, 0.35, 2), math.exp(-dt / 1.0)
        xy, height, t = np.asarray(start, float), top_m, 0.0

        def shot() -> tuple[np.ndarray, Telemetry]:
            lat, lon, _ = self.here.to_geodetic(*xy)
            pose = Pose(t, float(lat), float(lon), height, BodyAttitude(0.0, 0.0, math.radians(yaw)))
            told = height + bias + 0.08 * math.sin(2.0 * math.pi * t / 15.0 + phase)
            return exposure(self.renderer.render(pose)), Telemetry(
                *self.renderer.camera_angles(pose.body), told
            )

        frames = module.Keyframes()
        image, telemetry = shot()
        frames.remember(image, xy, np.eye(2) * 1.5**2, self.intrinsics, telemetry)
        frames.confirm(True)
        located = [(0, xy.copy())]  # (frame number, estimate)
        errors, within, prior_errors, first_miss, end = [], [], [], 0.0, top_m
        for k in range(1, 10_000):
            height -= SINK_M_S * dt
            if height < BOTTOM_M:
                break
            t += dt
            velocity = decay * velocity + rng.normal(0.0, sway * math.sqrt(1.0 - decay**2), 2)
            xy = xy + velocity * dt
            turn = 0.9 * turn + rng.normal(0.0, 0.3)
            yaw += turn * dt + rng.normal(0.0, 0.3)
            prior_error = prior_decay * prior_error + rng.normal(
                0.0, 0.35 * math.sqrt(1.0 - prior_decay**2), 2
            )
            prior = predict(located, k) + prior_error
            prior_errors.append(float(np.linalg.norm(prior - xy)))
            image, telemetry = shot()
            step, _ = frames.step(image, self.intrinsics, telemetry, prior)
            frames.confirm(step is not None)
            if step is None:
                first_miss = first_miss or height
                continue
            located.append((k, step.xy))
            error = float(np.linalg.norm(step.xy - xy))
            errors.append(error)
            within.append(error <= 2.0 * math.sqrt(max(step.cov[0, 0], step.cov[1, 1])))
            end = height
        return Outcome(end, first_miss, max(errors, default=0.0), float(np.mean(within)) if within else 0.0,
                       float(np.median(prior_errors)))  # fmt: skip


def predict(located: list, k: int) -> np.ndarray:
    """The track's constant-velocity prediction for frame ``k`` from the last two located frames."""
    (k0, a), (k1, b) = located[-2:] if len(located) > 1 else (located[0], located[0])
    velocity = (b - a) / max(k1 - k0, 1)
    return b + velocity * (k - k1)


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("keyframe_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def row(name: str, where: str, outcomes: list[Outcome], seconds: float) -> str:
    end = np.array([o.end_m for o in outcomes])
    miss = np.array([o.first_miss_m for o in outcomes])
    error = np.array([o.max_error_m for o in outcomes])
    cells = [
        name, where, str(len(outcomes)), f"{np.median(end):.2f}", f"{np.percentile(end, 90):.2f}",
        f"{np.mean(end <= 1.0):.0%}", f"{np.mean(end <= 2.0):.0%}", f"{np.median(miss):.2f}",
        f"{np.median(error):.2f}", f"{error.max():.2f}", f"{np.mean([o.within_2sigma for o in outcomes]):.0%}",
        f"{np.median([o.prior_error_m for o in outcomes]):.2f}", f"{seconds:.0f}",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs", type=int, default=16, help="descents over the centre, and as many over spots"
    )
    parser.add_argument("--top", type=float, default=7.0, help="height of the last map fix (m)")
    parser.add_argument("--before", type=Path, help="another keyframe module (a file) to compare")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "geolink-keyframe-descent")
    parser.add_argument("--where", nargs="+", default=["home", "spots"], choices=["home", "spots"])
    args = parser.parse_args()
    descent = Descent(suburb_map(args.work))
    modules = ([("before", load_module(args.before))] if args.before else []) + [("after", keyframe)]
    print(f"descent from {args.top:g} m at {SINK_M_S} m/s, {FPS:g} frames/s, to {BOTTOM_M} m; "
          "end: height of the last located frame (m), medians unless said\n")  # fmt: skip
    print("| module | where | runs | end | end p90 | end ≤ 1 m | end ≤ 2 m | first miss | max error | "
          "max error, worst | within 2σ | prior error | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    spots = np.random.default_rng(1).uniform(-SPOT_M, SPOT_M, (args.runs, 2))
    for where in args.where:
        for name, module in modules:
            t = time.perf_counter()
            outcomes = [
                descent.run(module, seed, np.zeros(2) if where == "home" else spots[seed], args.top)
                for seed in range(args.runs)
            ]
            print(row(name, where, outcomes, time.perf_counter() - t), flush=True)


if __name__ == "__main__":
    publish_tables("Keyframes in a landing's last metres")
    main()
