"""``geolink-edge locate IMAGE``: one photo → one JSON position (global search, verified, PnP)."""

from __future__ import annotations

from pathlib import Path

import typer

from geolink_edge.commands.matching_options import MATCHER_HELP, features_option, rotations_option
from geolink_edge.commands.run import CONFIG_HELP, NEAR_HELP
from geolink_edge.commands.settings import run_conf


def locate(
    image: Path = typer.Argument(..., help="a nadir photo (any size)"),
    model: Path = typer.Option(..., "--model", help="encoder: .engine, .onnx or .pt"),
    index: Path = typer.Option(..., "--index", help="tile index bundle"),
    intrinsics: Path | None = typer.Option(
        None, "--intrinsics", help="camera YAML (OpenCV or ROS camera_info)"
    ),
    heading: float | None = typer.Option(
        None, "--heading", help="camera heading (the photo's top when nadir), degrees from north"
    ),
    pitch: float | None = typer.Option(
        None, "--pitch", help="camera pitch below the horizon, degrees (90: straight down)"
    ),
    roll: float | None = typer.Option(
        None, "--roll", help="camera roll about its axis, degrees (positive: the photo's right side down)"
    ),
    altitude: float | None = typer.Option(None, "--altitude", help="height above ground (m)"),
    features: str | None = features_option(),
    matcher: str | None = typer.Option(None, "--matcher", help=MATCHER_HELP),
    near: str | None = typer.Option(None, "--near", help=NEAR_HELP),
    rotations: int | None = rotations_option(),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Print where IMAGE was taken, as one JSON object (lat/lon or x/y, covariance, inliers, tile)."""
    import json
    import math

    from geolink_edge.commands.run import parse_near
    from geolink_edge.errors import GeolinkError
    from geolink_edge.runtime.locate import locate_image
    from geolink_edge.runtime.sinks import clean

    for name, value in (("--heading", heading), ("--pitch", pitch), ("--roll", roll)):
        if value is not None and not math.isfinite(value):
            raise GeolinkError(f"{name} must be a finite number of degrees, got {value}")
    if pitch is not None and not 0.0 < pitch <= 180.0:
        raise GeolinkError(f"--pitch must be above 0 (horizon) and at most 180 degrees, got {pitch}")
    if (pitch is not None or roll is not None) and heading is None:
        raise GeolinkError("--pitch and --roll need --heading (the camera's attitude is used whole)")
    conf = run_conf(config, (features, matcher, rotations), altitude=altitude, near=parse_near(near))
    result = locate_image(
        image,
        model,
        index,
        intrinsics,
        heading,
        conf.altitude,
        conf.locate,
        pitch=pitch,
        roll=roll,
        near=conf.near,
    )
    typer.echo(json.dumps(clean(result)))


def register(app: typer.Typer) -> None:
    app.command()(locate)
