"""``geolink-edge export``: ONNX, INT8 (Q/DQ) and FP16 models of the encoder, and the TensorRT engine."""

from __future__ import annotations

from pathlib import Path

import typer

from geolink_edge.commands.conf_options import conf_option, given

CONF = "geolink_edge.export.pipeline:ExportConf"
ENGINE_CONF = "geolink_edge.export.engine:EngineConf"


def export(
    source: Path = typer.Argument(
        ..., help="training checkpoint (.pt), encoder ONNX, or an export-matching ONNX (--engine only)"
    ),
    out: Path = typer.Option(..., "--out", help="output folder"),
    int8: bool = typer.Option(False, "--int8", help="also write encoder.int8.onnx (explicit Q/DQ)"),
    calib_data: Path = typer.Option(None, "--calib-data", help="dataset root for calibration and fidelity"),
    calib_images: int | None = conf_option(
        CONF, "calib_images", "--calib-images", help="number of calibration images"
    ),
    calib_method: str | None = conf_option(
        CONF, "calib_method", "--calib-method", help="entropy | percentile | minmax"
    ),
    quantizer: str | None = conf_option(
        CONF, "quantizer", "--quantizer", help="ort (ONNX Runtime) | modelopt (NVIDIA ModelOpt)"
    ),
    int8_attention: bool = typer.Option(
        False, "--int8-attention", help="also quantize the attention products QKᵀ and AV (default FP32)"
    ),
    max_r1_drop: float | None = conf_option(
        CONF, "max_r1_drop", "--max-r1-drop", help="fail when INT8 loses more R@1 points"
    ),
    min_centred_cosine: float | None = conf_option(
        CONF,
        "min_centred_cosine",
        "--min-centred-cosine",
        help="fail when INT8's mean cosine to FP32, centred, is lower",
    ),
    fidelity_queries: int = typer.Option(
        None, "--fidelity-queries", help="score only N evenly spread test queries (default: all)"
    ),
    fp16: bool = typer.Option(False, "--fp16", help="also write encoder.fp16.onnx"),
    engine: bool = typer.Option(False, "--engine", help="build a TensorRT engine here (on the target)"),
    workspace: float | None = conf_option(
        ENGINE_CONF, "workspace_gb", "--workspace", help="TensorRT workspace limit, GB"
    ),
    max_batch: int | None = conf_option(
        ENGINE_CONF, "max_batch", "--max-batch", help="largest batch of the engine's profile"
    ),
    max_keypoints: int | None = conf_option(
        ENGINE_CONF,
        "max_keypoints",
        "--max-keypoints",
        help="largest keypoint count of a matcher engine (export-matching ONNX)",
    ),
    timing_cache: Path = typer.Option(
        None, "--timing-cache", help="TensorRT timing cache file (read and updated)"
    ),
    force: bool = typer.Option(False, "--force", help="replace an existing output folder"),
) -> None:
    """Export the 2D encoder: ONNX (+ INT8 Q/DQ, FP16) and, on a Jetson, the TensorRT engine."""
    from geolink_edge.export.engine import EngineConf
    from geolink_edge.export.pipeline import ExportConf, main

    engine_conf = EngineConf(
        **given(
            workspace_gb=workspace,
            max_batch=max_batch,
            timing_cache=timing_cache,
            max_keypoints=max_keypoints,
        )
    )
    conf = ExportConf(
        int8=int8,
        fp16=fp16,
        engine=engine,
        calib_data=calib_data,
        int8_attention=int8_attention,
        fidelity_queries=fidelity_queries,
        force=force,
        engine_conf=engine_conf,
        **given(
            calib_images=calib_images,
            calib_method=calib_method,
            quantizer=quantizer,
            max_r1_drop=max_r1_drop,
            min_centred_cosine=min_centred_cosine,
        ),
    )
    written = main(conf, source, out)
    typer.echo(f"wrote {written}")


def register(app: typer.Typer) -> None:
    app.command()(export)
