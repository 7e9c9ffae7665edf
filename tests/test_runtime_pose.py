"""Where a verified match puts the camera: oblique frames at any heading, with and without the attitude."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _runtime_fixtures import ortho_affine, render_view, textured_ground

from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.locate import LocateConf
from geolink_edge.runtime.pose import PositionOf, place
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.runtime.verify import Verifier, VerifyConf

K = np.array([[400.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])
CAMERA = Intrinsics(400.0, 400.0, 320.0, 240.0, width=640, height=480)
GSD, X0, Y0 = 0.25, 1000.0, 2000.0
AFFINE = ortho_affine(GSD, X0, Y0)
CONF = LocateConf().pose()


@pytest.fixture(scope="module")
def ortho():
    return textured_ground(1600, seed=4)


@pytest.fixture(scope="module")
def verifier():
    return Verifier(VerifyConf(max_side=800))


def _frame(ortho, yaw: float, off_nadir: float, height: float, slope=(0.0, 0.0)):
    """(frame, camera centre) of a camera ``height`` m above the ground below it, looking ``off_nadir``
    degrees from straight down towards ``yaw``, placed so that it sees the middle of the map."""
    forward = np.array([math.sin(math.radians(yaw)), math.cos(math.radians(yaw))])
    look = height * math.tan(math.radians(off_nadir))
    xy = np.array([X0 + 200.0, Y0 - 200.0]) - forward * look
    ground = slope[0] * xy[0] + slope[1] * xy[1]
    centre = np.array([*xy, ground + height])
    frame = render_view(ortho, AFFINE, K, centre, yaw, 90.0 - off_nadir, slope=slope)
    return frame, centre


def _match(verifier, ortho, frame):
    match = verifier.verify(0, verifier.features(frame), verifier.tile_features("map", lambda _: ortho))
    assert match.ok, match.reason
    return match


@pytest.mark.parametrize(
    ("yaw", "off_nadir", "height"), [(0.0, 15.0, 100.0), (130.0, 30.0, 90.0), (250.0, 40.0, 80.0)]
)
def test_an_oblique_frame_gives_the_camera_not_the_ground_it_looks_at(
    ortho, verifier, yaw, off_nadir, height
):
    frame, centre = _frame(ortho, yaw, off_nadir, height)
    match = _match(verifier, ortho, frame)
    placed = place(match, AFFINE, (640, 480), CAMERA, None, CONF)
    assert placed.method == "pnp" and placed.position_of == PositionOf.CAMERA
    assert np.linalg.norm(placed.xy - centre[:2]) < 1.0  # the image centre is ≥ 21 m away
    assert abs(placed.alt - centre[2]) < 1.0
    solved_yaw, pitch, roll = placed.attitude
    assert abs((solved_yaw - yaw + 180) % 360 - 180) < 1.0
    assert abs(pitch - (90.0 - off_nadir)) < 1.0 and abs(roll) < 1.0


def test_a_told_attitude_keeps_the_camera_on_sloping_ground(ortho, verifier):
    """Level-ground PnP tilts the camera to fit a 6 % slope; the told attitude does not."""
    frame, centre = _frame(ortho, 60.0, 25.0, 100.0, slope=(0.06, 0.0))
    match = _match(verifier, ortho, frame)
    told = Telemetry(60.0, 65.0, 0.0, 100.0)
    placed = place(match, AFFINE, (640, 480), CAMERA, told, CONF)
    free = place(match, AFFINE, (640, 480), CAMERA, None, CONF)
    assert placed.method == "nadir" and placed.position_of == PositionOf.CAMERA
    assert np.linalg.norm(placed.xy - centre[:2]) < 1.0
    assert np.linalg.norm(free.xy - centre[:2]) > 2.0  # what PnP alone would have answered
    assert placed.attitude is not None  # PnP's own attitude is still reported


def test_a_solution_far_from_the_told_attitude_is_refused(ortho, verifier):
    frame, centre = _frame(ortho, 200.0, 30.0, 100.0)
    match = _match(verifier, ortho, frame)
    agreeing = place(match, AFFINE, (640, 480), CAMERA, Telemetry(200.0, 62.0, 0.0, 100.0), CONF)
    assert agreeing.method == "nadir" and agreeing.attitude is not None and not agreeing.note
    wrong = Telemetry(200.0, 80.0, 0.0, 100.0)  # 20° off in pitch
    placed = place(match, AFFINE, (640, 480), CAMERA, wrong, CONF)
    assert placed.method == "nadir" and placed.note == "PnP attitude 20° from the told one"
    assert placed.attitude is None and placed.alt is None


def test_without_intrinsics_the_answer_says_it_is_the_image_centre(ortho, verifier):
    frame, centre = _frame(ortho, 90.0, 30.0, 100.0)
    placed = place(_match(verifier, ortho, frame), AFFINE, (640, 480), None, None, CONF)
    assert placed.method == "homography" and placed.position_of == PositionOf.IMAGE_CENTRE
    assert placed.attitude is None and placed.note == "no intrinsics"
    look = (
        np.array([math.sin(math.radians(90.0)), math.cos(math.radians(90.0))])
        * 100.0
        * math.tan(math.radians(30))
    )
    assert np.linalg.norm(placed.xy - (centre[:2] + look)) < 2.0  # where the optical axis meets the ground


@pytest.mark.parametrize("offset_m", [6.0, 12.0])  # beyond vote_m (4 m)
def test_votes_the_homography_disagrees_with_are_no_surer_than_the_disagreement(ortho, verifier, offset_m):
    """The votes' median moved ``offset_m`` from the point the homography puts below the camera: the
    votes answer, with a σ of the larger of ``sigma_votes_m`` and that gap; agreeing votes give the
    homography's point at the floor σ."""
    frame, centre = _frame(ortho, 0.0, 0.0, 100.0)
    match = _match(verifier, ortho, frame)
    told = Telemetry(0.0, 90.0, 0.0, 100.0)
    match.position = centre[:2] + [0.0, 0.5]  # within vote_m of the homography's point
    agreeing = place(match, AFFINE, (640, 480), CAMERA, told, CONF)
    assert agreeing.method == "nadir" and np.sqrt(agreeing.cov[0, 0]) == pytest.approx(CONF.sigma_floor_m)
    match.position = centre[:2] + [offset_m, 0.0]
    placed = place(match, AFFINE, (640, 480), CAMERA, told, CONF)
    gap = np.linalg.norm(placed.xy - agreeing.xy)
    assert placed.method == "votes" and gap == pytest.approx(offset_m, abs=0.5)
    sigma = np.sqrt(placed.cov[0, 0])
    assert sigma == pytest.approx(max(CONF.sigma_votes_m, gap), abs=0.01)
