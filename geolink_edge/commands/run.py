"""``geolink-edge run``: the onboard job — camera → embedding → verified position → filter → log/MAVLink."""

from __future__ import annotations

from pathlib import Path

import typer

from geolink_edge.commands.conf_options import conf_option, given
from geolink_edge.commands.matching_options import (
    MATCHER_HELP,
    features_option,
    rotations_option,
    verifier_option,
    with_verifier,
)
from geolink_edge.commands.settings import run_conf


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
CONFIG_HELP = "YAML of run settings (geolink-edge config show run); options given here win over it"
RUN_CONF = "geolink_edge.runtime.loop:RunConf"
FILTER_CONF = "geolink_edge.runtime.filter:FilterConf"
SINK = "geolink_edge.runtime.mavlink:MavlinkSink"  # its keyword defaults are the link's


def autopilot_link(url: str | None, target: str | None, mount: str | None, **sink) -> dict | None:
    """The sink's keyword arguments for ``--mavlink URL`` (None without it), options not given left to
    the sink. Target and mount are checked even with no autopilot connected: a typo must not wait for
    the day one is."""
    from geolink_edge.runtime.autopilot import check_target
    from geolink_edge.runtime.mount import CameraMount

    camera_mount = None if mount is None else CameraMount.parse(mount)
    if target is not None:
        check_target(target)
    if not url:
        return None
    return {"url": url, **given(target=target, mount=camera_mount, **sink)}


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
    mavlink_target: str | None = conf_option(
        SINK,
        "target",
        "--mavlink-target",
        help="ardupilot-gps (GPS_INPUT), ardupilot-odometry (VISO_TYPE=1) or px4-odometry",
    ),
    sysid: int | None = conf_option(
        SINK, "sysid", "--sysid", help="our MAVLink system id (the autopilot's, usually)"
    ),
    compid: int | None = conf_option(
        SINK, "compid", "--compid", help="our MAVLink component id (191: onboard computer)"
    ),
    gps_id: int | None = conf_option(
        SINK, "gps_id", "--gps-id", help="GPS_INPUT gps_id: 0 (GPS1_TYPE=14) or 1 (GPS2_TYPE=14)"
    ),
    mavlink_rate: float | None = conf_option(
        SINK, "rate_hz", "--mavlink-rate", help="position messages per second"
    ),
    max_track_age: float | None = conf_option(
        SINK,
        "max_track_age_s",
        "--max-track-age",
        help="seconds without a fix after which no position is sent",
    ),
    mavlink_delay: float | None = conf_option(
        SINK,
        "delay_s",
        "--mavlink-delay",
        help="send positions this old (s) and set the autopilot's delay to match",
    ),
    home_alt: float | None = typer.Option(
        None, "--home-alt", help="home altitude above sea level (m) until the autopilot reports one"
    ),
    mount: str | None = conf_option(
        SINK, "mount", "--mount", help="camera mount KIND[:PITCH[:YAW[:ROLL]]]: body (fixed) or gimbal"
    ),
    no_send: bool = typer.Option(
        False, "--no-send", help="shadow mode: listen to the autopilot and log, send no position"
    ),
    log: Path | None = typer.Option(
        None, "--log", help="flight log, JSON lines; an existing one is kept and NAME.1.jsonl, … written"
    ),
    camera_lost: float | None = conf_option(
        RUN_CONF,
        "camera_lost_s",
        "--camera-lost",
        help="seconds without a frame before the camera is reported lost",
    ),
    no_warm_start: bool = typer.Option(
        False, "--no-warm-start", help="never start the track from the autopilot's GNSS"
    ),
    altitude: float | None = typer.Option(
        None, "--altitude", help="height above ground (m) when no autopilot reports it"
    ),
    max_frames: int | None = typer.Option(None, "--max-frames", help="stop after this many frames"),
    features: str | None = features_option(),
    matcher: str | None = typer.Option(None, "--matcher", help=MATCHER_HELP),
    rotations: int | None = rotations_option(),
    verifier: str | None = verifier_option(),
    width: int | None = conf_option(RUN_CONF, "width", "--width", help="camera frame width (V4L2, CSI)"),
    height: int | None = conf_option(RUN_CONF, "height", "--height", help="camera frame height (V4L2, CSI)"),
    fps: float | None = conf_option(RUN_CONF, "fps", "--fps", help="camera frame rate (V4L2, CSI)"),
    every_frame: bool = typer.Option(
        False, "--every-frame", help="replay recordings frame by frame, unpaced"
    ),
    near: str | None = typer.Option(None, "--near", help=NEAR_HELP),
    accel_sigma: float | None = conf_option(
        FILTER_CONF,
        "accel_sigma",
        "--accel-sigma",
        help="m/s², 1σ of the vehicle's acceleration: how fast the accuracy told the autopilot grows",
    ),
    frame_budget: float | None = typer.Option(
        None,
        "--frame-budget",
        help="seconds a frame's search may take; a longer search goes on over the next frames "
        "(default: the config's locate.budget_s, else the paced run's, under a second; no limit with "
        "--every-frame)",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="no live console line"),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Localize the drone from its camera and send the position to the log and the autopilot."""
    import json

    from geolink_edge.errors import GeolinkError
    from geolink_edge.runtime import loop

    if frame_budget is not None and not frame_budget >= 0:
        raise GeolinkError(f"--frame-budget must be 0 or more seconds, got {frame_budget}")
    conf = run_conf(
        config,
        (features, matcher, rotations),
        realtime=False if every_frame else None,
        filter=given(accel_sigma=accel_sigma) or None,
        max_frames=max_frames,
        altitude=altitude,
        warm_start=False if no_warm_start else None,
        near=parse_near(near),
        width=width,
        height=height,
        fps=fps,
        camera_lost_s=camera_lost,
    )
    conf = loop.paced(with_verifier(conf, verifier), frame_budget)
    link = autopilot_link(
        mavlink,
        mavlink_target,
        mount,
        sysid=sysid,
        compid=compid,
        gps_id=gps_id,
        rate_hz=mavlink_rate,
        max_track_age_s=max_track_age,
        delay_s=mavlink_delay,
        home_alt_msl=home_alt,
        send=not no_send,
    )
    summary = loop.main(conf, camera, model, index, intrinsics, link, log, console=not quiet)
    typer.echo(json.dumps({"summary": summary}))


def register(app: typer.Typer) -> None:
    app.command()(run)
