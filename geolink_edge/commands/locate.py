"""``geolink-edge locate IMAGE``: one photo → one JSON position (global search, verified, PnP)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from geolink_edge.commands.matching_options import (
    MATCHER_HELP,
    features_option,
    rotations_option,
    verifier_option,
    with_verifier,
)
from geolink_edge.commands.run import CONFIG_HELP, NEAR_HELP
from geolink_edge.commands.settings import run_conf

if TYPE_CHECKING:
    from geolink_edge.runtime.locate import LocateConf

LOCATE_BUDGET_S = 8.0  # with loading and the embedding, one photo's answer within 10 s on a 2-core CPU


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
    verifier: str | None = verifier_option(),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    budget: float | None = typer.Option(
        None,
        "--budget",
        help="seconds the search may take before it answers no fix, the best window and why "
        f"(default: the config's locate.budget_s, else {LOCATE_BUDGET_S:g}; inf: no limit)",
    ),
) -> None:
    """Print where IMAGE was taken, as one JSON object (lat/lon or x/y, covariance, inliers, tile)."""
    import json
    import math
    from dataclasses import replace

    from geolink_edge.commands.run import parse_near
    from geolink_edge.errors import GeolinkError
    from geolink_edge.runtime.sinks import clean

    for name, value in (("--heading", heading), ("--pitch", pitch), ("--roll", roll)):
        if value is not None and not math.isfinite(value):
            raise GeolinkError(f"{name} must be a finite number of degrees, got {value}")
    if pitch is not None and not 0.0 < pitch <= 180.0:
        raise GeolinkError(f"--pitch must be above 0 (horizon) and at most 180 degrees, got {pitch}")
    if (pitch is not None or roll is not None) and heading is None:
        raise GeolinkError("--pitch and --roll need --heading (the camera's attitude is used whole)")
    if budget is not None and not budget >= 0:
        raise GeolinkError(f"--budget must be 0 or more seconds, got {budget}")
    conf = run_conf(config, (features, matcher, rotations), altitude=altitude, near=parse_near(near))
    conf = with_verifier(conf, verifier)
    budget = budget if budget is not None else conf.locate.budget_s
    located = replace(conf.locate, budget_s=LOCATE_BUDGET_S if budget is None else budget)
    result = locate_image(
        image,
        model,
        index,
        located,
        intrinsics,
        heading,
        conf.altitude,
        pitch=pitch,
        roll=roll,
        near=conf.near,
    )
    typer.echo(json.dumps(clean(result)))


def locate_image(
    image_path: str | Path,
    model: str | Path,
    index_dir: str | Path,
    conf: LocateConf,
    intrinsics: str | Path | None = None,
    heading: float | None = None,
    altitude: float | None = None,
    pitch: float | None = None,
    roll: float | None = None,
    near: tuple[float, float, float] | None = None,
) -> dict:
    """One photo → one fix: a global search, or with ``near`` (lat, lon, radius_m) every candidate
    in that circle (a single image has no track to narrow it).

    ``heading``, ``pitch`` and ``roll`` are the camera's (the convention of :mod:`mount`); with
    them, the height and the intrinsics the matches vote for the position."""
    import time

    import cv2

    from geolink_edge.backends import load_embedder
    from geolink_edge.errors import GeolinkError
    from geolink_edge.runtime.intrinsics import load_intrinsics
    from geolink_edge.runtime.locate import Locator
    from geolink_edge.runtime.retrieval import near_region, open_index
    from geolink_edge.runtime.sources import Telemetry

    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise GeolinkError(f"{image_path}: not a readable image")
    embedder = load_embedder(model)
    index = open_index(index_dir, embedder.card, model)
    camera = load_intrinsics(intrinsics) if intrinsics is not None else None
    known = [v for v in (heading, pitch, roll, altitude) if v is not None]
    telemetry = Telemetry(heading, pitch, roll, altitude) if known else None
    t0 = time.perf_counter()
    descriptor = embedder.embed([image])[0]
    embed_ms = (time.perf_counter() - t0) * 1e3
    region = near_region(index, near) if near is not None else None
    fix = Locator(index, conf, camera).locate(
        image, descriptor, region, telemetry, exhaustive=region is not None
    )
    fix.timing_ms["embed_ms"] = embed_ms
    return {"image": str(image_path), **fix.to_dict()}


def register(app: typer.Typer) -> None:
    app.command()(locate)
