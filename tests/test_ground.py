"""Ground views (frame → nadir north-up canvas) and the map-window lattice, on hand-made cameras."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from _runtime_fixtures import ortho_affine, render_view, textured_ground, world_to_camera

from geolink_edge.runtime.ground import nadir_view, quantize_up, scaled_view
from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.windows import MapWindows

GSD = 0.25
CENTRE = np.array([12.0, -7.0, 80.0])  # camera (east, north, up) over level ground
YAW, PITCH = 30.0, 65.0  # oblique, turned: the canvas must undo both


@pytest.fixture(scope="module")
def scene():
    ortho = textured_ground(1200, seed=3)
    affine = ortho_affine(GSD, -150.0, 150.0)
    camera = Intrinsics(fx=520.0, fy=520.0, cx=320.0, cy=240.0, width=640, height=480)
    frame = render_view(ortho, affine, camera.K, CENTRE, YAW, PITCH)
    view = nadir_view(frame, camera, world_to_camera(YAW, PITCH), CENTRE[2], GSD, max_px=2048)
    return ortho, camera, frame, view


def _project(camera: Intrinsics, ground_xy: np.ndarray) -> np.ndarray:
    points = np.c_[ground_xy, np.zeros(len(ground_xy))] - CENTRE
    rays = points @ world_to_camera(YAW, PITCH).T @ camera.K.T
    return rays[:, :2] / rays[:, 2:]


def test_nadir_view_maps_canvas_pixels_to_the_frame_pixels_that_see_that_ground(scene):
    _, camera, _, view = scene
    assert view.gsd_m == GSD
    rows, cols = np.nonzero(view.mask)
    pick = np.random.default_rng(0).choice(len(rows), 200, replace=False)
    canvas_xy = np.c_[cols[pick], rows[pick]].astype(np.float64)
    ground = view.offsets_m(canvas_xy) + CENTRE[:2]
    np.testing.assert_allclose(view.frame_pixels(canvas_xy), _project(camera, ground), atol=1e-6)
    # the point below the camera is the canvas origin
    np.testing.assert_allclose(view.offsets_m(view.origin_px[None]), [[0.0, 0.0]], atol=1e-9)


def test_nadir_view_looks_like_the_orthophoto(scene):
    ortho, _, _, view = scene
    # the ortho read at the canvas's ground points: canvas (u, v) → ground → ortho pixel
    west, north = view.offsets_m(np.zeros((1, 2)))[0] + CENTRE[:2]
    to_ortho = np.array([[1.0, 0.0, (west + 150.0) / GSD], [0.0, 1.0, (150.0 - north) / GSD]])
    h, w = view.mask.shape
    expected = cv2.warpAffine(ortho, to_ortho, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    inside = view.mask > 0
    assert inside.mean() > 0.3
    difference = np.abs(view.image.astype(int) - expected.astype(int))[inside]
    # two resamplings blur the texture a little; a wrong pose or scale gives ~60 levels
    assert difference.mean() < 12.0


def test_nadir_view_coarsens_to_fit_and_refuses_a_sky_view(scene):
    _, camera, frame, _ = scene
    small = nadir_view(frame, camera, world_to_camera(YAW, PITCH), CENTRE[2], GSD, max_px=256)
    assert max(small.mask.shape) <= 256 * 1.01 and small.gsd_m > GSD
    assert small.gsd_m == quantize_up(small.gsd_m, 4)
    assert nadir_view(frame, camera, world_to_camera(YAW, -40.0), CENTRE[2], GSD) is None


def test_frame_pixels_put_the_distortion_back():
    camera = Intrinsics(
        fx=400.0, fy=400.0, cx=320.0, cy=240.0, dist=(-0.2, 0.05, 0.0, 0.0), width=640, height=480
    )
    frame = np.full((480, 640, 3), 128, np.uint8)
    view = nadir_view(frame, camera, world_to_camera(0.0, 90.0), 50.0, 0.2)
    canvas_xy = view.origin_px[None] + np.array([[0.0, 0.0], [100.0, -40.0], [-150.0, 90.0]])
    distorted = view.frame_pixels(canvas_xy)
    ideal = cv2.perspectiveTransform(canvas_xy.reshape(-1, 1, 2), view.canvas_to_frame).reshape(-1, 2)
    np.testing.assert_allclose(camera.undistort_points(distorted), ideal, atol=0.01)  # iterative undistortion
    assert np.linalg.norm(distorted[2] - ideal[2]) > 1.0  # the corner really moved


def test_scaled_view_turns_the_frame_north_up():
    frame = np.zeros((200, 300, 3), np.uint8)
    view = scaled_view(frame, frame_gsd_m=0.5, gsd_m=0.25, heading_deg=90.0)  # the frame's top faces east
    assert view.mask.shape == (600, 400)  # 150 m across, 100 m along the heading (east)
    np.testing.assert_allclose(view.frame_pixels(view.origin_px[None]), [[150.0, 100.0]], atol=1e-9)
    # 10 m east of the frame centre is 20 frame pixels above it
    east = view.origin_px + np.array([10.0 / 0.25, 0.0])
    np.testing.assert_allclose(view.frame_pixels(east[None]), [[150.0, 80.0]], atol=1e-9)


def test_a_view_averages_a_finer_frame_instead_of_sampling_it():
    """Frame noise shrunk 4× keeps at most a quarter of its spread when each canvas pixel averages its
    16 frame pixels; sampled at the canvas pixels' centres it kept all of it (aliasing)."""
    frame = np.random.default_rng(0).normal(128.0, 64.0, (800, 800)).clip(0, 255).astype(np.uint8)
    spread = float(frame.std())
    view = scaled_view(frame, frame_gsd_m=0.05, gsd_m=0.2)
    inner = view.image[view.mask > 0].astype(np.float64)
    assert inner.std() < spread / 4
    coarse = scaled_view(frame, frame_gsd_m=0.05, gsd_m=0.2, detail_m=0.4)  # a 0.4 m/px map's detail
    assert coarse.image.shape == view.image.shape
    assert coarse.image[coarse.mask > 0].std() < 0.85 * inner.std()


def test_averaging_the_frame_moves_nothing_on_the_canvas():
    frame = np.zeros((400, 600), np.uint8)
    frame[100:160, 380:440] = 255  # a bright square centred on frame pixel (409.5, 129.5)
    for detail in (None, 0.3, 0.6):
        view = scaled_view(frame, frame_gsd_m=0.05, gsd_m=0.15, heading_deg=30.0, detail_m=detail)
        weights = view.image.astype(np.float64)
        v, u = np.mgrid[: weights.shape[0], : weights.shape[1]]
        centroid = np.array([(u * weights).sum(), (v * weights).sum()]) / weights.sum()
        np.testing.assert_allclose(view.frame_pixels(centroid[None])[0], [409.5, 129.5], atol=0.1)


def test_window_lattice_holds_the_footprint_of_any_position_in_the_search_circle():
    windows = MapWindows(read=None, verifier=None, factor=1.5)
    footprint = 37.0
    rng = np.random.default_rng(1)
    for _ in range(50):
        x, y, r = rng.uniform(-500, 500), rng.uniform(-500, 500), rng.uniform(0, 120)
        keys = windows.keys_near(x, y, r, footprint, 0.25)
        angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0, r)
        drone = np.array([x + distance * math.cos(angle), y + distance * math.sin(angle)])
        # some candidate window holds the whole footprint around the drone
        held = [np.all(np.abs(drone - k.centre(1.5)) + footprint <= k.half_size(1.5) + 1e-9) for k in keys]
        assert any(held)
    assert windows.keys_for_points([(0.0, 0.0), (1.0, 1.0)], footprint, 0.25) == windows.keys_near(
        0.0, 0.0, 0.0, footprint, 0.25
    )
