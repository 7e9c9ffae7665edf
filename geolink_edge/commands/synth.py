"""``geolink-edge synth OUT``: a synthetic cross-view dataset (University-1652 layout + GeoTIFFs,
GPS, point clouds and optionally a simulated flight)."""

from __future__ import annotations

from pathlib import Path

import typer

from geolink_edge.commands.conf_options import conf_option, given, validated

CONF = "geolink_edge.data.synthetic.writer:SynthConfig"


def synth(
    out: Path = typer.Argument(..., help="Output folder (must be empty or absent unless --force)."),
    locations: int | None = conf_option(
        CONF, "locations", help="Locations with drone views (train + test queries)."
    ),
    views: int | None = conf_option(CONF, "views", help="Drone views per location."),
    size: int | None = conf_option(CONF, "size", help="Drone image size in pixels (square)."),
    sat_px: int | None = typer.Option(None, help="Satellite tile size in pixels (default: --size)."),
    tile_m: float | None = conf_option(CONF, "tile_m", help="Ground footprint of a satellite tile, metres."),
    seed: int | None = conf_option(CONF, "seed", help="Random seed: same seed, same bytes."),
    styles: str | None = typer.Option(
        None, help="Comma-separated styles; the first half trains, the rest is test."
    ),
    flight_frames: int | None = conf_option(
        CONF, "flight_frames", help="Frames of a simulated flight over a test area (0: none)."
    ),
    flight_size: int | None = conf_option(CONF, "flight_size", help="Flight frame size in pixels."),
    flight_altitude: float | None = conf_option(
        CONF, "flight_altitude", help="Flight altitude above ground, metres."
    ),
    flight_pitch: float | None = conf_option(
        CONF, "flight_pitch", help="Flight camera pitch below the horizon (90: nadir)."
    ),
    map_season: str | None = conf_option(
        CONF,
        "map_season",
        help="Season of the test areas' maps against their drone views: same, autumn, winter, dry.",
    ),
    map_gsd: float | None = typer.Option(
        None, help="Write every ortho.tif at this m/px, coarser than the world's 0.3 (e.g. 0.5)."
    ),
    workers: int | None = conf_option(CONF, "workers", help="Processes."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty OUT."),
) -> None:
    """Generate a synthetic cross-view dataset: drone views, satellite tiles, GeoTIFFs, point clouds."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from geolink_edge.atomic import check_new_dir
    from geolink_edge.data.synthetic import writer

    options = given(
        locations=locations,
        views=views,
        size=size,
        sat_px=sat_px,
        tile_m=tile_m,
        seed=seed,
        flight_frames=flight_frames,
        flight_size=flight_size,
        flight_altitude=flight_altitude,
        flight_pitch=flight_pitch,
        map_season=map_season,
        map_gsd=map_gsd,
        workers=workers,
    )
    if styles is not None:
        options["styles"] = [s.strip() for s in styles.split(",") if s.strip()]
    conf = validated(writer.SynthConfig, **options)
    check_new_dir(out, force)
    with Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("synth", total=writer.total_work(conf))
        writer.main(conf, out, force, progress=lambda n: bar.advance(task, n))
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command()(synth)
