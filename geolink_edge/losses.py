"""The GeoLink training objective: total = L_cc + L_rd + L_ga + λ·L_sc (λ = 4 in the paper).

Feature names used throughout: ``dro`` (drone images), ``sat`` (satellite tiles), ``pc`` (3D features
after the MME block), and ``dro2``/``sat2``/``pc2`` for second views of the same instances (only
the ``second_view`` form of L_sc reads them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from geolink_edge.models.club import CLUBEstimator
from geolink_edge.registry import check_name

VIEWS = ("dro", "sat", "pc")
CROSS_VIEW_PAIRS = (("dro", "sat"), ("dro", "pc"), ("sat", "pc"))
SC_POSITIVES = ("self", "second_view")
RD_SCALES = ("paper", "mean")
TEMPERATURES = ("learned", "fixed")


def info_nce(
    q: torch.Tensor,
    r: torch.Tensor,
    temperature: float = 0.07,
    logit_scale: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    symmetric: bool = True,
) -> torch.Tensor:
    """InfoNCE where row i of ``q`` and row i of ``r`` are the positive pair, other rows negatives.

    Features are L2-normalised first. Logits are cosine similarities divided by ``temperature``, or
    multiplied by ``exp(logit_scale)`` when a (learnable, log-space) scale is given. ``symmetric``
    averages the q→r and r→q cross-entropies.
    """
    q, r = F.normalize(q, dim=-1), F.normalize(r, dim=-1)
    scale = logit_scale.exp() if logit_scale is not None else 1.0 / temperature
    logits = scale * q @ r.T
    labels = torch.arange(q.shape[0], device=q.device)
    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, labels, label_smoothing=label_smoothing)) / 2
    return loss


def normalised_distances(features: torch.Tensor, scale: str = "paper") -> torch.Tensor:
    """Pairwise Euclidean distances over i≠j, the diagonal 0. (B, B).

    ``scale="paper"`` divides by their sum (Eq. 11-12): entries are about 1/(B(B-1)), so the squared
    differences of Eq. 13 are tiny and L_rd barely moves the encoder at the paper's weight (gradient
    ~1e-5 of InfoNCE's, ``benchmarks/loss_scales.py``). ``"mean"`` divides by their mean instead
    (entries about 1, the usual form of distance distillation): the same relation, and a loss
    (B(B-1))² times larger.
    """
    check_name("L_rd scale", scale, RD_SCALES, ValueError)
    batch = features.shape[0]
    sq = (features * features).sum(-1)
    d2 = sq[:, None] + sq[None, :] - 2 * features @ features.T
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=features.device)
    # clamp: a zero distance has no sqrt gradient; the diagonal is masked out anyway
    dist = d2.clamp_min(1e-12).sqrt() * off_diagonal
    total = dist.sum().clamp_min(1e-12)
    return dist / total if scale == "paper" else dist * (batch * (batch - 1)) / total


def relation_distillation(student: torch.Tensor, teacher: torch.Tensor, scale: str = "paper") -> torch.Tensor:
    """L_rd for one view (Eq. 13): MSE over i≠j between the student's and the (detached) teacher's
    normalised distance matrices. Zero when the student is the teacher up to a scale."""
    batch = student.shape[0]
    diff = normalised_distances(student, scale) - normalised_distances(teacher.detach(), scale)
    return (diff**2).sum() / (batch * (batch - 1))


class GeoLinkLoss(nn.Module):
    """The full objective with every term switchable (weight 0 turns a term off).

    * ``cc`` cross-view InfoNCE (Eq. 6): L(dro, sat) + L(dro, pc) + L(sat, pc), each Eq. 5 with the
      first set as queries (``symmetric=False``, the paper's form) or averaged with the reverse
      direction (``symmetric=True``, Sample4Geo's). ``label_smoothing`` applies to L_cc only
      (Eq. 5 has none: 0 by default; Sample4Geo uses 0.1).
    * ``sc`` intra-view InfoNCE. ``sc_positive="self"`` (Eq. 7): (dro, dro) + (sat, sat) + (pc, pc),
      each anchor its own positive and the batch's other instances its negatives, never smoothed
      (smoothing moves its optimum to instances with cosine about 0.7: it would pull them
      together). Its positive logit is always the largest, yet the loss falls only as the other
      instances move away: an instance-separation term. ``"second_view"``: (dro, dro2) +
      (sat, sat2) + (pc, pc2), the positive another drone image of the location, another
      augmentation of the tile, another draw of the cloud; twice the image forward passes.
    * ``ga`` geometric-aware refinement: vCLUB(dro; pc) + vCLUB(sat; pc), the bound of
      q(F_2D | F_pc) estimators held in ``self.club`` (fitted separately, see :meth:`club_loss`).
    * ``rd`` relation distillation from the 3D teacher ``pc`` to both 2D students, on distances
      scaled by ``rd_scale`` (see :func:`normalised_distances`).
    * ``club_variance``: the estimators' q(y|x) variance (see :class:`CLUBEstimator`).

    Temperatures: τ of Eq. 5 is ``temperature``. ``cc_temperature="learned"`` learns L_cc's as a
    log-space logit scale starting at 1/τ (the baseline lineage the paper builds on), ``"fixed"``
    keeps τ. L_sc has its own: ``sc_temperature="fixed"`` (τ, the default: a learned scale on the
    self-positive term only grows, since sharper logits always lower it) or ``"learned"`` (a
    separate scale, also starting at 1/τ). L_sc never moves L_cc's temperature.
    """

    def __init__(
        self,
        dim: int = 4096,
        pc_dim: int | None = None,
        cc: float = 1.0,
        sc: float = 4.0,
        ga: float = 1.0,
        rd: float = 1.0,
        temperature: float = 0.07,
        cc_temperature: str = "learned",
        sc_temperature: str = "fixed",
        symmetric: bool = False,
        label_smoothing: float = 0.0,
        club_hidden: int = 4096,
        club_variance: str = "learned",
        sc_positive: str = "self",
        rd_scale: str = "paper",
    ):
        super().__init__()
        self.weights = {"cc": cc, "sc": sc, "ga": ga, "rd": rd}
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {self.weights}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        check_name("L_cc temperature", cc_temperature, TEMPERATURES, ValueError)
        check_name("L_sc temperature", sc_temperature, TEMPERATURES, ValueError)
        check_name("L_sc positive", sc_positive, SC_POSITIVES, ValueError)
        check_name("L_rd scale", rd_scale, RD_SCALES, ValueError)
        self.sc_positive, self.rd_scale = sc_positive, rd_scale
        self.temperature, self.symmetric, self.label_smoothing = temperature, symmetric, label_smoothing

        def scale(form: str) -> nn.Parameter | None:
            return nn.Parameter(torch.tensor(math.log(1 / temperature))) if form == "learned" else None

        self.logit_scale, self.sc_logit_scale = scale(cc_temperature), scale(sc_temperature)
        pc_dim = pc_dim or dim
        # estimators only when the term is on: at the paper's sizes they hold ~130M parameters
        views = ("dro", "sat") if ga > 0 else ()
        self.club = nn.ModuleDict({v: CLUBEstimator(pc_dim, dim, club_hidden, club_variance) for v in views})

    def cross_view(self, q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """One L_cc pair (and the 2D baseline's only term)."""
        return info_nce(q, r, self.temperature, self.logit_scale, self.label_smoothing, self.symmetric)

    def _intra_view(self, q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return info_nce(q, r, self.temperature, self.sc_logit_scale, 0.0, self.symmetric)

    def _term(self, name: str, f: dict[str, torch.Tensor]) -> torch.Tensor:
        if name == "cc":
            return sum(self.cross_view(f[a], f[b]) for a, b in CROSS_VIEW_PAIRS)
        if name == "sc":
            if self.sc_positive == "self":
                return sum(self._intra_view(f[v], f[v]) for v in VIEWS)
            missing = [f"{v}2" for v in VIEWS if f"{v}2" not in f]
            if missing:
                raise ValueError(f"the second-view intra-view term needs second views: missing {missing}")
            return sum(self._intra_view(f[v], f[f"{v}2"]) for v in VIEWS)
        if name == "ga":
            return sum(self.club[v].upper_bound(f["pc"], f[v]) for v in ("dro", "sat"))
        return sum(relation_distillation(f[v], f["pc"], self.rd_scale) for v in ("dro", "sat"))

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total and each enabled (unweighted) term, detached for logging.

        Computed in float32 even under autocast: the distance matrices and Gaussian log-densities
        lose too much in half precision.
        """
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            features = {k: v.float() for k, v in features.items()}
            terms = {name: self._term(name, features) for name, w in self.weights.items() if w > 0}
        total = sum(self.weights[name] * value for name, value in terms.items())
        logged = {name: value.detach() for name, value in terms.items()}
        for name in ("logit_scale", "sc_logit_scale"):
            if getattr(self, name) is not None and (name == "logit_scale" or "sc" in terms):
                logged[name] = getattr(self, name).detach().exp()
        return total, logged

    def club_loss(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss of the vCLUB estimators on detached features, for their own optimiser.

        The main backward also leaves gradients on the estimators: zero them before this step.
        """
        if not len(self.club):
            raise ValueError("the vCLUB estimators exist only when the ga term is on")
        pc = features["pc"].detach().float()
        return sum(self.club[v].learning_loss(pc, features[v].detach().float()) for v in self.club)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters the main optimiser should train (the learned logit scales); the estimators are
        apart."""
        return [p for p in (self.logit_scale, self.sc_logit_scale) if p is not None]
