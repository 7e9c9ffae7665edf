"""vCLUB: a variational upper bound of the mutual information between two feature sets.

A Gaussian q(y|x) is fitted by maximum likelihood on positive pairs (``learning_loss``, with its own
optimiser, on detached features); the encoders then minimise ``upper_bound`` with q held fixed.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class CLUBEstimator(nn.Module):
    """q(y|x) = N(mu(x), diag(exp(logvar(x)))), or unit variance with ``fixed_variance``.

    The learned log-variance goes through a tanh (bounded to [-1, 1]) as in the original CLUB; the
    fixed-variance variant avoids its saturation and is the more stable choice for long runs.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 4096, fixed_variance: bool = False):
        super().__init__()
        self.mean = _mlp(x_dim, hidden, y_dim)
        self.logvar = None if fixed_variance else nn.Sequential(_mlp(x_dim, hidden, y_dim), nn.Tanh())

    def _gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.mean(x)
        logvar = torch.zeros_like(mu) if self.logvar is None else self.logvar(x)
        return mu, logvar

    @staticmethod
    def _log_density(y: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """log N(y; mu, exp(logvar)) summed over the feature axis."""
        return -0.5 * (((y - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean log q(y_i | x_i) over the batch: what the estimator maximises."""
        mu, logvar = self._gaussian(x)
        return self._log_density(y, mu, logvar).mean()

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The estimator's loss (negative log-likelihood); pass detached features."""
        return -self.log_likelihood(x, y)

    def upper_bound(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """mean_i [log q(y_i|x_i) − log q(y_σ(i)|x_i)] with σ a random in-batch shuffle."""
        mu, logvar = self._gaussian(x)
        perm = torch.randperm(y.shape[0], generator=generator).to(y.device)
        positive = self._log_density(y, mu, logvar)
        negative = self._log_density(y[perm], mu, logvar)
        return (positive - negative).mean()
