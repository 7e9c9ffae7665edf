"""The drone's position from a verified match: the camera's centre whenever the intrinsics are known.

Which point a verification gives (:func:`place`; ``position_of`` in the fix says which it is):

- intrinsics, no attitude told: the camera centre from planar PnP on the verified matches
  (``pnp``), RANSAC first (roofs and trees displaced by parallax, near misses);
- intrinsics and attitude told: the pixel straight below the camera (by the told attitude) through
  the verified homography (``nadir``), or the votes' median when the two disagree (``votes``):
  exact on sloping ground, where level-ground PnP tilts the camera to fit the slope and slides
  sideways. PnP still solves the pose, the told attitude picking between the two poses a plane
  allows; its attitude and height are reported when they agree with the told attitude within
  ``max_attitude_gap_deg``, and a PnP solution farther off is refused (a prior the solution must
  agree with: on synthetic oblique flights such solutions were bunched matches, tens of metres off);
- no intrinsics, or PnP refused and no attitude told: the ground point at the image centre
  through the homography (``homography``, ``position_of: image_centre``), moved back along the
  heading by ``altitude · cot(pitch)`` when pitch and height are told (then ``camera``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from geolink_edge.runtime.intrinsics import Intrinsics
from geolink_edge.runtime.mount import ENU_TO_NED, FRD_TO_OPENCV, camera_angles, world_to_camera
from geolink_edge.runtime.sources import Telemetry
from geolink_edge.runtime.verify import Verification


class PositionOf(str, Enum):
    CAMERA = "camera"  # the point below the camera
    IMAGE_CENTRE = "image_centre"  # the ground the image centre sees (the camera unknown)


@dataclass(frozen=True)
class PoseConf:
    max_reproj_px: float  # PnP RMS reprojection error (of its RANSAC inliers) beyond which it is refused
    pnp_ransac_px: float  # matches farther than this from a RANSAC pose are left out of PnP
    max_attitude_gap_deg: float  # a PnP solution farther than this from a told attitude is refused
    sigma_floor_m: float  # georeferencing and terrain error not seen by the residuals
    sigma_homography_m: float  # no PnP, attitude known
    sigma_votes_m: float  # the position votes' median
    sigma_nadir_m: float  # no PnP or attitude (a nadir guess)
    vote_m: float  # votes within this distance agree


@dataclass
class Placement:
    """Where a verified match puts the drone."""

    method: str  # "pnp", "nadir", "votes" or "homography"
    xy: np.ndarray
    cov: np.ndarray  # 2×2 (east, north) m²
    heading: float  # degrees clockwise from north of the frame's top
    alt: float | None  # camera height above the ground plane (PnP only)
    position_of: PositionOf = PositionOf.CAMERA
    attitude: tuple[float, float, float] | None = None  # solved camera (yaw, pitch, roll), PnP only
    note: str = ""  # why PnP was not used, when it was not


def to_ground(affine: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    return pixels @ affine[:, :2].T + affine[:, 2]


def heading_from_rotation(rotation: np.ndarray) -> float:
    """Heading of the frame's top from a world→camera rotation (camera convention of docs/artifacts.md)."""
    return math.degrees(math.atan2(-rotation[0, 1], rotation[0, 0])) % 360.0


def _camera_centre(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    rotation, _ = cv2.Rodrigues(rvec)
    return -rotation.T @ tvec.reshape(3)


@dataclass
class Pose:
    centre: np.ndarray  # (east, north, up) of the camera in the index frame
    heading: float
    cov: np.ndarray  # 2×2 from the residuals (before the floor)
    rotation: np.ndarray  # world → camera


def camera_attitude(rotation: np.ndarray) -> tuple[float, float, float]:
    """Camera-convention (yaw, pitch, roll) degrees (:mod:`mount`) of a world → camera rotation."""
    return camera_angles(ENU_TO_NED @ rotation.T @ FRD_TO_OPENCV)


def rotation_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Degrees of the turn from one rotation to another."""
    cos = (np.trace(a @ b.T) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0))))


def planar_pnp(
    frame_xy: np.ndarray,
    ground_xyz: np.ndarray,
    intrinsics: Intrinsics,
    max_reproj_px: float,
    ransac_px: float | None = None,
    prior: np.ndarray | None = None,
) -> tuple[Pose | None, str]:
    """Camera pose from pixel ↔ ground matches of a (near-)planar scene, or (None, why not).

    ``ransac_px``: first keep the matches a RANSAC pose explains within it; ``prior``: a told
    world → camera rotation, which picks between the two poses a plane allows (IPPE)."""
    if len(frame_xy) < 6:
        return None, "fewer than 6 matches"
    offset = ground_xyz.mean(axis=0)  # centred coordinates keep the solver well conditioned
    obj = (ground_xyz - offset).astype(np.float64)
    img = np.asarray(frame_xy, dtype=np.float64).reshape(-1, 1, 2)
    k, dist = intrinsics.K, intrinsics.dist_array
    try:
        if ransac_px is not None:
            cv2.setRNGSeed(0)  # the same frame gives the same fix
            ok, _, _, inliers = cv2.solvePnPRansac(
                obj, img, k, dist, reprojectionError=ransac_px, iterationsCount=500, flags=cv2.SOLVEPNP_IPPE
            )
            if not ok or inliers is None or len(inliers) < 6:
                return None, "PnP RANSAC found no pose"
            obj, img = obj[inliers.ravel()], img[inliers.ravel()]
        count, rvecs, tvecs, _ = cv2.solvePnPGeneric(obj, img, k, dist, flags=cv2.SOLVEPNP_IPPE)
        if not count:
            return None, "PnP found no pose"
        pick = 0  # the smaller reprojection error first
        if prior is not None:
            gaps = [rotation_gap(cv2.Rodrigues(r)[0], prior) for r in rvecs[:count]]
            pick = int(np.argmin(gaps))
        rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, dist, rvecs[pick], tvecs[pick])
    except cv2.error as exc:
        return None, f"PnP failed ({str(exc).strip().splitlines()[-1][:80]})"
    projected, jacobian = cv2.projectPoints(obj, rvec, tvec, k, dist)
    residuals = (projected - img).reshape(-1)
    rms = float(np.sqrt(np.mean(residuals**2) * 2.0))
    if not np.isfinite(rms) or rms > max_reproj_px:
        return None, f"PnP reprojection error {rms:.1f} px"
    rotation, _ = cv2.Rodrigues(rvec)
    depths = (obj @ rotation.T + tvec.reshape(1, 3))[:, 2]
    centre = _camera_centre(rvec, tvec)
    if np.any(depths <= 0) or centre[2] <= 0:
        return None, "PnP pose below the ground"
    # pose covariance from the residuals, propagated to the camera centre by finite differences
    j = jacobian[:, :6]
    dof = max(residuals.size - 6, 1)
    sigma2 = float(residuals @ residuals) / dof
    try:
        cov_pose = sigma2 * np.linalg.inv(j.T @ j)
    except np.linalg.LinAlgError:
        return None, "PnP pose is not determined"
    pose = np.concatenate([rvec.ravel(), tvec.ravel()])
    jc = np.zeros((3, 6))
    for i in range(6):
        step = np.zeros(6)
        step[i] = 1e-6 * max(1.0, abs(pose[i]))
        jc[:, i] = (_camera_centre(*np.split(pose + step, 2)) - _camera_centre(*np.split(pose - step, 2))) / (
            2 * step[i]
        )
    cov = (jc @ cov_pose @ jc.T)[:2, :2]
    if not np.all(np.isfinite(cov)):
        return None, "PnP covariance is not finite"
    return Pose(centre + offset, heading_from_rotation(rotation), cov, rotation), ""


def telemetry_rotation(telemetry: Telemetry) -> np.ndarray:
    """World→camera rotation of the camera's yaw, pitch and roll (docs/artifacts.md; roll 0 if unknown)."""
    return world_to_camera(telemetry.yaw, telemetry.pitch, telemetry.roll or 0.0)


def attitude_known(telemetry: Telemetry | None) -> bool:
    return telemetry is not None and None not in (telemetry.yaw, telemetry.pitch, telemetry.altitude)


def heading_known(telemetry: Telemetry | None) -> bool:
    return telemetry is not None and telemetry.yaw is not None


def ground_offsets(intrinsics: Intrinsics, telemetry: Telemetry, pixels: np.ndarray) -> np.ndarray:
    """East/north metres from the point below the camera to where each pixel's ray meets level
    ground ``telemetry.altitude`` below; NaN for rays at or above the horizon."""
    if len(pixels) == 0:
        return np.zeros((0, 2))
    rays = np.c_[intrinsics.undistort_points(pixels), np.ones(len(pixels))] @ np.linalg.inv(intrinsics.K).T
    world = rays @ telemetry_rotation(telemetry)  # each row: R^T · ray
    down = -world[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        offsets = world[:, :2] * (telemetry.altitude / down)[:, None]
    offsets[down <= 1e-3] = np.nan
    return offsets


def nadir_pixel(intrinsics: Intrinsics, telemetry: Telemetry | None) -> np.ndarray | None:
    """Pixel (u, v) that sees the ground straight below the camera, from the attitude; None if the
    attitude is unknown or that point is outside the frame."""
    if telemetry is None or telemetry.yaw is None or telemetry.pitch is None:
        return None
    ray = intrinsics.K @ telemetry_rotation(telemetry) @ np.array([0.0, 0.0, -1.0])
    if ray[2] <= 1e-6:
        return None
    uv = ray[:2] / ray[2]
    width, height = intrinsics.width or 2 * intrinsics.cx, intrinsics.height or 2 * intrinsics.cy
    return uv if 0 <= uv[0] < width and 0 <= uv[1] < height else None


def place(
    match: Verification,
    affine: np.ndarray,
    size: tuple[int, int],
    intrinsics: Intrinsics | None,
    telemetry: Telemetry | None,
    conf: PoseConf,
) -> Placement:
    """Where ``match`` (frame pixels ↔ reference pixels, ``affine`` reference pixel → ground) puts the
    drone, for a frame of ``size`` (width, height)."""
    width, height = size
    cx, cy = (intrinsics.cx, intrinsics.cy) if intrinsics else (width / 2.0, height / 2.0)
    probe = np.array([[cx, cy], [cx, cy - 0.1 * height]])  # the image centre and a point above it
    if intrinsics is None:
        return _from_homography(match, affine, probe, telemetry, conf, "no intrinsics")
    told = telemetry_rotation(telemetry) if _rotation_told(telemetry) else None
    ground = np.c_[to_ground(affine, match.tile_xy), np.zeros(len(match.tile_xy))]
    pose, note = planar_pnp(match.frame_xy, ground, intrinsics, conf.max_reproj_px, conf.pnp_ransac_px, told)
    solved = None if pose is None else camera_attitude(pose.rotation)
    if attitude_known(telemetry):
        gap = 0.0 if pose is None else rotation_gap(pose.rotation, told)
        if gap > conf.max_attitude_gap_deg:  # the solution must agree with the prior
            pose, solved, note = None, None, f"PnP attitude {gap:.0f}° from the told one"
        below = _below_camera(match, affine, intrinsics, telemetry, conf.vote_m)
        if below is not None:
            # the point below the camera through the verified homography: exact on sloping ground,
            # where level-ground PnP tilts the camera to fit the slope and slides sideways
            # (PnP's residuals say nothing of this point's error: the told attitude's sigmas do)
            method, xy, disagreement = below
            # votes the homography's point disagrees with are no surer than that disagreement
            sigma = max(conf.sigma_votes_m, disagreement) if method == "votes" else conf.sigma_floor_m
            alt = None if pose is None else float(pose.centre[2])
            heading = heading_from_rotation(told)
            return Placement(method, xy, np.eye(2) * sigma**2, heading, alt, attitude=solved, note=note)
    if pose is not None:
        cov = pose.cov + np.eye(2) * conf.sigma_floor_m**2
        return Placement(
            "pnp", pose.centre[:2], cov, pose.heading, float(pose.centre[2]), attitude=solved, note=note
        )
    return _from_homography(match, affine, probe, telemetry, conf, note)


def _rotation_told(telemetry: Telemetry | None) -> bool:
    return telemetry is not None and telemetry.yaw is not None and telemetry.pitch is not None


def _below_camera(
    match: Verification,
    affine: np.ndarray,
    intrinsics: Intrinsics | None,
    telemetry: Telemetry | None,
    vote_m: float,
) -> tuple[str, np.ndarray, float] | None:
    """("nadir", xy, 0): the pixel straight below the camera mapped through the homography; or
    ("votes", xy, d): the position votes' median, when there is no such homography (d = 0) or the
    two are ``d`` > ``vote_m`` metres apart (the votes are robust, the homography is the more
    precise when it holds)."""
    nadir = nadir_pixel(intrinsics, telemetry) if intrinsics is not None else None
    xy = None
    if nadir is not None and match.homography is not None:
        xy = to_ground(affine, cv2.perspectiveTransform(nadir.reshape(1, 1, 2), match.homography))[0]
    if match.position is None:
        return None if xy is None else ("nadir", xy, 0.0)
    gap = 0.0 if xy is None else float(np.hypot(*(xy - match.position)))
    if xy is not None and gap <= vote_m:
        return "nadir", xy, 0.0
    return "votes", np.asarray(match.position, dtype=np.float64), gap


def _from_homography(
    match: Verification,
    affine: np.ndarray,
    probe: np.ndarray,
    telemetry: Telemetry | None,
    conf: PoseConf,
    note: str,
) -> Placement:
    """The ground point ``probe[0]`` (the image centre) sees through the homography, and the heading
    towards what ``probe[1]`` (a point above it) sees."""
    mapped = cv2.perspectiveTransform(probe.reshape(-1, 1, 2), match.homography).reshape(-1, 2)
    ground = to_ground(affine, mapped)
    up = ground[1] - ground[0]
    heading = math.degrees(math.atan2(up[0], up[1])) % 360.0
    position, of = ground[0], PositionOf.IMAGE_CENTRE
    sigma = conf.sigma_nadir_m
    if telemetry is not None and telemetry.pitch is not None and telemetry.altitude is not None:
        # the optical axis meets the ground this far from the point below the camera
        yaw = telemetry.yaw if telemetry.yaw is not None else heading
        axis = world_to_camera(yaw, max(telemetry.pitch, 1.0), telemetry.roll or 0.0)[2]
        position = position - axis[:2] * telemetry.altitude / -axis[2]
        sigma, of = conf.sigma_homography_m, PositionOf.CAMERA
    return Placement("homography", position, np.eye(2) * sigma**2, heading, None, of, note=note)
