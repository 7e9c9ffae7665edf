"""vCLUB: a variational upper bound of the mutual information between two feature sets.

A Gaussian q(y|x) is fitted by maximum likelihood on positive pairs (``learning_loss``, with its own
optimiser, on detached features); the encoders then minimise ``upper_bound`` with q held fixed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from geolink_edge.registry import check_name

# learned: unbounded log-variance on descriptors rescaled to unit coordinates (the default);
# bounded: the original CLUB code's tanh log-variance on the raw features; fixed: unit variance
VARIANCES = ("learned", "bounded", "fixed")


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class CLUBEstimator(nn.Module):
    """q(y|x) = N(mu(x), diag(exp(logvar(x)))).

    ``variance="learned"``: the log-variance is unbounded and both feature sets are multiplied by
    the square root of their dimension first. Unit-length descriptors have coordinates of about
    1/sqrt(dim) (variance 2.4e-4 at 4096-d); rescaled, they are of order 1, where the networks'
    default init and the starting unit variance sit, so the variance reaches the data's within a
    few hundred steps. The bound is unchanged by the rescaling (it shifts both log-densities of a
    difference by the same constant). ``"bounded"`` is the original CLUB form (tanh: variance in
    [e^-1, e], which unit-length descriptors never reach); ``"fixed"`` a unit variance.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 4096, variance: str = "learned"):
        super().__init__()
        check_name("vCLUB variance", variance, VARIANCES, ValueError)
        self.variance_form = variance
        rescale = variance == "learned"
        self.x_scale, self.y_scale = (math.sqrt(x_dim), math.sqrt(y_dim)) if rescale else (1.0, 1.0)
        self.mean = _mlp(x_dim, hidden, y_dim)
        self.logvar: nn.Module | None = None
        if variance == "learned":
            self.logvar = _mlp(x_dim, hidden, y_dim)
        elif variance == "bounded":
            self.logvar = nn.Sequential(_mlp(x_dim, hidden, y_dim), nn.Tanh())

    def _gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(y|x), in the rescaled units of y."""
        x = x * self.x_scale
        mu = self.mean(x)
        logvar = torch.zeros_like(mu) if self.logvar is None else self.logvar(x)
        return mu, logvar

    @staticmethod
    def _log_density(y: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """log N(y; mu, exp(logvar)) summed over the feature axis."""
        return -0.5 * (((y - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)

    def variance(self, x: torch.Tensor) -> torch.Tensor:
        """The variance of q(y|x) per coordinate, in the units of the features passed in."""
        return self._gaussian(x)[1].exp() / self.y_scale**2

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean log q(y_i | x_i) over the batch (of the rescaled y): what the estimator maximises."""
        mu, logvar = self._gaussian(x)
        return self._log_density(y * self.y_scale, mu, logvar).mean()

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The estimator's loss (negative log-likelihood); pass detached features."""
        return -self.log_likelihood(x, y)

    def upper_bound(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """mean_i [log q(y_i|x_i) − log q(y_σ(i)|x_i)] with σ a random in-batch shuffle."""
        mu, logvar = self._gaussian(x)
        y = y * self.y_scale
        perm = torch.randperm(y.shape[0], generator=generator).to(y.device)
        positive = self._log_density(y, mu, logvar)
        negative = self._log_density(y[perm], mu, logvar)
        return (positive - negative).mean()
