"""``geolink-edge export-matching disk+lightglue --out DIR``: ONNX files of a learned extractor and
matcher, for ``--features`` / ``--matcher`` on ONNX Runtime or (built into engines) TensorRT."""

from __future__ import annotations

from pathlib import Path

import typer


def export_matching(
    pair: str = typer.Argument(
        ...,
        help="FEATURES[+MATCHER]: a learned extractor and, unless its own, a learned matcher "
        "(xfeat, disk+lightglue)",
    ),
    out: Path = typer.Option(..., "--out", help="output folder"),
    size: int = typer.Option(640, "--size", help="extractor input side, px (a multiple of 32)"),
    keypoints: int = typer.Option(1024, "--keypoints", help="keypoints the extractor keeps"),
    features_weights: Path | None = typer.Option(None, "--features-weights", help="extractor state dict"),
    matcher_weights: Path | None = typer.Option(None, "--matcher-weights", help="matcher state dict"),
    force: bool = typer.Option(False, "--force", help="replace an existing output folder"),
) -> None:
    """Export a learned extractor (fixed size and keypoint count) and its matcher (dynamic counts)."""
    from geolink_edge.errors import require

    require("torch", "exporting needs the match extra: pip install 'geolink-edge[match,export]'")
    from geolink_edge.export.local_features import MatchingExportConf, main

    conf = MatchingExportConf(
        size=size,
        keypoints=keypoints,
        features_weights=None if features_weights is None else str(features_weights),
        matcher_weights=None if matcher_weights is None else str(matcher_weights),
        force=force,
    )
    typer.echo(f"wrote {main(conf, pair, out)}")


def register(app: typer.Typer) -> None:
    app.command("export-matching")(export_matching)
