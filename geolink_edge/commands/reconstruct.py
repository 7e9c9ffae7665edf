"""``geolink-edge reconstruct``: one point cloud per location for the 3D-guided training."""

from __future__ import annotations

from pathlib import Path

import typer


def reconstruct(
    data: Path = typer.Argument(
        ..., help="dataset root (University-1652 layout, SUES-200, DenseUAV or synthetic)"
    ),
    backend: str = typer.Option("colmap", help="dsm | colmap | colmap-model | vggt"),
    points: int = typer.Option(1024, help="points kept per location (farthest point sampling)"),
    out: Path = typer.Option(None, help="output folder (default: DATA/pointclouds)"),
    model_dir: Path = typer.Option(
        None, help="colmap-model: folder with <location_id>/[sparse/[0/]]points3D.*"
    ),
    weights: Path = typer.Option(None, help="vggt: local VGGT model.pt"),
    max_images: int = typer.Option(None, help="colmap/vggt: views used per location (evenly spaced)"),
    only: list[str] = typer.Option(None, "--only", help="just this location id (repeatable)"),
    force: bool = typer.Option(False, "--force", help="redo locations that already have a point cloud"),
) -> None:
    """Reconstruct each location's 3D points (skips those done; lists failures at the end)."""
    from geolink_edge.errors import GeolinkError
    from geolink_edge.train.reconstruct import backend_conf, main

    conf = backend_conf(backend)
    if max_images is not None:
        if not 3 <= max_images <= 10_000 or backend not in ("colmap", "vggt"):
            raise GeolinkError(f"--max-images must be 3..10000 and is for colmap/vggt, got {max_images}")
        conf["max_images"] = max_images
    if model_dir is not None:
        conf["model_dir"] = model_dir
    if weights is not None:
        conf["weights"] = weights
    main(conf, data, out_dir=out, n_points=points, force=force, only=only or None)


def register(app: typer.Typer) -> None:
    app.command()(reconstruct)
