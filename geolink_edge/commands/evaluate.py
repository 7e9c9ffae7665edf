"""``geolink-edge eval CHECKPOINT DATA``: retrieval scores of a trained encoder on a test split."""

from __future__ import annotations

import math
from pathlib import Path

import typer

DIRECTION_COLUMNS = ("R@1", "R@5", "R@10", "R@top1%", "AP", "SDM@1", "SDM@3", "SDM@5", "SDM@10")


def _cell(value) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.2f}"
    return "-" if value is None else str(value)


def _rows(report: dict) -> list[tuple[str, dict]]:
    """(name, metrics) rows: both directions, per height, per weather."""
    rows = [(d, report[d]) for d in ("drone->satellite", "satellite->drone") if d in report]
    for height, entry in report.get("per_height", {}).items():
        rows += [(f"{d} @ {height}", m) for d, m in entry.items()]
    rows += [(f"drone->satellite, {w}", m) for w, m in report.get("weather", {}).items()]
    return rows


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = _rows(report)
    columns = [c for c in DIRECTION_COLUMNS if any(c in m for _, m in rows)]
    table = Table(title=f"{report['dataset']} — {report['protocol']}")
    table.add_column("direction", no_wrap=True)
    for column in [*columns, "top-1 err (m)", "queries", "gallery"]:
        table.add_column(column, justify="right")
    for name, m in rows:
        err = m.get("top1_error_m")
        table.add_row(
            name,
            *(_cell(m.get(c)) for c in columns),
            _cell(err["median"] if err else None),
            _cell(m.get("queries")),
            _cell(m.get("gallery")),
        )
    console = Console(width=max(Console().width, 160))  # 14 columns: do not squeeze them when piped
    console.print(table)
    console.print(f"distractor protocol: {report['protocol']}; model {str(report['model_hash'])[:12]}")


def evaluate(
    checkpoint: Path = typer.Argument(..., help="training checkpoint (.pt)"),
    data: Path = typer.Argument(..., help="dataset root (University-1652, SUES-200, DenseUAV or synthetic)"),
    mask_distractors: bool = typer.Option(
        False, "--mask-distractors", help="drop gallery ids absent from the queries (Sample4Geo-style)"
    ),
    weather: str = typer.Option("", help="conditions applied to drone queries, e.g. fog-rain,wind"),
    heights: str = typer.Option("", help="comma-separated flight heights to keep (SUES-200, DenseUAV)"),
    batch_size: int = typer.Option(32, "--batch-size", help="images per forward pass"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the report as JSON"),
) -> None:
    """Drone→satellite and satellite→drone R@K, AP, SDM@K and top-1 error of a checkpoint."""
    from geolink_edge.errors import GeolinkError
    from geolink_edge.train import evaluate as stage

    try:
        height_list = [int(h) for h in heights.split(",") if h.strip()] or None
    except ValueError:
        raise GeolinkError(f"--heights: expected comma-separated integers, got {heights!r}") from None
    report = stage.main(
        checkpoint,
        data,
        mask_distractors=mask_distractors,
        weather=stage.parse_weather(weather),
        heights=height_list,
        batch_size=batch_size,
        device=device,
        json_out=json_out,
    )
    print_report(report)


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
