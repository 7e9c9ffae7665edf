"""``geolink-edge train DATA --out RUN``: train the GeoLink encoder with the 3D-guided losses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer


def train(
    data: Path = typer.Argument(..., help="dataset root (University-1652, SUES-200, DenseUAV, synthetic)"),
    out: Path = typer.Option(..., "--out", help="run folder: config.yaml, last.pt, best.pt, metrics.csv"),
    preset: str = typer.Option("paper", help="paper (the published recipe) | tiny (CPU)"),
    config: Path | None = typer.Option(None, "--config", help="YAML file of options (overridden by flags)"),
    epochs: int | None = typer.Option(None, help="epochs"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="locations per batch"),
    lr: float | None = typer.Option(None, help="peak learning rate"),
    losses: str | None = typer.Option(None, help="loss terms, e.g. cc,sc,ga,rd"),
    loss_weights: str | None = typer.Option(None, "--loss-weights", help="e.g. sc=4,ga=1 (λ is sc's weight)"),
    baseline: bool = typer.Option(False, "--baseline", help="only the 2D drone–satellite InfoNCE"),
    no_mme: bool = typer.Option(False, "--no-mme", help="a linear 3D head instead of the MME block"),
    backbone: str | None = typer.Option(
        None, "--backbone", help="any timm model name, in place of the preset's (e.g. resnet18)"
    ),
    pretrained: bool = typer.Option(False, "--pretrained", help="backbone weights from the timm hub"),
    weights: Path | None = typer.Option(None, "--weights", help="backbone weights from a local file"),
    points: int | None = typer.Option(None, help="points per cloud"),
    club_hidden: int | None = typer.Option(None, "--club-hidden", help="hidden size of the vCLUB estimator"),
    club_variance: str | None = typer.Option(
        None, "--club-variance", help="learned (unbounded, default) | bounded (CLUB's tanh) | fixed"
    ),
    cc_temperature: str | None = typer.Option(
        None, "--cc-temperature", help="L_cc's tau: learned (default) | fixed"
    ),
    sc_temperature: str | None = typer.Option(
        None, "--sc-temperature", help="L_sc's own tau: fixed (default) | learned"
    ),
    infonce: str | None = typer.Option(None, "--infonce", help="one_way (paper, Eq. 5) | symmetric"),
    sc_positive: str | None = typer.Option(
        None, "--sc-positive", help="L_sc positive: self (paper, Eq. 7) | second_view"
    ),
    rd_scale: str | None = typer.Option(None, "--rd-scale", help="L_rd distances over: paper (sum) | mean"),
    freeze_blocks: int | None = typer.Option(None, "--freeze-blocks", help="frozen backbone blocks"),
    clip_mode: str | None = typer.Option(None, "--clip-mode", help="none (paper) | norm | value"),
    grad_clip: float | None = typer.Option(None, "--grad-clip", help="threshold of --clip-mode"),
    amp: str | None = typer.Option(None, help="auto | bf16 | fp16 | off (CUDA only)"),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the networks"),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels-last images"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    workers: int | None = typer.Option(None, help="data-loading processes"),
    seed: int | None = typer.Option(None, help="random seed"),
    steps_per_epoch: int | None = typer.Option(None, "--steps-per-epoch", help="cap on steps per epoch"),
    save_every_steps: int | None = typer.Option(None, "--save-every-steps", help="also save every N steps"),
    skip_missing_pc: bool = typer.Option(False, "--skip-missing-pc", help="drop locations without a cloud"),
    gpus: int = typer.Option(1, help="GPUs on this machine (>1 re-launches under torchrun)"),
    resume: bool = typer.Option(False, "--resume", help="continue RUN/last.pt"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty RUN"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train on DATA and write checkpoints, metrics and the resolved config into RUN."""
    from geolink_edge.errors import GeolinkError
    from geolink_edge.train import distributed
    from geolink_edge.train.config import parse_losses, parse_weights, resolve_config

    if gpus < 1:
        raise GeolinkError(f"--gpus must be ≥ 1, got {gpus}")
    overrides = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "points": points,
        "club_hidden": club_hidden,
        "club_variance": club_variance,
        "cc_temperature": cc_temperature,
        "sc_temperature": sc_temperature,
        "infonce": infonce,
        "sc_positive": sc_positive,
        "rd_scale": rd_scale,
        "freeze_blocks": freeze_blocks,
        "clip_mode": clip_mode,
        "grad_clip": grad_clip,
        "amp": amp,
        "device": device,
        "workers": workers,
        "seed": seed,
        "steps_per_epoch": steps_per_epoch,
        "save_every_steps": save_every_steps,
        "weights": weights,
        "backbone": backbone,
        "losses": parse_losses(losses) if losses is not None else None,
        "loss_weights": parse_weights(loss_weights) if loss_weights is not None else None,
        # flags only switch on: absent means "as the preset or the file says"
        "baseline": baseline or None,
        "pretrained": pretrained or None,
        "compile": compile_model or None,
        "channels_last": channels_last or None,
        "skip_missing_pc": skip_missing_pc or None,
        "mme": False if no_mme else None,
    }
    if overrides["loss_weights"] is not None:
        base = resolve_config(preset, config).loss_weights
        overrides["loss_weights"] = {**base, **overrides["loss_weights"]}
    conf = resolve_config(preset, config, overrides)
    if gpus > 1 and not distributed.under_torchrun():
        raise typer.Exit(distributed.launch_torchrun(gpus, sys.argv[1:]))

    from geolink_edge.train.trainer import main

    run = main(conf, data, out, resume=resume, force=force, quiet=quiet)
    if distributed.DistInfo(rank=int(os.environ.get("RANK", "0"))).is_main:
        typer.echo(f"run written to {run}")


def register(app: typer.Typer) -> None:
    app.command()(train)
