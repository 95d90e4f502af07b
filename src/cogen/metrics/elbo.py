"""Per-example averages of the VAE family's bounds, as torchmetrics Metrics (nats per image).

- ELBO: E_q[log p(x|z)] - KL(q(z|x) || p(z)), the evidence lower bound (beta = 1 always);
- ReconstructionError: -E_q[log p(x|z)];
- KLDivergence: KL(q(z|x) || p(z)), in closed form for Gaussians;
- IWAELogLikelihood: the importance-weighted bound of Burda, Grosse & Salakhutdinov (2016),
  log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x), from the k log-weights of each example.
  It is a lower bound of log p(x) that tightens as k grows; k = 5000 is the paper's estimate
  of the test log-likelihood.
"""
from __future__ import annotations

import math

import torch
from torchmetrics import Metric


def iwae_bound(log_weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/k) sum_i exp(log_weights_i) along `dim`, with a stable logsumexp."""
    return torch.logsumexp(log_weights, dim=dim) - math.log(log_weights.shape[dim])


class _PerExampleMean(Metric):
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        """values: one number per example, shape (B,)."""
        values = values.detach()
        self.total += values.sum().to(self.total.dtype)
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()


class ELBO(_PerExampleMean):
    higher_is_better = True


class ReconstructionError(_PerExampleMean):
    higher_is_better = False


class KLDivergence(_PerExampleMean):
    higher_is_better = False


class IWAELogLikelihood(_PerExampleMean):
    """The k-sample importance-weighted estimate of log p(x), averaged over examples."""

    higher_is_better = True

    def update(self, log_weights: torch.Tensor) -> None:
        """log_weights: log p(x, z_i) - log q(z_i|x), shape (k, B)."""
        super().update(iwae_bound(log_weights.detach().double(), dim=0))
