"""``geolink-edge run``: the onboard job — camera → embedding → verified position → filter → log/MAVLink."""

from __future__ import annotations

from pathlib import Path

import typer

from geolink_edge.commands.matching_options import FEATURES_HELP, MATCHER_HELP, ROTATIONS_HELP, verify_conf


def positive(name: str, value: float | None) -> None:
    """Refuse a negative, zero or non-finite numeric option in one line."""
    import math

    from geolink_edge.errors import GeolinkError

    if value is None:
        return
    if not math.isfinite(value) or value <= 0:
        raise GeolinkError(f"{name} must be a positive number, got {value}")


def parse_near(value: str | None) -> tuple[float, float, float] | None:
    """``LAT,LON,RADIUS_M`` → a tuple, or a one-line error."""
    import math

    from geolink_edge.errors import GeolinkError

    if value is None:
        return None
    try:
        lat, lon, radius = (float(v) for v in value.split(","))
    except ValueError:
        raise GeolinkError(f"--near must be LAT,LON,RADIUS_M (three numbers), got {value!r}") from None
    if not (abs(lat) <= 90 and abs(lon) <= 180 and math.isfinite(radius) and radius > 0):
        raise GeolinkError(f"--near {value}: latitude, longitude or radius out of range")
    return lat, lon, radius


NEAR_HELP = "LAT,LON,RADIUS_M: a known start area; the first fix verifies every candidate in it"


def run(
    camera: str = typer.Option(
        ..., "--camera", help="/dev/videoN, v4l2://, csi://N, rtsp://, a video, a folder, sim://FLIGHT"
    ),
    model: Path = typer.Option(
        ..., "--model", help="encoder: .engine (TensorRT), .onnx (ONNX Runtime) or .pt"
    ),
    index: Path = typer.Option(..., "--index", help="tile index bundle (geolink-edge index build)"),
    intrinsics: Path | None = typer.Option(
        None, "--intrinsics", help="camera YAML (OpenCV or ROS camera_info)"
    ),
    mavlink: str | None = typer.Option(
        None, "--mavlink", help="udpout:HOST:PORT | udpin:HOST:PORT | /dev/ttyTHS1:921600"
    ),
    mavlink_target: str = typer.Option(
        "ardupilot-gps",
        "--mavlink-target",
        help="ardupilot-gps (GPS_INPUT), ardupilot-odometry (VISO_TYPE=1) or px4-odometry",
    ),
    sysid: int = typer.Option(1, "--sysid", help="our MAVLink system id (the autopilot's, usually)"),
    compid: int = typer.Option(191, "--compid", help="our MAVLink component id (191: onboard computer)"),
    gps_id: int = typer.Option(0, "--gps-id", help="GPS_INPUT gps_id: 0 (GPS1_TYPE=14) or 1 (GPS2_TYPE=14)"),
    mavlink_rate: float = typer.Option(5.0, "--mavlink-rate", help="position messages per second"),
    max_track_age: float = typer.Option(
        3.0, "--max-track-age", help="seconds without a fix after which no position is sent"
    ),
    mavlink_delay: float = typer.Option(
        0.0, "--mavlink-delay", help="send positions this old (s) and set the autopilot's delay to match"
    ),
    home_alt: float | None = typer.Option(
        None, "--home-alt", help="home altitude above sea level (m) until the autopilot reports one"
    ),
    mount: str = typer.Option(
        "body:90", "--mount", help="camera mount KIND[:PITCH[:YAW[:ROLL]]]: body (fixed) or gimbal"
    ),
    no_send: bool = typer.Option(
        False, "--no-send", help="shadow mode: listen to the autopilot and log, send no position"
    ),
    log: Path | None = typer.Option(
        None, "--log", help="flight log, JSON lines; an existing one is kept and NAME.1.jsonl, … written"
    ),
    camera_lost: float = typer.Option(
        2.0, "--camera-lost", help="seconds without a frame before the camera is reported lost"
    ),
    no_warm_start: bool = typer.Option(
        False, "--no-warm-start", help="never start the track from the autopilot's GNSS"
    ),
    altitude: float | None = typer.Option(
        None, "--altitude", help="height above ground (m) when no autopilot reports it"
    ),
    max_frames: int | None = typer.Option(None, "--max-frames", help="stop after this many frames"),
    features: str = typer.Option("sift", "--features", help=FEATURES_HELP),
    matcher: str | None = typer.Option(None, "--matcher", help=MATCHER_HELP),
    rotations: int = typer.Option(1, "--rotations", help=ROTATIONS_HELP),
    width: int = typer.Option(1280, "--width", help="camera frame width (V4L2, CSI)"),
    height: int = typer.Option(720, "--height", help="camera frame height (V4L2, CSI)"),
    fps: float = typer.Option(30.0, "--fps", help="camera frame rate (V4L2, CSI)"),
    every_frame: bool = typer.Option(
        False, "--every-frame", help="replay recordings frame by frame, unpaced"
    ),
    near: str | None = typer.Option(None, "--near", help=NEAR_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no live console line"),
) -> None:
    """Localize the drone from its camera and send the position to the log and the autopilot."""
    import json

    from geolink_edge.errors import GeolinkError
    from geolink_edge.runtime import loop
    from geolink_edge.runtime.autopilot import check_target
    from geolink_edge.runtime.locate import LocateConf
    from geolink_edge.runtime.mount import CameraMount

    positive("--altitude", altitude)
    positive("--fps", fps)
    positive("--camera-lost", camera_lost)
    if max_frames is not None and max_frames < 1:
        raise GeolinkError(f"--max-frames must be at least 1, got {max_frames}")
    conf = loop.RunConf(
        locate=LocateConf(verify=verify_conf(features, matcher, rotations)),
        realtime=not every_frame,
        max_frames=max_frames,
        altitude=altitude,
        width=width,
        height=height,
        fps=fps,
        camera_lost_s=camera_lost,
        warm_start=not no_warm_start,
        near=parse_near(near),
    )
    # checked even when no autopilot is connected: a typo must not wait for the day one is
    camera_mount = CameraMount.parse(mount)
    check_target(mavlink_target)
    link = None
    if mavlink:
        link = dict(
            url=mavlink,
            target=mavlink_target,
            sysid=sysid,
            compid=compid,
            gps_id=gps_id,
            rate_hz=mavlink_rate,
            max_track_age_s=max_track_age,
            delay_s=mavlink_delay,
            home_alt_msl=home_alt,
            mount=camera_mount,
            send=not no_send,
        )
    summary = loop.main(conf, camera, model, index, intrinsics, link, log, console=not quiet)
    typer.echo(json.dumps({"summary": summary}))


def register(app: typer.Typer) -> None:
    app.command()(run)
