"""The autopilot's ATTITUDE drives the camera geometry through the mount model.

A body-fixed downward camera (image top to the nose) is flown through level, nose-down, nose-up,
rolled and combined attitudes over a textured ground. Each frame is rendered from the body's
rotation matrix built here by hand; the attitude reaches the locator the way it does in flight —
an ATTITUDE message from a MAVLink peer, turned into camera angles by ``MavlinkSink.telemetry`` —
and the position votes must place the drone within the level-flight bound. The former model
(camera pitch = 90° + body pitch, roll ignored) is run on the same frames for comparison.
"""

from __future__ import annotations

import math
import socket
import time

import cv2
import numpy as np
import pytest
from _runtime_fixtures import ortho_affine, textured_ground

from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.mount import BodyAttitude, CameraMount, world_to_camera
from geolink_edge.runtime.pose import ground_offsets, nadir_pixel
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.runtime.verify import Verifier

K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])
CAMERA = Intrinsics(520.0, 520.0, 320.0, 240.0, width=640, height=480)
GSD, X0, Y0 = 0.25, 1000.0, 2000.0
HEIGHT = 80.0
LEVEL_BOUND_M = 1.0  # the level-flight bound of the votes test in test_runtime_geometry.py
# (name, body roll, body pitch) in degrees; MAVLink's sense: pitch positive nose up, roll right wing down
SEGMENTS = [
    ("level", 0.0, 0.0),
    ("nose down 10", 0.0, -10.0),
    ("nose up 10", 0.0, 10.0),
    ("roll right 10", 10.0, 0.0),
    ("roll left 10", -10.0, 0.0),
    ("nose down 8, roll 8", 8.0, -8.0),
]


def render(ortho: np.ndarray, centre: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """What a pinhole camera with world→camera ``rotation`` at ``centre`` sees of level ground."""
    plane_to_offset = np.array([[1.0, 0.0, -centre[0]], [0.0, 1.0, -centre[1]], [0.0, 0.0, -centre[2]]])
    pixel_to_ground = np.vstack([ortho_affine(GSD, X0, Y0), [0.0, 0.0, 1.0]])
    return cv2.warpPerspective(ortho, K @ rotation @ plane_to_offset @ pixel_to_ground, (640, 480))


def locate(verifier, tile, frame, telemetry: Telemetry) -> tuple[float | None, float | None]:
    """(votes error, nadir-through-homography error) in metres; None where no fix."""
    features = verifier.features(frame)
    result = verifier.verify_by_votes(
        7, features, tile, ground_offsets(CAMERA, telemetry, features.xy), ortho_affine(GSD, X0, Y0)
    )
    if not result.ok:
        return None, None
    return result.position, result.homography


def body_to_camera_by_hand(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """World (east, north, up) → OpenCV camera of a downward camera, image top to the nose, on a
    body at these ZYX angles (degrees) — built from elementary rotations, not from the mount model."""
    r, p, y = (math.radians(a) for a in (roll, pitch, yaw))
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    enu_to_ned = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])
    body_to_camera = np.array(
        [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]
    )  # rows: right = wing, down = tail, forward = belly
    return body_to_camera @ (rz @ ry @ rx).T @ enu_to_ned


@pytest.fixture(scope="module")
def autopilot():
    """A MAVLink peer playing the autopilot, and the sink that listens to it."""
    pytest.importorskip("pymavlink")
    from geolink_edge.runtime.mavlink import MavlinkSink, load_mavutil

    mavutil = load_mavutil()  # the runtime's own loader: MAVLink 2, as the sink speaks it

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    peer = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}", source_system=1, source_component=1)
    sink = MavlinkSink(f"udpout:127.0.0.1:{port}", mount=CameraMount("body", 90.0))
    peer.recv_match(type="HEARTBEAT", blocking=True, timeout=5.0)  # the peer learns the sink's address
    yield peer, sink
    sink.close()
    peer.close()


def telemetry_from_attitude(peer, sink, roll: float, pitch: float, yaw: float) -> Telemetry:
    """Send ATTITUDE and height as the autopilot would, until the sink reports that attitude."""
    sent = [math.radians(a) for a in (roll, pitch, yaw)]
    deadline = time.time() + 5.0
    while time.time() < deadline:
        peer.mav.attitude_send(0, *sent, 0.0, 0.0, 0.0)
        peer.mav.global_position_int_send(0, 0, 0, 0, int(HEIGHT * 1000), 0, 0, 0, 0)
        time.sleep(0.05)
        body, telemetry = sink.body_attitude(), sink.telemetry()
        if body is not None and np.allclose((body.roll, body.pitch, body.yaw), sent, atol=1e-6):
            if telemetry is not None and telemetry.altitude is not None:
                return telemetry
    raise AssertionError("the sink never reported the attitude sent")


@pytest.fixture(scope="module")
def flight(autopilot):
    ortho = textured_ground(800)
    verifier = Verifier()
    tile = verifier.features(ortho)
    rows = []
    for i, (name, roll, pitch) in enumerate(SEGMENTS):
        centre = np.array([X0 + 90.0 + 4.0 * i, Y0 - 110.0 + 2.0 * i, HEIGHT])
        frame = render(ortho, centre, body_to_camera_by_hand(roll, pitch, 35.0))
        telemetry = telemetry_from_attitude(*autopilot, roll, pitch, 35.0)
        assert np.allclose(
            world_to_camera(telemetry.yaw, telemetry.pitch, telemetry.roll),
            body_to_camera_by_hand(roll, pitch, 35.0),
            atol=1e-6,
        )
        errors = {}
        models = {
            "mount": telemetry,
            "former": Telemetry(35.0, 90.0 + pitch, None, HEIGHT),  # pitch sign flipped, roll ignored
        }
        for model, telemetry in models.items():
            position, homography = locate(verifier, tile, frame, telemetry)
            errors[model] = None if position is None else float(np.linalg.norm(position - centre[:2]))
            if model == "mount":
                nadir = nadir_pixel(CAMERA, telemetry)
                below = None
                if nadir is not None and homography is not None:
                    ground = homography @ np.r_[nadir, 1.0]
                    below = ortho_affine(GSD, X0, Y0) @ np.r_[ground[:2] / ground[2], 1.0]
                errors["nadir"] = None if below is None else float(np.linalg.norm(below - centre[:2]))
        rows.append((name, errors))
    print("\nsegment               votes (m)   nadir (m)   former model (m)")
    for name, e in rows:
        cells = [f"{e[k]:.2f}" if e[k] is not None else "no fix" for k in ("mount", "nadir", "former")]
        print(f"{name:<20} {cells[0]:>9} {cells[1]:>11} {cells[2]:>18}")
    return dict(rows)


@pytest.mark.parametrize("segment", [name for name, _, _ in SEGMENTS])
def test_attitude_segments_stay_within_the_level_bound(flight, segment):
    errors = flight[segment]
    assert errors["mount"] is not None and errors["nadir"] is not None, f"{segment}: no fix"
    assert errors["mount"] < LEVEL_BOUND_M and errors["nadir"] < LEVEL_BOUND_M


@pytest.mark.parametrize("segment", ["nose down 10", "nose up 10", "roll right 10", "nose down 8, roll 8"])
def test_the_former_camera_model_was_metres_off(flight, segment):
    former = flight[segment]["former"]
    assert former is not None and former > 5.0  # it still fixes, metres off: an error it could not see


def test_mount_composition_by_hand():
    mount = CameraMount("body", 90.0)
    level = mount.camera(BodyAttitude(0.0, 0.0, math.radians(35.0)))
    assert np.allclose(level[:2], (35.0, 90.0))
    # nose down 10°: the axis looks 10° behind the vertical
    yaw, pitch, roll = mount.camera(BodyAttitude(0.0, math.radians(-10.0), 0.0))
    assert (yaw, pitch, abs(roll)) == (pytest.approx(180.0), pytest.approx(80.0), pytest.approx(180.0))
    # right wing down 10°: the axis swings 10° to the left of the nose (heading 0 → looks west)
    yaw, pitch, roll = mount.camera(BodyAttitude(math.radians(10.0), 0.0, 0.0))
    assert (yaw, pitch) == (pytest.approx(270.0), pytest.approx(80.0))
    # a camera looking along the nose takes the body's roll as its own
    forward = CameraMount("body", 0.0)
    assert np.allclose(
        forward.camera(BodyAttitude(math.radians(5.0), 0.0, math.radians(90.0))), (90.0, 0.0, 5.0)
    )
    # what the camera sees 80 m below when the nose is 10° down: the image centre lies behind the drone
    telemetry = Telemetry(180.0, 80.0, 180.0, 80.0)
    centre_offset = ground_offsets(CAMERA, telemetry, np.array([[320.0, 240.0]]))[0]
    assert np.allclose(centre_offset, [0.0, -80.0 * math.tan(math.radians(10.0))], atol=1e-9)


@pytest.mark.parametrize(
    "text, expected", [("body", ("body", 90.0, 0.0, 0.0)), ("gimbal:75:5", ("gimbal", 75.0, 5.0, 0.0))]
)
def test_mount_parse(text, expected):
    mount = CameraMount.parse(text)
    assert (mount.kind, mount.pitch, mount.yaw, mount.roll) == expected


@pytest.mark.parametrize("text", ["wing", "body:x", "body:1:2:3:4", "gimbal:nan"])
def test_bad_mounts_are_one_line_errors(text):
    from geolink_edge.errors import GeolinkError

    with pytest.raises(GeolinkError, match="--mount"):
        CameraMount.parse(text)


def test_the_frames_top_points_to_the_nose_whatever_the_tilt():
    """A nose-down body camera looks backward (camera yaw + 180°, roll 180°): its image top still
    points to the nose, which is the heading a fix reports."""
    from geolink_edge.runtime.pose import heading_from_rotation

    for roll, pitch in ((0.0, 0.0), (0.0, -10.0), (0.0, 10.0), (10.0, 0.0), (8.0, -8.0)):
        camera = CameraMount("body", 90.0).camera(BodyAttitude(math.radians(roll), math.radians(pitch), 1.0))
        heading = heading_from_rotation(world_to_camera(*camera))
        assert abs((heading - math.degrees(1.0) + 180.0) % 360.0 - 180.0) < 2.0


def test_roll_turns_the_image_about_the_optical_axis():
    """docs/artifacts.md: rows cos φ·right + sin φ·down, cos φ·down − sin φ·right, forward."""
    level, rolled = world_to_camera(30.0, 70.0), world_to_camera(30.0, 70.0, 20.0)
    c, s = math.cos(math.radians(20.0)), math.sin(math.radians(20.0))
    assert np.allclose(rolled, [c * level[0] + s * level[1], c * level[1] - s * level[0], level[2]])
