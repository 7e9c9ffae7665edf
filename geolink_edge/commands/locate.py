"""``geolink-edge locate IMAGE``: one photo → one JSON position (global search, verified, PnP)."""

from __future__ import annotations

from pathlib import Path

import typer

from geolink_edge.commands.matching_options import FEATURES_HELP, MATCHER_HELP, ROTATIONS_HELP, verify_conf


def locate(
    image: Path = typer.Argument(..., help="a nadir photo (any size)"),
    model: Path = typer.Option(..., "--model", help="encoder: .engine, .onnx or .pt"),
    index: Path = typer.Option(..., "--index", help="tile index bundle"),
    intrinsics: Path | None = typer.Option(
        None, "--intrinsics", help="camera YAML (OpenCV or ROS camera_info)"
    ),
    heading: float | None = typer.Option(
        None, "--heading", help="heading of the photo's top, degrees from north"
    ),
    altitude: float | None = typer.Option(None, "--altitude", help="height above ground (m)"),
    features: str = typer.Option("sift", "--features", help=FEATURES_HELP),
    matcher: str | None = typer.Option(None, "--matcher", help=MATCHER_HELP),
    rotations: int = typer.Option(1, "--rotations", help=ROTATIONS_HELP),
) -> None:
    """Print where IMAGE was taken, as one JSON object (lat/lon or x/y, covariance, inliers, tile)."""
    import json
    import math

    from geolink_edge.commands.run import positive
    from geolink_edge.errors import GeolinkError
    from geolink_edge.runtime.locate import LocateConf, locate_image
    from geolink_edge.runtime.sinks import clean

    positive("--altitude", altitude)
    if heading is not None and not math.isfinite(heading):
        raise GeolinkError(f"--heading must be a finite number of degrees, got {heading}")
    result = locate_image(
        image,
        model,
        index,
        intrinsics,
        heading,
        altitude,
        LocateConf(verify=verify_conf(features, matcher, rotations)),
    )
    typer.echo(json.dumps(clean(result)))


def register(app: typer.Typer) -> None:
    app.command()(locate)
