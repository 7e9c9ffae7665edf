"""``geolink-edge bench runtime``: per-stage latency, FPS and memory of the onboard loop (and soak)."""

from __future__ import annotations

from pathlib import Path

import typer

from geolink_edge.commands.matching_options import MATCHER_HELP, features_option, rotations_option
from geolink_edge.commands.settings import run_conf

bench_app = typer.Typer(help="Measure speed and memory.", no_args_is_help=True)


@bench_app.command("runtime")
def bench_runtime(
    model: Path = typer.Option(..., "--model", help="encoder: .engine, .onnx or .pt"),
    index: Path = typer.Option(..., "--index", help="tile index bundle"),
    camera: str = typer.Option(..., "--camera", help="a replayable source, e.g. sim://FLIGHT (looped)"),
    frames: int = typer.Option(200, "--frames", help="frames to process; 10000 makes a soak test"),
    intrinsics: Path | None = typer.Option(None, "--intrinsics", help="camera YAML"),
    features: str | None = features_option(),
    matcher: str | None = typer.Option(None, "--matcher", help=MATCHER_HELP),
    rotations: int | None = rotations_option(),
    threads: int = typer.Option(0, "--threads", help="ONNX Runtime threads (0: its default)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the figures as JSON"),
    config: Path | None = typer.Option(None, "--config", help="YAML of run settings (config show run)"),
) -> None:
    """Per-stage latency (median, p95), FPS, peak RSS and RSS growth over the run."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from geolink_edge.atomic import write_json
    from geolink_edge.errors import GeolinkError
    from geolink_edge.runtime import loop
    from geolink_edge.runtime.sinks import tally_text

    if threads < 0:
        raise GeolinkError(f"--threads must be 0 or more, got {threads}")
    conf = run_conf(config, (features, matcher, rotations), threads=threads or None)
    with Progress(transient=True) as bar:
        task = bar.add_task("frames", total=frames)
        result = loop.bench(
            conf, camera, model, index, frames, intrinsics, progress=lambda n: bar.update(task, completed=n)
        )
    table = Table(title=f"runtime bench — {result['model']}, {result['frames']} frames")
    for column in ("stage", "median ms", "p95 ms"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for stage, values in result["latency_ms"].items():
        table.add_row(stage, f"{values['median']:.1f}", f"{values['p95']:.1f}")
    console = Console()
    console.print(table)
    rss = result["rss_mb"]
    share = result["non_inference_share"]
    tally = tally_text(frames, result["frames"], result["accepted"])
    console.print(f"frames: {tally} (unpaced, a replay looped)")
    console.print(
        f"FPS {result['fps'] or 0:.2f} | "
        f"median error {_metres(result['error_m']['median'])} | non-inference share "
        f"{'-' if share is None else f'{share:.1%}'} | RSS {rss['after_warmup']:.0f} → {rss['end']:.0f} MiB "
        f"(growth {result['rss_growth']:+.1%}, peak {rss['peak']:.0f} MiB) | errors {len(result['errors'])}"
    )
    if json_out is not None:
        write_json(json_out, result)
    if result["errors"]:
        failed = result["frame_errors"]["count"]
        raise GeolinkError(f"{failed} of {result['frames']} frames raised, e.g. {result['errors'][0]}")


def _metres(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} m"


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
