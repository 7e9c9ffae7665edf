"""The GeoLink trainer: ``main(conf, data_root, run_dir) -> run_dir``.

One optimiser step per batch of distinct locations. The vCLUB estimators have their own optimiser:
each step the encoders minimise the bound with the estimators frozen, then the estimators take
``club_steps`` likelihood steps on the detached features (the CLUB paper's alternating scheme).

Run folder: ``config.yaml`` (resolved config), ``last.pt`` (every epoch, and every
``save_every_steps`` steps), ``best.pt`` (best validation R@1, drone→satellite), ``metrics.csv``,
``tensorboard/``. ``resume=True`` continues from ``last.pt`` at the exact batch it stopped after.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from geolink_edge.atomic import check_new_dir, write_text
from geolink_edge.card import ModelCard
from geolink_edge.data.datasets import open_dataset
from geolink_edge.data.layout import CrossViewData
from geolink_edge.data.sampler import UniqueLocationBatchSampler
from geolink_edge.data.torch_datasets import TrainPairs
from geolink_edge.errors import GeolinkError, first_line
from geolink_edge.models.checkpoint import read_checkpoint, save_checkpoint
from geolink_edge.models.presets import card_for_preset
from geolink_edge.train import distributed as ddp
from geolink_edge.train.config import TrainConfig
from geolink_edge.train.evaluate import D2S, evaluate_encoder
from geolink_edge.train.networks import GeoLinkNetworks
from geolink_edge.train.precision import Precision, pick_device
from geolink_edge.train.rng import capture_rng, restore_rng, seed_everything
from geolink_edge.train.runlog import RunLog, SilentLog
from geolink_edge.train.step import TrainStep


@dataclasses.dataclass
class Progress:
    """Where the run stands: ``position`` batches of epoch ``epoch`` are done, ``step`` in all."""

    epoch: int = 0
    position: int = 0
    step: int = 0
    best_r1: float = -1.0
    history: list[dict] = dataclasses.field(default_factory=list)


def _card(conf: TrainConfig, data: CrossViewData) -> ModelCard:
    card = card_for_preset(conf.model, conf.backbone)
    tile_m = data.meta.get("tile_m") if isinstance(data.meta, dict) else None
    return card.model_copy(update={"tile_m": float(tile_m)}) if tile_m else card


def _training_pairs(conf: TrainConfig, data: CrossViewData, card: ModelCard) -> TrainPairs:
    def pairs(d: CrossViewData, required: bool) -> TrainPairs:
        return TrainPairs(
            d,
            tuple(card.image_size),
            n_points=conf.points,
            train=True,
            require_pointclouds=required,
            seed=conf.seed,
            mean=card.mean,
            std=card.std,
            second_views=conf.needs_second_views,
        )

    if not data.train_drone:
        raise GeolinkError(f"{data.root}: the training split is empty (no train/drone/<id>/ folders)")
    if not conf.needs_3d:
        return pairs(data, required=False)
    if not conf.skip_missing_pc:
        return pairs(data, required=True)
    probe = pairs(data, required=False)
    keep = {loc for loc, path in probe.pointcloud_paths.items() if path is not None}
    if len(keep) < conf.batch_size:
        raise GeolinkError(
            f"{data.root}: only {len(keep)} training locations have a point cloud "
            f"(a batch needs {conf.batch_size})"
        )
    kept = dataclasses.replace(data, train_drone={k: v for k, v in data.train_drone.items() if k in keep})
    return pairs(kept, required=True)


def _check_resumable(ckpt: dict, conf: TrainConfig, path: Path) -> None:
    saved = ckpt.get("config", {})
    for key in (
        "model",
        "backbone",
        "points",
        "point_stages",
        "point_dim",
        "mme",
        "experts",
        "club_hidden",
        "baseline",
    ):
        if key in saved and saved[key] != getattr(conf, key):
            now = getattr(conf, key)
            raise GeolinkError(f"{path}: made with {key}={saved[key]!r}, this run has {key}={now!r}")


class Trainer:
    def __init__(
        self, conf: TrainConfig, data: CrossViewData, run_dir: Path, dist: ddp.DistInfo, quiet: bool = False
    ):
        self.conf, self.data, self.run_dir, self.dist, self.quiet = conf, data, run_dir, dist, quiet
        self.device = pick_device(conf.device, dist.local_rank)
        self.precision = Precision.choose(conf.amp, self.device)
        seed_everything(conf.seed + dist.rank)
        self.card = _card(conf, data)
        self.pairs = _training_pairs(conf, data, self.card)
        self.sampler = UniqueLocationBatchSampler(
            self.pairs.labels, conf.batch_size, seed=conf.seed, rank=dist.rank, world_size=dist.world_size
        )
        self.steps_per_epoch = min(len(self.sampler), conf.steps_per_epoch or len(self.sampler))
        if self.steps_per_epoch == 0:
            raise GeolinkError(f"{data.root}: not enough training images for one batch of {conf.batch_size}")
        self.total_steps = self.steps_per_epoch * conf.epochs
        if not (conf.pretrained or conf.weights) and dist.is_main:
            print(
                "warning: no --pretrained or --weights: the backbone starts from random weights",
                file=sys.stderr,
            )
        self.nets = GeoLinkNetworks(conf, self.card).to(self.device)
        warmup = round(conf.warmup_epochs * self.steps_per_epoch)
        self.step = TrainStep(conf, self.nets, self.precision, dist, self.total_steps, warmup)
        self.progress = Progress()

    # ---- checkpoints -------------------------------------------------------------------------
    def _payload(self) -> dict:
        p = self.progress
        return {
            "model_card": self.nets.encoder.model_card().to_dict(),
            "encoder": self.nets.encoder.state_dict(),
            "branch3d": self.nets.branch_state(),
            "club": self.nets.club.state_dict() if self.nets.club is not None else {},
            "config": self.conf.model_dump(mode="json"),
            "epoch": p.epoch,
            "position": p.position,
            "step": p.step,
            "best_r1": p.best_r1,
            "metrics": {"history": p.history},
            **self.step.state_dict(),
            "rng": capture_rng(),
        }

    def save(self, name: str) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run_dir / name, self._payload())

    def restore(self, path: Path) -> None:
        ckpt = read_checkpoint(path)
        _check_resumable(ckpt, self.conf, path)
        try:
            self.nets.encoder.load_state_dict(ckpt["encoder"])
            self.nets.load_branch_state(ckpt.get("branch3d", {}))
            if self.nets.club is not None:
                self.nets.club.load_state_dict(ckpt["club"])
            self.step.load_state_dict(ckpt)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise GeolinkError(f"{path}: does not fit this model ({first_line(exc)})") from None
        restore_rng(ckpt["rng"])
        self.progress = Progress(
            ckpt["epoch"], ckpt["position"], ckpt["step"], ckpt["best_r1"], list(ckpt["metrics"]["history"])
        )

    # ---- epochs ------------------------------------------------------------------------------
    def _loader(self, epoch: int, start: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.pairs.set_epoch(epoch)
        batches = list(self.sampler)[start : self.steps_per_epoch]
        # its own generator: creating a loader must not draw from the global RNG that a resumed
        # run restores mid-epoch
        generator = torch.Generator().manual_seed(self.conf.seed * 100_003 + epoch)
        return DataLoader(
            self.pairs,
            batch_sampler=batches,
            num_workers=self.conf.workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
        )

    def validate(self) -> dict[str, float]:
        if not self.data.query_drone or not self.data.gallery_satellite:
            return {}
        scores = evaluate_encoder(
            self.nets.encoder,
            self.card,
            self.data,
            device=self.device,
            batch_size=self.conf.val_batch_size,
            directions=(D2S,),
            quiet=True,
        )[D2S]
        return {"val/R@1": scores["R@1"], "val/R@5": scores["R@5"], "val/AP": scores["AP"]}

    def fit(self) -> None:
        conf, p = self.conf, self.progress
        log = RunLog(self.run_dir, self.total_steps, p.step, self.quiet) if self.dist.is_main else SilentLog()
        with log:
            while p.epoch < conf.epochs:
                self.nets.train()
                sums: dict[str, float] = {}
                started = time.perf_counter()
                for batch in self._loader(p.epoch, p.position):
                    terms = self.step(batch)
                    p.step += 1
                    p.position += 1
                    sums["batches"] = sums.get("batches", 0.0) + 1
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + v
                    log.step(p.step, p.epoch + 1, terms, self.step.lr)
                    if conf.save_every_steps and p.step % conf.save_every_steps == 0:
                        self.save("last.pt")
                self._end_epoch(log, sums, time.perf_counter() - started)

    def _end_epoch(self, log, sums: dict[str, float], seconds: float) -> None:
        conf, p = self.conf, self.progress
        done = max(sums.pop("batches", 0.0), 1.0)  # batches of this epoch run by this process
        record: dict = {
            "epoch": p.epoch + 1,
            "step": p.step,
            "lr": self.step.lr,
            "seconds": round(seconds, 2),
            **{f"loss/{k}": v / done for k, v in sums.items()},
        }
        last = p.epoch + 1 == conf.epochs
        is_best = False
        if self.dist.is_main and ((p.epoch + 1) % conf.val_every == 0 or last):
            record.update(self.validate())
            if "val/R@1" in record and record["val/R@1"] > p.best_r1:
                p.best_r1, is_best = record["val/R@1"], True
        ddp.barrier(self.dist)
        p.history.append(record)
        p.epoch, p.position = p.epoch + 1, 0
        self.save("last.pt")
        if is_best:
            self.save("best.pt")
        log.epoch(p.step, record, p.history)
        log.note(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))


def main(
    conf: TrainConfig,
    data_root: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Train on a dataset root into ``run_dir``; returns ``run_dir``."""
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    if resume and not last.is_file():
        raise GeolinkError(f"--resume: {last} not found")
    if not resume:
        check_new_dir(run_dir, force)
        if force and run_dir.is_dir():
            shutil.rmtree(run_dir)  # a forced new run must not inherit the old run's files
    dist = ddp.init_distributed("cuda" if conf.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        data = open_dataset(data_root)
        trainer = Trainer(conf, data, run_dir, dist, quiet)
        if resume:
            trainer.restore(last)
        elif dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        if dist.is_main:
            write_text(run_dir / "config.yaml", conf.to_yaml())
        trainer.fit()
    except GeolinkError:
        if not resume and dist.is_main and not last.is_file():
            shutil.rmtree(run_dir, ignore_errors=True)  # a new run that failed before any checkpoint
        raise
    finally:
        ddp.shutdown(dist)
    return run_dir
