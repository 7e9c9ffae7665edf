"""A landing's descent, 60 m to 5 m over a 0.5 m/px map, rendered by the simulated camera: without the
keyframe fallback the low frames see too little of the map to fix; with it they are located on the
last located frame, with σs that hold their true errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _runtime_fixtures import synthetic_flight_world

from geolink_edge.geo import LocalFrame
from geolink_edge.runtime import loop
from geolink_edge.runtime.keyframe import KeyframeConf, Keyframes
from geolink_edge.runtime.locate import LocateConf
from geolink_edge.runtime.mount import BodyAttitude, CameraMount
from geolink_edge.runtime.sources import Frame, Telemetry, Truth
from geolink_edge.sim.camera import Exposure, ExposureModel, MapRenderer, MapScene, Pose, default_intrinsics

SIZE = (640, 480)
TOP_M, BOTTOM_M = 60.0, 5.0
DESCENT = 0.93  # each frame 7 % lower: a steeper step than a copter's 1.5 m/s (0.5 m/s below 10 m) at 3 fps


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_onnx):
    root = tmp_path_factory.mktemp("descent")
    flight, index, _ = synthetic_flight_world(root, tiny_onnx, 2, 1024, map_gsd=0.5)
    area = json.loads((flight / "flight.json").read_text())["area"]
    return root / "synth" / "areas" / area / "ortho.tif", index


class Camera:
    """The simulated camera over the map's centre: ``shot(i)`` is the descent's i-th frame (7 % lower
    each time, drifting 0.3 m east and turning 1° a frame), with the told attitude and height."""

    def __init__(self, ortho):
        self.scene = MapScene(ortho)
        self.intrinsics = default_intrinsics(SIZE, 60.0)
        self.renderer = MapRenderer(self.scene, self.intrinsics, CameraMount.parse("gimbal:90"), SIZE)
        self.exposure = ExposureModel(Exposure(seed=1))
        self.here = LocalFrame(*self.scene.centre())

    def shot(self, i: int, east: float | None = None) -> tuple[np.ndarray, Telemetry, Truth, np.ndarray]:
        height = TOP_M * DESCENT**i
        xy = np.array([0.3 * i if east is None else east, 0.0])  # metres from the map's centre
        lat, lon, _ = self.here.to_geodetic(*xy)
        pose = Pose(0.0, float(lat), float(lon), height, BodyAttitude(0.0, 0.0, math.radians(20.0 + i)))
        image = self.exposure(self.renderer.render(pose))
        telemetry = Telemetry(*self.renderer.camera_angles(pose.body), height)
        return image, telemetry, Truth(float(lat), float(lon), height), xy


FRAMES = int(math.log(BOTTOM_M / TOP_M) / math.log(DESCENT)) + 1  # 60 m down to 5 m


def descend(world, model, conf: LocateConf) -> list[dict]:
    """Every frame of the descent through the pipeline, the start area told."""
    from geolink_edge.backends import load_embedder
    from geolink_edge.index.search import TileIndex

    ortho, index = world
    camera = Camera(ortho)
    run = loop.RunConf(realtime=False, near=(*camera.scene.centre(), 60.0), locate=conf)
    pipeline = loop.Pipeline(load_embedder(model), TileIndex.load(index), run, camera.intrinsics)
    records = []
    for i in range(FRAMES):
        image, telemetry, truth, _ = camera.shot(i)
        t = 1000.0 + i / 3.0
        record = pipeline.process(Frame(image, i, t, t, 0.0, truth, telemetry))
        records.append({**record, "height": truth.alt})
    return records


def sigma(fix: dict) -> float:
    return math.sqrt(max(fix["cov"][0][0], fix["cov"][1][1]))


def test_a_descent_stays_located_on_keyframes_below_the_map(world, tiny_onnx):
    """The map fixes the descent down to about 9 m (0.5 m/px: 20 map pixels across the footprint);
    below, no fix without the fallback, and every frame located on a keyframe with it, within 0.5 m
    and its σ (the σ grows per step on the anchoring map fix's)."""
    blind = descend(world, tiny_onnx, LocateConf(keyframe_fallback=False))
    records = descend(world, tiny_onnx, LocateConf())
    floor = max(i for i, r in enumerate(blind) if r["fix"]["ok"]) + 1  # the first frame the map cannot fix
    assert 5 <= FRAMES - floor and all(not r["fix"]["ok"] for r in blind[floor:])
    assert blind[floor]["height"] < 12.0
    # above the floor the map's fixes, untouched; below, every frame on a keyframe
    for r, b in zip(records[:floor], blind[:floor], strict=True):
        assert r["fix"]["search"] != "keyframe" and r["fix"]["x"] == b["fix"]["x"]
    low = records[floor:]
    assert all(r["status"] == "accepted" and r["fix"]["search"] == "keyframe" for r in low), low
    chains = [r["fix"]["keyframe_chain"] for r in low]
    assert chains[0] == 1 and chains == sorted(chains) and chains[-1] <= KeyframeConf().max_chain
    assert max(r["fix_error_m"] for r in low) <= 0.5
    assert all(r["fix_error_m"] <= 2.0 * sigma(r["fix"]) for r in low)
    # the chain grows on the σ of the last map fix that anchors keyframes (votes alone never do)
    anchor = next(r["fix"] for r in reversed(records[:floor]) if r["fix"]["method"] != "votes")
    assert all(sigma(r["fix"]) > sigma(anchor) for r in low)


def test_keyframe_steps_are_bounded_and_refuse_what_they_do_not_see(world):
    """A keyframe placed at the truth; the frames below it are located on it within 5 cm, a frame
    200 m away is not, the chain stops at ``max_chain``, and a fix the track refused never becomes
    the keyframe."""
    camera = Camera(world[0])
    keyframes = Keyframes(KeyframeConf(max_chain=1))
    image, telemetry, _, xy = camera.shot(26)  # 9 m up
    keyframes.remember(image, xy, np.eye(2) * 1.5**2, camera.intrinsics, telemetry)
    keyframes.confirm(True)  # the track accepted its fix
    image, telemetry, _, xy = camera.shot(27)
    step, why = keyframes.step(image, camera.intrinsics, telemetry, xy + [0.5, -0.3])  # the prior is off
    assert step is not None, why
    assert np.linalg.norm(step.xy - xy) <= 0.05 and step.chain == 1 and step.correlation >= 0.9
    assert step.cov[0, 0] == pytest.approx(1.5**2 + 0.5**2, abs=0.01)  # the keyframe's σ and a step's
    image, telemetry, _, xy = camera.shot(27, east=200.0)
    step, why = keyframes.step(image, camera.intrinsics, telemetry, xy)
    assert step is None and "does not cover" in why
    step, why = keyframes.step(
        image, camera.intrinsics, telemetry, camera.shot(27)[3]
    )  # elsewhere, told here
    assert step is None and "correlation" in why
    image, telemetry, _, xy = camera.shot(31)  # 6.6 m: 1.36 × lower than the keyframe, which it replaces
    assert keyframes.step(image, camera.intrinsics, telemetry, xy)[0] is not None
    keyframes.confirm(True)
    image, telemetry, _, xy = camera.shot(32)
    assert keyframes.step(image, camera.intrinsics, telemetry, xy) == (None, "chain of 1 steps at its limit")
    keyframes.forget()
    keyframes.remember(image, xy, np.eye(2), camera.intrinsics, telemetry)
    keyframes.confirm(False)  # gated by the track
    assert keyframes.step(image, camera.intrinsics, telemetry, xy) == (None, "")  # none kept


@pytest.fixture(scope="module")
def suburb(tmp_path_factory):
    """The renderer over the SITL mission's map (0.15 m/px), and its centre as a local frame."""
    from geolink_edge.sim.landing import suburb_map

    scene = MapScene(suburb_map(tmp_path_factory.mktemp("suburb")))
    renderer = MapRenderer(scene, default_intrinsics(SIZE, 60.0), CameraMount.parse("gimbal:90"), SIZE)
    return renderer, LocalFrame(*scene.centre())


def test_a_swaying_landing_stays_located_below_2_m(suburb):
    """From the last map fix at 7 m to the ground over the mission's home, swaying at up to 1.5 m/s,
    the told height 0.1–0.25 m off and the prior the track's constant-velocity prediction (off by
    up to a third of a low view): every frame down to 1.5 m is located, within 0.3 m and 2 σ."""
    from geolink_edge.sim.landing import descend

    renderer, home = suburb
    frames = descend(renderer, (home.lat0, home.lon0), Keyframes(), seed=2)
    located = [f for f in frames if f.step is not None]
    assert all(f.step is not None for f in frames if f.height >= 1.5), [(f.height, f.why) for f in frames]
    assert max(np.linalg.norm(f.prior - f.xy) for f in frames if f.height >= 1.5) > 1.0  # a prior far off
    for f in located:
        error = np.linalg.norm(f.step.xy - f.xy)
        assert error <= 0.3 and error <= 2.0 * math.sqrt(f.step.cov[0, 0]), (f.height, error)


def test_the_search_reaches_a_far_prior_and_refuses_what_lies_beyond_it(suburb):
    """A keyframe at 4 m; a frame 3.5 m up, 1.1 m from the prior (a third of its view: beyond the
    reach of one canvas's phase correlation) is located within 5 cm; the same frame with the truth
    beyond the searched square, and frames of ground the keyframe never saw, are refused; after
    ``max_misses`` in a row nothing is located until a map fix gives a new keyframe."""
    from geolink_edge.sim.landing import render

    renderer, home = suburb
    exposure = ExposureModel(Exposure(seed=1))

    def shot(xy, height: float, yaw: float) -> tuple[np.ndarray, Telemetry]:
        return render(renderer, exposure, home, xy, height, yaw, height + 0.15)  # told 0.15 m high

    def keyframe_at_home() -> Keyframes:
        keyframes = Keyframes()
        image, telemetry = shot((0.0, 0.0), 4.0, 30.0)
        keyframes.remember(image, (0.0, 0.0), np.eye(2) * 1.5**2, renderer.intrinsics, telemetry)
        keyframes.confirm(True)
        return keyframes

    keyframes = keyframe_at_home()
    truth = np.array([0.9, -0.6])
    image, telemetry = shot(truth, 3.5, 31.0)
    step, why = keyframes.step(image, renderer.intrinsics, telemetry, (0.0, 0.0))
    assert step is not None, why
    assert np.linalg.norm(step.xy - truth) <= 0.05 and step.correlation >= 0.9
    outside = truth + [KeyframeConf().search_m + 0.5, 0.0]  # the truth 2.5 m from the prior
    assert keyframes.step(image, renderer.intrinsics, telemetry, outside)[0] is None
    for unseen in ([40.0, 0.0], [0.0, -40.0], [30.0, 30.0], [-6.0, 0.0], [0.0, 6.0]):
        other, told = shot(unseen, 3.5, 31.0)
        step, why = keyframes.step(other, renderer.intrinsics, told, (0.0, 0.0))
        assert step is None and "correlation" in why, (unseen, why)
    assert keyframes.misses == KeyframeConf().max_misses == 6  # the frame told outside, and these five
    step, why = keyframes.step(image, renderer.intrinsics, telemetry, (0.0, 0.0))  # the good frame again
    assert step is None and "in a row" in why
    keyframes = keyframe_at_home()  # a map fix
    assert keyframes.step(image, renderer.intrinsics, telemetry, (0.0, 0.0))[0] is not None
