"""The training configuration: a pydantic model, presets, YAML files and command-line overrides.

Precedence: preset defaults < ``--config file.yaml`` < command-line options. The resolved config is
saved into the run folder (``config.yaml``) and into every checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from geolink_edge.errors import GeolinkError
from geolink_edge.registry import check_name, choose

LOSS_TERMS = ("cc", "sc", "ga", "rd")


class TrainConfig(BaseModel):
    """Everything a training run depends on. Defaults are the paper's recipe (§3, §4.1, Table 6);
    each departure the project offers is a named option beside it."""

    model_config = ConfigDict(extra="forbid")

    # 2D encoder
    model: str = Field("geolink", description="model preset (geolink_edge.models.presets)")
    backbone: str | None = Field(None, description="any timm model name, in place of the preset's backbone")
    pretrained: bool = Field(False, description="backbone weights from the timm hub")
    weights: Path | None = Field(None, description="backbone weights from a local file")
    freeze_blocks: int = Field(
        0, ge=0, description="backbone blocks kept frozen (paper, Table 6: 0, full fine-tuning)"
    )
    # 3D branch
    points: int = Field(1024, ge=16)
    point_k: int = Field(90, ge=2, description="Point-NN neighbours")
    point_stages: int = Field(4, ge=1)
    point_dim: int = Field(72, ge=3, description="Point-NN embedding width of the first stage")
    mme: bool = Field(True, description="Mixture-of-Multi-Expert block on the 3D feature")
    experts: int = Field(3, ge=1)
    club_hidden: int = Field(4096, ge=1, description="hidden size of the vCLUB estimator q(y|x)")
    club_lr: float = Field(1e-4, gt=0)
    club_steps: int = Field(1, ge=1, description="estimator updates per training step")
    club_variance: Literal["learned", "bounded", "fixed"] = Field(
        "learned",
        description="q(y|x) variance: learned (unbounded, at the descriptors' scale) | bounded (the "
        "CLUB code's tanh, floor e^-1) | fixed (unit)",
    )
    # losses: total = Σ weight_t · L_t over the active terms; the paper's λ is weights['sc']
    losses: list[Literal["cc", "sc", "ga", "rd"]] = Field(default_factory=lambda: list(LOSS_TERMS))
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {"cc": 1.0, "sc": 4.0, "ga": 1.0, "rd": 1.0}
    )
    baseline: bool = Field(False, description="2D InfoNCE between drone and satellite only")
    # InfoNCE (Eq. 5): tau, its learning, its direction; smoothing is L_cc's (L_sc is never smoothed)
    temperature: float = Field(0.07, gt=0, description="tau of Eq. 5 (the start of a learned one)")
    cc_temperature: Literal["learned", "fixed"] = Field(
        "learned", description="L_cc's tau: learned logit scale (the CV-Cities baseline) | fixed"
    )
    sc_temperature: Literal["fixed", "learned"] = Field(
        "fixed", description="L_sc's own tau: fixed (default) | learned (a separate logit scale)"
    )
    infonce: Literal["one_way", "symmetric"] = Field(
        "one_way", description="InfoNCE direction: one_way (Eq. 5-6, queries vs references) | symmetric"
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="on L_cc and the baseline (Eq. 5: 0; Sample4Geo: 0.1)"
    )
    sc_positive: Literal["self", "second_view"] = Field(
        "self",
        description="L_sc positive: the anchor itself (Eq. 7) | a second view of the instance",
    )
    rd_scale: Literal["paper", "mean"] = Field(
        "paper", description="L_rd affinities: distances over their sum (Eq. 11-12) | over their mean"
    )
    # optimisation
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=2, description="locations per batch (InfoNCE needs ≥ 2)")
    lr: float = Field(6e-4, gt=0)
    min_lr: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(0.1, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    clip_mode: Literal["none", "norm", "value"] = Field(
        "none", description="gradient clipping: none (the paper) | norm | value (Sample4Geo, at 100)"
    )
    grad_clip: float = Field(100.0, gt=0, description="threshold of clip_mode (max norm or max |value|)")
    steps_per_epoch: int | None = Field(None, ge=1, description="cap on optimiser steps per epoch")
    # machine
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    compile: bool = False
    channels_last: bool = False
    workers: int = Field(2, ge=0)
    seed: int = 0
    # bookkeeping
    save_every_steps: int = Field(0, ge=0, description="also write last.pt every N steps (0 = per epoch)")
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    val_batch_size: int = Field(32, ge=1)
    skip_missing_pc: bool = Field(False, description="drop locations without a point cloud")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}")
        for term in self.loss_weights:
            check_name("loss term", term, LOSS_TERMS, ValueError)
        if any(w < 0 for w in self.loss_weights.values()):
            raise ValueError("loss weights must be ≥ 0")
        if not self.baseline and not self.losses:
            raise ValueError("no loss term selected")
        return self

    @property
    def active_losses(self) -> tuple[str, ...]:
        """Loss terms that run: the baseline has only the drone–satellite InfoNCE."""
        return ("cc",) if self.baseline else tuple(t for t in LOSS_TERMS if t in self.losses)

    @property
    def needs_3d(self) -> bool:
        """Every GeoLink term reads the 3D feature; only the baseline runs without point clouds."""
        return not self.baseline

    @property
    def needs_second_views(self) -> bool:
        """Only the second-view form of L_sc reads a second image of each location and view."""
        return "sc" in self.active_losses and self.sc_positive == "second_view"

    def loss_weight(self, term: str) -> float:
        return float(self.loss_weights.get(term, 1.0))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # CPU: a small ViT at 112 px with its first 8 of 12 blocks frozen (the backward pass is most of
    # a step's cost), 256 points, a narrow estimator, a few epochs: minutes on 2 cores. Its high
    # learning rate on a randomly initialised backbone is kept stable by norm clipping at 1.
    "tiny": {
        "model": "tiny",
        "freeze_blocks": 8,
        "clip_mode": "norm",
        "grad_clip": 1.0,
        "points": 256,
        "point_k": 16,
        "point_stages": 2,
        "point_dim": 24,
        "club_hidden": 128,
        "club_lr": 1e-3,
        "epochs": 4,
        "batch_size": 8,
        "lr": 1e-3,
        "min_lr": 1e-4,
        "warmup_epochs": 0.5,
        "workers": 0,
        "val_batch_size": 32,
    },
}


def _validate(data: dict[str, Any], source: str) -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise GeolinkError(f"{source}: {where}: {first['msg']}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GeolinkError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise GeolinkError(f"{path}:{line} not valid YAML") from None
    if not isinstance(data, dict):
        raise GeolinkError(f"{path}: a config file must hold a mapping of option: value")
    return data


def resolve_config(
    preset: str = "paper", config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Preset, then the YAML file, then the overrides (``None`` values are ignored)."""
    data: dict[str, Any] = dict(choose("training preset", preset, TRAINING_PRESETS))
    source = f"preset {preset}"
    if config_file is not None:
        data.update(read_yaml(config_file))
        source = str(config_file)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _validate(data, source)


def parse_losses(text: str) -> list[str]:
    """``"cc,sc"`` → ``["cc", "sc"]``, refusing unknown names."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        check_name("loss term", name, LOSS_TERMS)
    return names


def parse_weights(text: str) -> dict[str, float]:
    """``"sc=4,ga=0.5"`` → ``{"sc": 4.0, "ga": 0.5}``."""
    out: dict[str, float] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or name not in LOSS_TERMS or weight < 0:
            terms = ", ".join(LOSS_TERMS)
            raise GeolinkError(f"--loss-weights: expected term=value with term in {terms}, got {item!r}")
        out[name] = weight
    return out
