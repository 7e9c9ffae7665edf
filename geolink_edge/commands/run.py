"""``geolink-edge run``: the onboard job — camera → embedding → verified position → filter → log/MAVLink."""

from __future__ import annotations

from pathlib import Path

import typer

from geolink_edge.commands.matching_options import FEATURES_HELP, MATCHER_HELP, ROTATIONS_HELP, verify_conf


def positive(name: str, value: float | None, allow_zero: bool = False) -> None:
    """Refuse a negative, zero (unless allowed) or non-finite numeric option in one line."""
    import math

    from geolink_edge.errors import GeolinkError

    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise GeolinkError(f"{name} must be a positive number, got {value}")


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
    mavlink_msg: str = typer.Option(
        "gps_input", "--mavlink-msg", help="gps_input (ArduPilot GPS1_TYPE=14) or odometry"
    ),
    log: Path | None = typer.Option(None, "--log", help="flight log, JSON lines flushed per frame"),
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
    quiet: bool = typer.Option(False, "--quiet", help="no live console line"),
) -> None:
    """Localize the drone from its camera and send the position to the log and the autopilot."""
    import json

    from geolink_edge.errors import GeolinkError
    from geolink_edge.runtime import loop
    from geolink_edge.runtime.locate import LocateConf

    positive("--altitude", altitude)
    positive("--fps", fps)
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
    )
    summary = loop.main(conf, camera, model, index, intrinsics, mavlink, mavlink_msg, log, console=not quiet)
    typer.echo(json.dumps({"summary": summary}))


def register(app: typer.Typer) -> None:
    app.command()(run)
