"""Mode-collapse metrics of PacGAN (Lin et al. 2018), as read from the paper's code
(fjxmlzn/PacGAN, synthetic_data_experiments/PacGAN/pacgan/extensions.py, MetricLogger):

- a sample is *high quality* when its distance to the nearest mean, in units of that mode's
  standard deviation, is below 3;
- a mode is *captured* when it is the nearest mode of at least one high-quality sample;
- *reverse KL* is KL(p || uniform) for p the distribution of the high-quality samples over
  modes. Low-quality samples are left out of p (the code normalises the per-mode counts of
  high-quality samples only), so reverse KL = log K - H(p).
"""
from __future__ import annotations

import math

import torch
from torchmetrics import Metric


class _ModeCounts(Metric):
    """Accumulates how many high-quality samples fall to each mode, and how many samples in all."""

    full_state_update = False

    def __init__(self, mixture, threshold: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("means", torch.as_tensor(mixture.means, dtype=torch.float32), persistent=False)
        self.std, self.threshold = float(mixture.std), float(threshold)
        self.add_state("counts", default=torch.zeros(len(self.means)), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, samples: torch.Tensor) -> None:
        samples = samples.reshape(-1, self.means.shape[1]).float()
        dist = torch.cdist(samples, self.means.to(samples.device)) / self.std
        nearest_dist, nearest = dist.min(dim=1)
        good = nearest_dist < self.threshold
        self.counts += torch.bincount(nearest[good], minlength=len(self.means)).to(self.counts)
        self.total += samples.shape[0]


class ModesCaptured(_ModeCounts):
    """Number of modes that are the nearest mode of at least one high-quality sample."""

    higher_is_better = True

    def compute(self) -> torch.Tensor:
        return (self.counts > 0).sum().float()


class HighQualityPercent(_ModeCounts):
    """Percentage of samples within `threshold` standard deviations of their nearest mean."""

    higher_is_better = True

    def compute(self) -> torch.Tensor:
        return 100.0 * self.counts.sum() / self.total.clamp_min(1)


class ReverseKL(_ModeCounts):
    """KL(p || uniform) over modes for the high-quality samples; NaN when there are none."""

    higher_is_better = False

    def compute(self) -> torch.Tensor:
        n_good = self.counts.sum()
        if n_good == 0:
            return torch.tensor(float("nan"), device=self.counts.device)
        p = self.counts / n_good
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        return math.log(len(self.counts)) - entropy
