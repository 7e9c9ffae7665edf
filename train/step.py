"""One optimisation step of the GeoLink networks, and the optimiser states it owns.

The encoders (and 3D head, logit scale) take an AdamW step on the loss with the vCLUB estimators
frozen; then the estimators take ``club_steps`` steps of their own optimiser on detached features.
Independent of any dataset, so the speed benchmark times exactly what training runs.
"""

from __future__ import annotations

import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from geolink_edge.train import distributed as ddp
from geolink_edge.train.config import TrainConfig
from geolink_edge.train.networks import GeoLinkNetworks
from geolink_edge.train.precision import Precision
from geolink_edge.train.schedule import warmup_cosine

IMAGE_KEYS = {"drone", "drone2", "satellite", "satellite2"}


class TrainStep:
    def __init__(
        self,
        conf: TrainConfig,
        nets: GeoLinkNetworks,
        precision: Precision,
        dist: ddp.DistInfo,
        total_steps: int,
        warmup_steps: int,
    ):
        self.conf, self.nets, self.precision, self.dist = conf, nets, precision, dist
        if conf.channels_last:
            nets.encoder.to(memory_format=torch.channels_last)
        self.params = [p for p in nets.trained_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=conf.lr, weight_decay=conf.weight_decay)
        self.club_optimizer = (
            torch.optim.Adam(nets.club.parameters(), lr=conf.club_lr) if nets.club is not None else None
        )
        self.scheduler = warmup_cosine(self.optimizer, total_steps, warmup_steps, conf.lr, conf.min_lr)
        self.scaler = precision.scaler()
        self.features = nets.wrap_ddp(dist) if dist.enabled else nets.features
        if conf.compile:
            self.features = torch.compile(self.features)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "club_optimizer": self.club_optimizer.state_dict() if self.club_optimizer else {},
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.club_optimizer is not None:
            self.club_optimizer.load_state_dict(state["club_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def _to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        device = self.precision.device
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        if self.conf.channels_last:
            for key in IMAGE_KEYS & batch.keys():
                batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
        return batch

    def __call__(self, batch: dict) -> dict[str, float]:
        """Train on one batch; returns each loss term (averaged over ranks) for logging."""
        conf, nets = self.conf, self.nets
        batch = self._to_device(batch)
        nets.set_club_trainable(False)
        with self.precision.autocast():
            feats = self.features(batch)
            total, terms = nets.loss(feats)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        ddp.average_gradients(nets.loss_fn.encoder_parameters(), self.dist)  # outside the DDP module
        if conf.clip_mode != "none":
            self.scaler.unscale_(self.optimizer)
            clip = clip_grad_norm_ if conf.clip_mode == "norm" else clip_grad_value_
            clip(self.params, conf.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.club_optimizer is not None:
            nets.set_club_trainable(True)
            for _ in range(conf.club_steps):
                self.club_optimizer.zero_grad(set_to_none=True)
                fit = nets.club_fit_loss(feats)
                fit.backward()
                ddp.average_gradients(list(nets.club.parameters()), self.dist)
                self.club_optimizer.step()
            terms["club_fit"] = fit.detach()
        terms["total"] = total.detach()
        return {k: float(ddp.mean_over_ranks(v.float(), self.dist)) for k, v in terms.items()}
