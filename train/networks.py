"""The networks a training run optimises, assembled from a :class:`TrainConfig`.

``features`` (encoder + Point-NN + MME, the part DDP wraps) maps a batch to the feature dict the
loss reads (``dro``, ``sat``, ``pc`` and, for the second-view intra-view term, ``dro2``, ``sat2``,
``pc2``).
``loss_fn`` is :class:`GeoLinkLoss` (its learnable logit scale trains with the encoders; its vCLUB
estimators have their own optimiser).
"""

from __future__ import annotations

import torch
from torch import nn

from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError
from geolink_edge.losses import GeoLinkLoss
from geolink_edge.models.encoder import ImageEncoder
from geolink_edge.models.mme import MixtureOfExperts
from geolink_edge.models.pointnn import PointNN
from geolink_edge.train.config import TrainConfig
from geolink_edge.train.distributed import DistInfo

LOGIT_SCALES = ("logit_scale", "sc_logit_scale")


class FeatureModel(nn.Module):
    def __init__(self, conf: TrainConfig, card: ModelCard):
        super().__init__()
        self.encoder = ImageEncoder(
            card, pretrained=conf.pretrained, weights=conf.weights, freeze_blocks=conf.freeze_blocks
        )
        self.second_views = conf.needs_second_views
        self.pointnn: PointNN | None = None
        self.branch3d: nn.Module | None = None
        if conf.needs_3d:
            self.pointnn = PointNN(stages=conf.point_stages, embed_dim=conf.point_dim, k=conf.point_k)
            dim = self.encoder.descriptor_dim
            # without the MME block a linear head brings the 3D feature to the descriptor's size
            self.branch3d = (
                MixtureOfExperts(self.pointnn.out_dim, dim, conf.experts)
                if conf.mme
                else nn.Linear(self.pointnn.out_dim, dim)
            )

    def _views(self, module, batch: dict[str, torch.Tensor], key: str) -> tuple[torch.Tensor, ...]:
        """``module`` on ``batch[key]``, and on ``batch[key + "2"]`` when the second view is needed
        (one pass over twice the batch)."""
        if not self.second_views:
            return (module(batch[key]),)
        return module(torch.cat([batch[key], batch[f"{key}2"]])).chunk(2)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        for name, key in (("dro", "drone"), ("sat", "satellite")):
            feats.update(zip((name, f"{name}2"), self._views(self.encoder, batch, key), strict=False))
        if self.pointnn is not None:
            views = self._views(lambda x: self.branch3d(self.pointnn(x)), batch, "points")
            feats.update(zip(("pc", "pc2"), views, strict=False))
        return feats


class GeoLinkNetworks(nn.Module):
    def __init__(self, conf: TrainConfig, card: ModelCard):
        super().__init__()
        self.conf = conf
        self.features = FeatureModel(conf, card)
        dim = self.features.encoder.descriptor_dim
        active = conf.active_losses
        weights = {t: (conf.loss_weight(t) if t in active else 0.0) for t in ("cc", "sc", "ga", "rd")}
        self.loss_fn = GeoLinkLoss(
            dim=dim,
            temperature=conf.temperature,
            cc_temperature=conf.cc_temperature,
            sc_temperature=conf.sc_temperature,
            symmetric=conf.infonce == "symmetric",
            label_smoothing=conf.label_smoothing,
            club_hidden=conf.club_hidden,
            club_variance=conf.club_variance,
            sc_positive=conf.sc_positive,
            rd_scale=conf.rd_scale,
            **weights,
        )
        if "ga" not in active:
            self.loss_fn.club = nn.ModuleDict()  # estimators of an inactive term would only cost memory
        self.baseline = conf.baseline

    @property
    def encoder(self) -> ImageEncoder:
        return self.features.encoder

    @property
    def club(self) -> nn.ModuleDict | None:
        return self.loss_fn.club if len(self.loss_fn.club) else None

    def trained_parameters(self) -> list[nn.Parameter]:
        """What the main optimiser updates: encoders, 3D head, logit scale (not the estimators)."""
        return [*self.features.parameters(), *self.loss_fn.encoder_parameters()]

    def set_club_trainable(self, flag: bool) -> None:
        if self.club is not None:
            self.club.requires_grad_(flag)

    def loss(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.baseline:  # L(dro, sat) in L_cc's form, temperature and smoothing
            value = self.loss_fn.cross_view(feats["dro"].float(), feats["sat"].float())
            logged = {"cc": value.detach()}
            if self.loss_fn.logit_scale is not None:
                logged["logit_scale"] = self.loss_fn.logit_scale.detach().exp()
            return value, logged
        return self.loss_fn(feats)

    def club_fit_loss(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_fn.club_loss({k: v.float() for k, v in feats.items()})

    def branch_state(self) -> dict:
        """3D head and learned logit scales: what a checkpoint needs beyond the encoder and the
        estimators."""
        state = {
            name: getattr(self.loss_fn, name).detach().clone()
            for name in LOGIT_SCALES
            if getattr(self.loss_fn, name) is not None
        }
        if self.features.branch3d is not None:
            state.update({f"branch3d.{k}": v for k, v in self.features.branch3d.state_dict().items()})
        return state

    def load_branch_state(self, state: dict) -> None:
        with torch.no_grad():
            for name in LOGIT_SCALES:
                if getattr(self.loss_fn, name) is not None and name in state:
                    getattr(self.loss_fn, name).copy_(state[name])
        if self.features.branch3d is not None:
            prefix = "branch3d."
            self.features.branch3d.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )

    def wrap_ddp(self, dist: DistInfo) -> nn.Module:
        if not dist.enabled:
            raise GeolinkError("DDP wrapping needs a distributed run")
        device_ids = [dist.local_rank] if next(self.parameters()).is_cuda else None
        return nn.parallel.DistributedDataParallel(self.features, device_ids=device_ids)
