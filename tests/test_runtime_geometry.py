"""Runtime geometry: intrinsics files, local-feature verification, planar PnP, the track filter."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from _runtime_fixtures import ortho_affine, render_view, textured_ground

from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.filter import FilterConf, TrackFilter
from geolink_edge.runtime.intrinsics import load_intrinsics
from geolink_edge.runtime.pose import heading_from_rotation, planar_pnp
from geolink_edge.runtime.verify import Verifier, VerifyConf

K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])
GSD, X0, Y0 = 0.25, 1000.0, 2000.0


@pytest.fixture(scope="module")
def ortho():
    return textured_ground(800)


def _view(ortho, centre, yaw, pitch=90.0):
    return render_view(ortho, ortho_affine(GSD, X0, Y0), K, centre, yaw, pitch)


def test_ros_and_opencv_yaml_give_the_same_camera(tmp_path):
    ros = tmp_path / "ros.yaml"
    ros.write_text(
        "image_width: 640\nimage_height: 480\ncamera_name: cam\n"
        "camera_matrix: {rows: 3, cols: 3, data: [520, 0, 320, 0, 521, 240, 0, 0, 1]}\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients: {rows: 1, cols: 5, data: [0.1, -0.05, 0, 0, 0]}\n"
    )
    ocv = tmp_path / "ocv.yaml"
    ocv.write_text(
        "%YAML:1.0\n---\nimage_width: 640\nimage_height: 480\n"
        "camera_matrix: !!opencv-matrix\n   rows: 3\n   cols: 3\n   dt: d\n"
        "   data: [ 520., 0., 320., 0., 521., 240., 0., 0., 1. ]\n"
        "distortion_coefficients: !!opencv-matrix\n   rows: 1\n   cols: 5\n   dt: d\n"
        "   data: [ 0.1, -0.05, 0., 0., 0. ]\n"
    )
    a, b = load_intrinsics(ros), load_intrinsics(ocv)
    assert a == b
    assert (a.fx, a.fy, a.cx, a.cy, a.width) == (520.0, 521.0, 320.0, 240.0, 640)
    half = a.for_size(320, 240)
    assert (half.fx, half.cy) == (260.0, 120.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("camera_matrix: {data: [1, 2, 3]}\n", "3 values, expected 9"),
        ("camera_matrix: [oops\n", "line"),
        ("fx: 0\nfy: 1\ncx: 1\ncy: 1\n", "positive"),
        ("just text\n", "mapping"),
    ],
)
def test_bad_intrinsics_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "cam.yaml"
    path.write_text(text)
    with pytest.raises(GeolinkError, match=message) as err:
        load_intrinsics(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def _match(ortho, frame, name="sift"):
    verifier = Verifier(VerifyConf(features=name))
    tile = verifier.features(ortho)
    return verifier.verify(7, verifier.features(frame), tile)


@pytest.mark.parametrize("name", ["sift", "orb"])
def test_verification_recovers_the_warp(ortho, name):
    frame = _view(ortho, (X0 + 100, Y0 - 100, 90.0), yaw=35.0)
    result = _match(ortho, frame, name=name)
    assert result.ok, result.reason
    assert result.inliers >= 40
    # the homography maps the frame centre to the ground point under a nadir camera
    centre = result.homography @ np.array([320.0, 240.0, 1.0])
    u, v = centre[:2] / centre[2]
    assert math.hypot(X0 + GSD * u - (X0 + 100), Y0 - GSD * v - (Y0 - 100)) < 1.0


def test_an_unrelated_image_is_rejected(ortho):
    other = textured_ground(600, seed=5)[:480, :640]
    result = _match(ortho, other)
    assert not result.ok and ("too few" in result.reason or "degenerate" in result.reason)


def test_ground_offsets_follow_the_camera_convention():
    from geolink_edge.runtime.intrinsics import Intrinsics
    from geolink_edge.runtime.pose import ground_offsets
    from geolink_edge.runtime.sources import Telemetry

    camera = Intrinsics(100.0, 100.0, 50.0, 50.0)
    east = Telemetry(yaw=90.0, pitch=90.0, altitude=100.0)  # nadir, image top towards the east
    pixels = np.array([[50.0, 50.0], [50.0, 0.0], [150.0, 50.0]])
    # centre: straight below; top edge: 50 m ahead (east); 100 px right of centre: 100 m to the right (south)
    assert np.allclose(
        ground_offsets(camera, east, pixels), [[0.0, 0.0], [50.0, 0.0], [0.0, -100.0]], atol=1e-9
    )
    oblique = Telemetry(yaw=0.0, pitch=10.0, altitude=100.0)
    offsets = ground_offsets(camera, oblique, np.array([[50.0, 50.0], [50.0, 0.0]]))
    assert np.allclose(offsets[0], [0.0, 100.0 / math.tan(math.radians(10.0))])  # cot(pitch) ahead
    assert np.all(np.isnan(offsets[1]))  # 26.6° up from a 10° pitch: above the horizon


def test_consensus_keeps_the_agreeing_votes_only():
    from geolink_edge.runtime.verify import consensus

    rng = np.random.default_rng(3)
    truth = np.array([120.0, -40.0])
    agreeing = truth + rng.normal(0.0, 1.0, (9, 2))
    scattered = rng.uniform(-200.0, 200.0, (60, 2))
    votes = np.r_[scattered[:30], agreeing, scattered[30:]]
    mask = consensus(votes, 4.0)
    assert np.array_equal(np.flatnonzero(mask), np.arange(30, 39))
    assert consensus(np.zeros((0, 2)), 4.0).shape == (0,)


def test_the_vote_bar_is_twice_chance_or_chance_plus_four_sigmas():
    """Random matches within a 10 m prior land in one 4-m vote circle at a share of (4 / 14)²: the
    bar is twice what chance puts there, or chance plus 4 of its Poisson σ when that is less."""
    share = (4.0 / 14.0) ** 2
    verifier = Verifier(VerifyConf())
    assert verifier._over_chance(148, 10.0) == math.ceil(2 * 148 * share) == 25  # few matches: 2×
    chance = 423 * share  # 34.5: twice is 69.1, chance + 4σ 58.0
    assert verifier._over_chance(423, 10.0) == math.ceil(chance + 4 * math.sqrt(chance)) == 59
    assert Verifier(VerifyConf(over_chance_sigmas=0))._over_chance(423, 10.0) == 70


def test_the_votes_homography_leaves_out_near_misses():
    """40 matches on a known homography and 10 that still agree as votes, 2–3.5 m off to one side
    (roofs leaning away from the camera): least squares on all of them moves the frame centre's
    ground point by decimetres; fitted on what lies within 0.5 m it stays within a centimetre."""
    rng = np.random.default_rng(0)
    truth = np.array([[0.9, -0.1, 40.0], [0.12, 1.05, 25.0], [1e-4, -5e-5, 1.0]])
    src = rng.uniform(0, 640, (50, 2))
    dst = cv2.perspectiveTransform(src.reshape(-1, 1, 2), truth).reshape(-1, 2)
    gsd = 0.25  # m per tile pixel
    turn = rng.uniform(0.0, 0.5, 10)
    dst[40:] += (rng.uniform(2.0, 3.5, 10) / gsd)[:, None] * np.c_[np.cos(turn), np.sin(turn)]
    to_ground = np.array([[gsd, 0.0, 0.0], [0.0, -gsd, 0.0]])
    centre = np.array([[[320.0, 240.0]]])
    expected = cv2.perspectiveTransform(centre, truth)[0, 0]

    def miss_m(refine_m: float) -> float:
        fitted = Verifier(VerifyConf(homography_refine_m=refine_m))._votes_homography(src, dst, to_ground)
        return float(np.hypot(*(cv2.perspectiveTransform(centre, fitted)[0, 0] - expected))) * gsd

    assert miss_m(0.5) < 0.01
    assert miss_m(0.0) > 0.15


def test_votes_find_the_camera_where_few_matches_are_right(ortho):
    """Two of every three matches are wrong: the votes still place the camera within a metre."""
    from geolink_edge.runtime.intrinsics import Intrinsics
    from geolink_edge.runtime.pose import ground_offsets
    from geolink_edge.runtime.sources import Telemetry
    from geolink_edge.runtime.verify import Features

    centre = np.array([X0 + 90.0, Y0 - 110.0, 80.0])
    frame = _view(ortho, centre, yaw=35.0)
    verifier = Verifier()
    frame_features = verifier.features(frame)
    tile = verifier.features(ortho)
    offsets = ground_offsets(
        Intrinsics(520.0, 520.0, 320.0, 240.0),
        Telemetry(yaw=35.0, pitch=90.0, altitude=80.0),
        frame_features.xy,
    )
    affine = ortho_affine(GSD, X0, Y0)
    clean = verifier.verify_by_votes(7, frame_features, tile, offsets, affine)
    assert clean.ok and clean.inliers >= 40
    assert np.linalg.norm(clean.position - centre[:2]) < 1.0
    # shuffle the descriptors of two frame keypoints in three: their matches land anywhere
    rng = np.random.default_rng(0)
    spoiled = frame_features.descriptors.copy()
    wrong = rng.permutation(len(spoiled))[: 2 * len(spoiled) // 3]
    spoiled[wrong] = spoiled[rng.permutation(wrong)]
    noisy = Features(frame_features.xy, spoiled, frame_features.size)
    result = verifier.verify_by_votes(7, noisy, tile, offsets, affine)
    assert result.ok and np.linalg.norm(result.position - centre[:2]) < 1.0
    # told a height 50 % too high, only the matches near the nadir still agree
    lifted = ground_offsets(
        Intrinsics(520.0, 520.0, 320.0, 240.0),
        Telemetry(yaw=35.0, pitch=90.0, altitude=120.0),
        frame_features.xy,
    )
    assert verifier.verify_by_votes(7, frame_features, tile, lifted, affine).inliers < clean.inliers / 3


def test_similarity_fit_recovers_height_and_yaw_error():
    """Offsets told for a camera 25 % lower and 4° off in yaw, 40 % of matches wrong: the fit puts the
    camera within centimetres and keeps exactly the true matches; a 2× height error is refused."""
    from geolink_edge.runtime.verify import consensus, fit_similarity

    rng = np.random.default_rng(3)
    camera = np.array([512.0, -230.0])
    offsets = rng.uniform(-30.0, 30.0, (100, 2))
    turn = math.radians(4.0)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    ground = camera + 1.25 * offsets @ rotation.T
    wrong = rng.permutation(100)[:40]
    ground[wrong] = camera + rng.uniform(-60.0, 60.0, (40, 2))
    position, members = fit_similarity(offsets, ground, 4.0, 1.4, math.radians(10.0))
    assert np.linalg.norm(position - camera) < 0.05
    assert set(members) == set(range(100)) - set(wrong)
    # one-point votes at the told scale agree on a small group and miss the camera by metres
    shifted = consensus(ground - offsets, 4.0)
    assert (
        shifted.sum() < 40 and np.linalg.norm(np.median((ground - offsets)[shifted], axis=0) - camera) > 1.0
    )
    doubled = camera + 2.0 * offsets
    assert fit_similarity(offsets, doubled, 4.0, 1.4, math.radians(10.0)) is None


def test_votes_place_a_camera_higher_than_told(ortho):
    """Told 60 m where the camera is 75 m above the ground (a take-off point above the valley): the
    similarity votes find it within a metre, the one-point votes do not."""
    from geolink_edge.runtime.intrinsics import Intrinsics
    from geolink_edge.runtime.pose import ground_offsets
    from geolink_edge.runtime.sources import Telemetry

    centre = np.array([X0 + 90.0, Y0 - 110.0, 75.0])
    frame = _view(ortho, centre, yaw=35.0)
    camera = Intrinsics(520.0, 520.0, 320.0, 240.0)
    results = {}
    for model in ("shift", "similarity"):
        verifier = Verifier(VerifyConf(vote_model=model))
        frame_features = verifier.features(frame)
        offsets = ground_offsets(camera, Telemetry(yaw=35.0, pitch=90.0, altitude=60.0), frame_features.xy)
        results[model] = verifier.verify_by_votes(
            7, frame_features, verifier.features(ortho), offsets, ortho_affine(GSD, X0, Y0)
        )
    assert results["similarity"].ok and np.linalg.norm(results["similarity"].position - centre[:2]) < 1.0
    assert results["similarity"].inliers > 2 * results["shift"].inliers
    assert not results["shift"].ok or np.linalg.norm(results["shift"].position - centre[:2]) > 1.0
    # guided by a prior 8 m off: the same camera; by a prior 60 m off: no match can agree
    tile = verifier.features(ortho)
    guided = [
        verifier.verify_by_votes(7, frame_features, tile, offsets, ortho_affine(GSD, X0, Y0), prior=prior)
        for prior in ((centre[0] + 8.0, centre[1], 10.0), (centre[0] + 60.0, centre[1], 10.0))
    ]
    assert guided[0].ok and np.linalg.norm(guided[0].position - centre[:2]) < 1.0
    assert not guided[1].ok and guided[1].reason.startswith("too few")


def test_guided_matching_keeps_the_pair_in_reach():
    """A prior that lets each frame keypoint match only nearby tile keypoints: each takes its nearest
    partner in reach, not the nearer look-alike elsewhere, and none when its two partners in reach
    look the same."""
    from geolink_edge.runtime.features.sift import Extractor
    from geolink_edge.runtime.matchers.base import Reach
    from geolink_edge.runtime.matchers.nn import Matcher
    from geolink_edge.runtime.verify import Features

    tile = Features(np.zeros((5, 2), np.float32), np.eye(5, 8, dtype=np.float32), (10, 10))
    frame_descriptors = np.array(
        [[1.0, 0, 0, 0, 0, 0, 0, 0], [0, 0.9, 0.1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0, 0, 0, 0]], np.float32
    )
    frame = Features(np.zeros((3, 2), np.float32), frame_descriptors, (10, 10))
    ground = np.array([[0.0, 0.0], [50.0, 0.0], [100.0, 0.0], [102.0, 0.0], [300.0, 300.0]])
    # frame 0: its twin (tile 0) is out of reach and tiles 2, 3 are equally far; frame 1: only tiles 1
    # and 2 are in reach (its twin, tile 1, and a look-alike); frame 2: nothing is in reach
    reach = Reach(np.array([[101.0, 0.0], [75.0, 0.0], [200.0, 0.0]]), np.array([5.0, 30.0, 10.0]), ground)
    query, train = Matcher(Extractor(100)).match(frame, tile, reach=reach)
    assert query.tolist() == [1] and train.tolist() == [1]
    assert reach.allows(np.array([0, 0, 1, 2]), np.array([0, 3, 2, 4])).tolist() == [False, True, True, False]


@pytest.mark.parametrize("guided", [True, False])
def test_matching_between_aligned_views_keeps_only_alike_shapes(guided):
    """North-up views at one GSD: a frame keypoint (orientation 5°, size 4 px) skips a nearer tile
    keypoint turned 30° and one of 2.5× its size, and takes the one at 350° (15° away across north),
    guided by a prior or not; the shape codes of a window's part are computed once, from the whole."""
    from geolink_edge.runtime.features.sift import Extractor
    from geolink_edge.runtime.matchers.base import Reach
    from geolink_edge.runtime.matchers.nn import Matcher
    from geolink_edge.runtime.verify import Features

    descriptors = np.array([[1.0, 0.0], [1.0, 0.05], [1.0, 0.1], [1.0, 0.4], [0.0, 1.0]], np.float32)
    window = Features(np.zeros((6, 2), np.float32), np.r_[descriptors, [[9.0, 9.0]]], (10, 10))
    window.shapes = np.array(
        [[35.0, 4.0], [5.0, 10.0], [350.0, 4.5], [5.0, 4.0], [5.0, 4.0], [0, 1]], np.float32
    )
    tile = window.part(np.arange(5))
    assert window.codes is not None and tile.codes[0] is not window.codes[0]
    assert np.allclose(tile.codes[0][2], [np.cos(np.radians(350.0)), np.sin(np.radians(350.0))])
    frame = Features(np.zeros((2, 2), np.float32), np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), (10, 10))
    frame.shapes = np.array([[5.0, 4.0], [5.0, 4.0]], np.float32)
    matcher = Matcher(Extractor(100))
    if guided:  # the second frame keypoint is out of reach of everything (a negative radius)
        reach = Reach(np.zeros((2, 2)), np.array([10.0, -1.0]), np.zeros((5, 2)))
        query, train = matcher.match(frame, tile, aligned=True, reach=reach)
        assert query.tolist() == [0] and train.tolist() == [2]  # tile 3 (5°, 4 px) is next, but 4× farther
    else:  # the nearest alike of each frame keypoint among its nearest neighbours, no ratio test
        matcher.prepare(tile)
        query, train = matcher.match(frame, tile, aligned=True)
        assert query.tolist() == [0, 1] and train.tolist() == [2, 4]


def test_degenerate_homographies_are_named():
    verifier = Verifier()
    pts = np.random.default_rng(0).uniform(0, 400, (50, 2))
    mirror = np.diag([-1.0, 1.0, 1.0])
    assert verifier.degenerate(mirror, pts, (640, 480)) == "mirror image"
    assert verifier.degenerate(np.diag([20.0, 20.0, 1.0]), pts, (640, 480)).startswith("scale")
    assert verifier.degenerate(np.diag([3.0, 0.5, 1.0]), pts, (640, 480)).startswith("shear")
    clump = 200.0 + pts / 40.0  # 50 inliers inside a 10-pixel square
    assert verifier.degenerate(np.eye(3), clump, (640, 480)) == "inliers bunched in one spot"
    assert verifier.degenerate(np.eye(3), pts, (640, 480)) == ""


@pytest.mark.parametrize("yaw, pitch", [(0.0, 90.0), (120.0, 90.0), (250.0, 78.0)])
def test_planar_pnp_finds_the_camera_not_the_footprint(ortho, yaw, pitch):
    centre = np.array([X0 + 95.0, Y0 - 105.0, 80.0])
    frame = _view(ortho, centre, yaw, pitch)
    match = _match(ortho, frame)
    assert match.ok, match.reason
    ground = np.c_[
        match.tile_xy @ ortho_affine(GSD, X0, Y0)[:, :2].T + (X0, Y0), np.zeros(len(match.tile_xy))
    ]
    from geolink_edge.runtime.intrinsics import Intrinsics

    pose, why = planar_pnp(match.frame_xy, ground, Intrinsics(520.0, 520.0, 320.0, 240.0), 3.0)
    assert pose is not None, why
    assert np.linalg.norm(pose.centre - centre) < 1.0  # metres, camera 80 m up
    assert abs((pose.heading - yaw + 180) % 360 - 180) < 1.0
    assert np.all(np.linalg.eigvalsh(pose.cov) > 0) and np.sqrt(np.trace(pose.cov)) < 1.0
    if pitch < 90:  # the footprint centre lies ahead of the drone: a tile-centre answer would be far off
        from _runtime_fixtures import world_to_camera

        forward = world_to_camera(yaw, pitch)[2]
        footprint = centre - forward * centre[2] / forward[2]
        assert np.linalg.norm(footprint[:2] - centre[:2]) > 10.0


def test_known_attitude_beats_pnp_on_sloping_ground(ortho):
    """Level-ground PnP tilts the camera to fit a slope and slides sideways; the nadir ray does not."""
    from geolink_edge.runtime.intrinsics import Intrinsics
    from geolink_edge.runtime.pose import nadir_pixel
    from geolink_edge.runtime.sources import Telemetry

    centre = np.array([X0 + 100.0, Y0 - 100.0, 0.08 * (X0 + 100.0) + 90.0])  # 90 m above an 8 % slope
    frame = render_view(ortho, ortho_affine(GSD, X0, Y0), K, centre, 40.0, 90.0, slope=(0.08, 0.0))
    match = _match(ortho, frame)
    assert match.ok, match.reason
    camera = Intrinsics(520.0, 520.0, 320.0, 240.0, width=640, height=480)
    affine = ortho_affine(GSD, X0, Y0)
    ground = np.c_[match.tile_xy @ affine[:, :2].T + affine[:, 2], np.zeros(len(match.tile_xy))]
    pose, _ = planar_pnp(match.frame_xy, ground, camera, 3.0)
    nadir = nadir_pixel(camera, Telemetry(yaw=40.0, pitch=90.0))
    assert np.allclose(nadir, (320.0, 240.0))
    below = match.homography @ np.r_[nadir, 1.0]
    xy = affine[:, :2] @ (below[:2] / below[2]) + affine[:, 2]
    assert np.linalg.norm(xy - centre[:2]) < 1.0
    assert np.linalg.norm(pose.centre[:2] - centre[:2]) > 4.0


def test_heading_matches_the_camera_convention():
    from _runtime_fixtures import world_to_camera

    for yaw in (0.0, 45.0, 181.0, 300.0):
        assert abs(heading_from_rotation(world_to_camera(yaw, 70.0)) - yaw) < 1e-9


def test_filter_tracks_gates_coasts_and_loses():
    f = TrackFilter(FilterConf(max_misses=3, confirm=2))
    r = np.eye(2) * 4.0
    assert f.update(0.0, [0.0, 0.0], r).status == "acquiring"
    assert f.update(1.0, [10.0, 0.0], r).status == "accepted"  # two agreeing fixes start the track
    for t in range(2, 8):
        assert f.update(float(t), [10.0 * t, 0.0], r).status == "accepted"
    assert abs(f.velocity[0] - 10.0) < 1.0
    outlier = f.update(8.0, [80.0, 300.0], r)
    assert outlier.status == "gated" and outlier.mahalanobis2 > 100
    before = np.trace(f.covariance[:2, :2])
    assert f.miss(9.0).status == "coasting"
    assert np.trace(f.covariance[:2, :2]) > before  # coasting grows the uncertainty
    x, y, radius = f.search_region(10.0)
    assert abs(x - 100.0) < 3.0 and radius >= 10.0
    assert f.miss(10.0).status == "lost" and f.search_region(11.0) is None


def _straight_track(conf: FilterConf) -> TrackFilter:
    """A track flying east at 10 m/s for 8 s, a fix each half second (σ 2 m)."""
    f = TrackFilter(conf)
    for i in range(17):
        f.update(i / 2, [5.0 * i, 0.0], np.eye(2) * 4.0)
    assert f.tracking and abs(f.velocity[0] - 10.0) < 1.0
    return f


def test_gated_fixes_in_a_row_that_agree_restart_the_track():
    """A sharp turn north: the prediction runs on east, the next two fixes are gated, and agreeing
    with each other they start the track again there (a discontinuity, counted)."""
    f = _straight_track(FilterConf())
    r = np.eye(2) * 4.0
    turned = [f.update(8.0 + k / 2, [80.0 + 0.5, 20.0 + 5.0 * k], r) for k in range(2)]
    assert turned[0].status == "gated" and turned[0].mahalanobis2 > 13.816
    assert turned[1].status == "accepted" and turned[1].mahalanobis2 > 13.816
    assert np.allclose(f.position, [80.5, 25.0]) and f.velocity[1] > 5.0 and f.resets == 1
    assert f.update(9.0, [80.5, 30.0], r).status == "accepted"  # the new track follows on north


@pytest.mark.parametrize("between", ["miss", "accepted"])
def test_gated_fixes_restart_nothing_unless_in_a_row(between):
    f = _straight_track(FilterConf())
    r = np.eye(2) * 4.0
    assert f.update(8.5, [85.0, 40.0], r).status == "gated"
    if between == "miss":
        assert f.miss(9.0).status == "coasting"
    else:
        assert f.update(9.0, [90.0, 0.0], r).status == "accepted"
    assert f.update(9.5, [95.0, 45.0], r).status == "gated"
    assert f.resets == 0 and abs(f.position[1]) < 5.0
    off = _straight_track(FilterConf(restart_after_gated=0))
    assert [off.update(8.0 + k / 2, [80.0, 20.0 + 5.0 * k], r).status for k in range(3)] == ["gated"] * 3


def test_a_lost_track_leaves_where_to_look_again():
    """After a loss the predicted area of the lost track, growing with time, is where to search."""
    f = _straight_track(FilterConf(max_misses=3))
    assert f.lost_region(9.0) is None  # still tracking
    for t in (8.5, 9.0, 9.5):
        status = f.miss(t).status
    assert status == "lost" and f.search_region(10.0) is None
    x, y, radius = f.lost_region(10.0)
    assert abs(x - 100.0) < 3.0 and abs(y) < 3.0  # the lost track flown on at 10 m/s
    assert f.lost_region(14.0)[2] > 2 * radius > 0
    f.update(10.5, [105.0, 0.0], np.eye(2))
    assert f.pending()[0] == 10.5 and f.lost_region(11.0) is not None


def test_filter_does_not_start_on_disagreeing_fixes():
    f = TrackFilter(FilterConf(confirm=2, max_speed=20.0))
    r = np.eye(2)
    assert f.update(0.0, [0.0, 0.0], r).status == "acquiring"
    assert f.update(0.5, [500.0, 0.0], r).status == "acquiring"  # 1 km/s apart: not the same drone
    assert f.update(1.0, [505.0, 0.0], r).status == "accepted"
    assert abs(f.position[0] - 505.0) < 1e-6
