"""``geolink-edge demo``: the whole pipeline on a synthetic world, on CPU, in a few minutes."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="folder for everything the demo makes"),
    seed: int = typer.Option(0, "--seed", help="seed of the synthetic world and the training"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty OUT"),
) -> None:
    """Synthesize a world, train, evaluate, export INT8, index the map and fly it through the runtime."""
    from geolink_edge.demo import DemoConf, main
    from geolink_edge.errors import GeolinkError

    if seed < 0:
        raise GeolinkError(f"--seed must be ≥ 0, got {seed}")
    main(out, DemoConf(seed=seed), force=force)


def register(app: typer.Typer) -> None:
    app.command()(demo)
