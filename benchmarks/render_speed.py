"""Speed of the simulated camera (``geolink_edge.sim.camera``): milliseconds per rendered frame.

    python benchmarks/render_speed.py --map ORTHO.tif [--dem DEM.tif] [--frames 60] [--size 640x480]

Renders frames along a circle over the map's centre at the given height, with the attitude of a
copter in a banked turn, and prints the median, p90 and max time of a frame (render, exposure and
noise: what the camera does per frame), with and without the DEM when one is given.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from geolink_edge.geo import LocalFrame
from geolink_edge.runtime.mount import BodyAttitude, CameraMount
from geolink_edge.sim.camera import Exposure, ExposureModel, MapRenderer, MapScene, Pose, default_intrinsics


def frames_ms(scene: MapScene, size: tuple[int, int], frames: int, height: float, mount: str) -> list[float]:
    renderer = MapRenderer(scene, default_intrinsics(size, 60.0), CameraMount.parse(mount), size)
    exposure = ExposureModel(Exposure())
    lat0, lon0 = scene.centre()
    ground = scene.ground_at(lat0, lon0)
    frame = LocalFrame(lat0, lon0)
    times = []
    for i in range(frames):
        angle = 2 * math.pi * i / frames
        lat, lon, _ = frame.to_geodetic(150 * math.cos(angle), 150 * math.sin(angle))
        body = BodyAttitude(math.radians(12), math.radians(-8), -angle)
        pose = Pose(0.0, float(lat), float(lon), ground + height, body)
        t0 = time.perf_counter()
        exposure(renderer.render(pose))
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", required=True)
    parser.add_argument("--dem")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--height", type=float, default=100.0)
    parser.add_argument("--mount", default="body:90")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    print("| ground | frame | median ms | p90 ms | max ms |\n|---|---|---|---|---|")
    for dem in [None, args.dem] if args.dem else [None]:
        scene = MapScene(args.map, dem)
        times = frames_ms(scene, size, args.frames, args.height, args.mount)[1:]  # the first opens the file
        label = "DEM ray cast" if dem else "level plane"
        print(
            f"| {label} | {size[0]}x{size[1]} | {np.median(times):.1f} | {np.percentile(times, 90):.1f} "
            f"| {max(times):.1f} |"
        )


if __name__ == "__main__":
    main()
