"""``geolink-edge sitl``: fly a GNSS-denied mission in ArduPilot SITL over a map, geolink-edge in the loop."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer


def parse_pair(name: str, text: str | None, sep: str = ",") -> tuple[float, float] | None:
    """``A,B`` (or ``AxB``) → two finite numbers, or a one-line error."""
    import math

    from geolink_edge.errors import GeolinkError

    if text is None:
        return None
    try:
        a, b = (float(v) for v in text.split(sep))
    except ValueError:
        raise GeolinkError(f"{name} {text!r}: expected two numbers separated by '{sep}'") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise GeolinkError(f"{name} {text!r}: numbers must be finite")
    return a, b


def sitl(
    map_: Path = typer.Option(..., "--map", help="orthophoto GeoTIFF the camera sees (any CRS)"),
    dem: Path | None = typer.Option(
        None, "--dem", help="DEM GeoTIFF (heights above sea level); default: level"
    ),
    model: Path = typer.Option(..., "--model", help="encoder: .engine, .onnx or .pt"),
    index: Path = typer.Option(..., "--index", help="tile index bundle of the area"),
    target: str = typer.Option(
        "gps", "--target", help="gps (GPS_INPUT as GPS 2) or odometry (ODOMETRY, external navigation)"
    ),
    gcs: str | None = typer.Option(
        None, "--gcs", help="HOST:PORT: an extra SITL link for a ground station (UDP)"
    ),
    out: Path = typer.Option(..., "--out", help="new folder: report.json, path.png, flight log, SITL logs"),
    sitl_dir: Path | None = typer.Option(
        None, "--sitl", help="folder with ArduCopter SITL (arducopter, copter.parm); default $GEOLINK_SITL"
    ),
    instance: int = typer.Option(0, "--instance", help="SITL instance (ports shift by 10 per instance)"),
    altitude: float = typer.Option(100.0, "--altitude", help="mission height above home (m)"),
    speed: float = typer.Option(9.0, "--speed", help="mission ground speed (m/s)"),
    loop: str = typer.Option("500,280", "--loop", help="WIDTH,DEPTH (m) of the rectangular loop round home"),
    home: str | None = typer.Option(None, "--home", help="LAT,LON of home; default the map's centre"),
    camera_rate: float = typer.Option(3.0, "--camera-rate", help="simulated camera frames per second"),
    size: str = typer.Option("640x480", "--size", help="simulated frame size WIDTHxHEIGHT"),
    hfov: float = typer.Option(60.0, "--hfov", help="simulated camera horizontal field of view (deg)"),
    mount: str = typer.Option("gimbal:90", "--mount", help="camera mount KIND[:PITCH[:YAW[:ROLL]]]"),
    seed: int = typer.Option(0, "--seed", help="seed of the camera's exposure and noise"),
) -> None:
    """Fly a mission in ArduCopter SITL: take off on GNSS, cut it at altitude, land on geolink-edge alone."""
    import json

    from geolink_edge.errors import GeolinkError
    from geolink_edge.sim.camera import Exposure, MapScene
    from geolink_edge.sim.flight import FlightConf, check_route, runtime_target
    from geolink_edge.sim.mission import MissionPlan
    from geolink_edge.sim.sitl import find_sitl

    width, depth = parse_pair("--loop", loop)
    frame_w, frame_h = parse_pair("--size", size, "x")
    if not (16 <= frame_w <= 4096 and 16 <= frame_h <= 4096 and 10 < hfov < 150 and 0 <= instance <= 20):
        raise GeolinkError(f"--size {size}, --hfov {hfov}, --instance {instance}: out of range")
    if out.exists():
        raise GeolinkError(f"{out} exists: give a new folder for the flight's output")
    from geolink_edge.runtime.mount import CameraMount

    CameraMount.parse(mount)
    conf = FlightConf(
        target=runtime_target(target),
        mission=MissionPlan(altitude, speed, width, depth),
        camera_hz=camera_rate,
        size=(int(frame_w), int(frame_h)),
        hfov=hfov,
        mount=mount,
        instance=instance,
        gcs=gcs,
        home=parse_pair("--home", home),
        exposure=Exposure(seed=seed),
    )
    folder = find_sitl(sitl_dir)
    scene = MapScene(map_, dem)
    check_route(scene, conf)
    check_model_and_index(model, index)
    from geolink_edge.sim.run import fly

    report = fly(conf, scene, folder, model, index, out, map_)
    typer.echo(json.dumps({"out": str(out), "ok": report["ok"]}))
    if report["runtime_stuck"]:
        # its thread is still inside native code, where the interpreter's shutdown would abort the
        # process: everything is written, so leave without that shutdown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    if not report["ok"]:
        raise typer.Exit(1)


def check_model_and_index(model: Path, index: Path) -> None:
    """The runtime would refuse these mid-flight: refuse them before anything starts."""
    from geolink_edge.backends import load_embedder
    from geolink_edge.runtime.retrieval import open_index

    embedder = load_embedder(model)
    try:
        open_index(index, embedder.card, model)
    finally:
        if hasattr(embedder, "close"):
            embedder.close()


def register(app: typer.Typer) -> None:
    app.command(name="sitl")(sitl)
