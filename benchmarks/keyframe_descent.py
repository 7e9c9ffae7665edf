"""A landing's last metres on keyframes: how low the chain holds, and how far off it is.

Over the synthetic suburb at 0.15 m/px (the SITL mission's map: the map fixes a descent down to
some 5–7 m), each run is :func:`geolink_edge.sim.landing.descend`: from a keyframe the map placed at
``--top`` metres, 0.5 m/s down to 0.5 m at 3 frames/s, swaying at 0.3–1.5 m/s, the told height
0.1–0.25 m off, the prior the track's constant-velocity prediction (0.2–1 m off). Per run: the
height of the last located frame ("end"; 0.5 m: it held to the ground), of the first miss (0:
none), the largest true error of a located frame and how many located frames (of all) were off by
more than 2 σ. Runs over the map's centre (where the mission lands: ``home``) and over random spots
(``spots``; some are uniform ground that nothing can align on: an honest miss).

A second table counts wrong alignments: a keyframe and a frame of ground it never saw, the prior told
on the keyframe; every step accepted there is wrong (``--pairs`` a kind).

    python benchmarks/keyframe_descent.py --runs 16
    git show REV:runtime/keyframe.py > before.py
    python benchmarks/keyframe_descent.py --before before.py   # that module beside this one
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from _results import publish_tables  # a sibling module: tables into RESULTS.md

from geolink_edge.geo import LocalFrame
from geolink_edge.runtime import keyframe
from geolink_edge.runtime.mount import CameraMount
from geolink_edge.sim.camera import Exposure, ExposureModel, MapRenderer, MapScene, default_intrinsics
from geolink_edge.sim.landing import LandingConf, descend, render, suburb_map

SIZE = (640, 480)
SPOT_M = 120.0  # random spots lie this far from the map's centre at most


@dataclass
class Outcome:
    end_m: float  # height of the last located frame
    first_miss_m: float  # height of the first frame not located (0: none)
    max_error_m: float  # of the located frames, against the truth
    located: int  # frames
    beyond_2sigma: int  # located frames whose true error exceeds 2 σ
    prior_error_m: float  # the prior's median error


def outcome(frames, top_m: float) -> Outcome:
    located = [f for f in frames if f.step is not None]
    errors = [float(np.linalg.norm(f.step.xy - f.xy)) for f in located]
    sigmas = [float(np.sqrt(max(f.step.cov[0, 0], f.step.cov[1, 1]))) for f in located]
    return Outcome(
        located[-1].height if located else top_m,
        next((f.height for f in frames if f.step is None), 0.0),
        max(errors, default=0.0),
        len(located),
        sum(e > 2.0 * s for e, s in zip(errors, sigmas, strict=True)),
        float(np.median([np.linalg.norm(f.prior - f.xy) for f in frames])),
    )


def wrong_alignments(renderer: MapRenderer, centre: LocalFrame, modules: list, pairs: int) -> None:
    """A keyframe over a spot, a frame over ground it never saw (``far``: 20–60 m away; ``beside``:
    just beyond its footprint, where a road or a roof goes on alike), the prior told at the spot: a
    step accepted is a wrong alignment. Heights 0.8–7 m, the keyframe 1–1.3 × higher, the told
    heights ±0.25 m off, the prior 0.4 m a axis about the spot."""
    rng = np.random.default_rng(7)
    exposure = ExposureModel(Exposure(seed=3))
    print("\n| module | ground | pairs | accepted | at heights (m) |\n|---|---|---|---|---|")
    for kind in ("far", "beside"):
        cases = []
        for _ in range(pairs):
            height = rng.uniform(0.8, 7.0)
            key_height, yaw = height * rng.uniform(1.0, 1.3), rng.uniform(0.0, 360.0)
            spot = rng.uniform(-SPOT_M, SPOT_M, 2)
            angle = rng.uniform(0.0, 2.0 * np.pi)
            away = rng.uniform(20.0, 60.0, 2) * rng.choice([-1, 1], 2) if kind == "far" else (
                1.3 * key_height * np.array([np.cos(angle), np.sin(angle)]))  # fmt: skip
            key = render(
                renderer, exposure, centre, spot, key_height, yaw, key_height + rng.uniform(-0.25, 0.25)
            )
            frame = render(renderer, exposure, centre, spot + away, height, yaw + rng.normal(0.0, 2.0),
                           height + rng.uniform(-0.25, 0.25))  # fmt: skip
            cases.append((height, spot, key, frame, spot + rng.normal(0.0, 0.4, 2)))
        for name, module, module_conf in modules:
            accepted = []
            for height, spot, (key_image, key_told), (image, told), prior in cases:
                keyframes = module.Keyframes(module_conf or module.KeyframeConf())
                keyframes.remember(key_image, spot, np.eye(2) * 1.5**2, renderer.intrinsics, key_told)
                keyframes.confirm(True)
                if keyframes.step(image, renderer.intrinsics, told, prior)[0] is not None:
                    accepted.append(height)
            heights = ", ".join(f"{h:.1f}" for h in sorted(accepted))
            print(
                f"| {name} | {kind} | {pairs} | {len(accepted)} ({len(accepted) / pairs:.1%}) | {heights} |"
            )


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
        f"{np.median(error):.2f}", f"{error.max():.2f}",
        f"{sum(o.beyond_2sigma for o in outcomes)} of {sum(o.located for o in outcomes)}",
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
    parser.add_argument("--conf", nargs="*", default=[], metavar="FIELD=VALUE", help="KeyframeConf fields")
    parser.add_argument("--pairs", type=int, default=200, help="pairs of unseen ground a kind (0: none)")
    parser.add_argument("--where", nargs="+", default=["home", "spots"], choices=["home", "spots"])
    args = parser.parse_args()
    scene = MapScene(suburb_map(args.work))
    renderer = MapRenderer(scene, default_intrinsics(SIZE, 60.0), CameraMount.parse("gimbal:90"), SIZE)
    centre = LocalFrame(*scene.centre())
    landing = LandingConf(top_m=args.top)
    default = keyframe.KeyframeConf()
    fields = dict(field.split("=", 1) for field in args.conf)
    conf = replace(default, **{k: type(getattr(default, k))(v) for k, v in fields.items()})
    before = [("before", load_module(args.before), None)] if args.before else []
    modules = before + [("after", keyframe, conf)]
    print(f"descent from {args.top:g} m at {landing.sink_m_s} m/s, {landing.fps:g} frames/s, "
          f"to {landing.bottom_m} m; end: the last located frame's height (m); medians\n")  # fmt: skip
    print("| module | where | runs | end | end p90 | end ≤ 1 m | end ≤ 2 m | first miss | max error | "
          "max error, worst | beyond 2σ | prior error | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    spots = np.random.default_rng(1).uniform(-SPOT_M, SPOT_M, (args.runs, 2))
    for where in args.where:
        for name, module, module_conf in modules:
            t = time.perf_counter()
            outcomes = []
            for seed in range(args.runs):
                lat, lon, _ = centre.to_geodetic(*(np.zeros(2) if where == "home" else spots[seed]))
                keyframes = module.Keyframes(module_conf or module.KeyframeConf())
                frames = descend(renderer, (float(lat), float(lon)), keyframes, seed, landing)
                outcomes.append(outcome(frames, args.top))
            print(row(name, where, outcomes, time.perf_counter() - t), flush=True)
    if args.pairs:
        wrong_alignments(renderer, centre, modules, args.pairs)


if __name__ == "__main__":
    publish_tables("Keyframes in a landing's last metres")
    main()
