"""Errors of image completion (collab=co_creation), against the true images.

- CompletionError: squared error and binary cross-entropy (nats) per missing pixel, between the
  completed grey values and the truth: how well the model guessed what the partner left out;
- KeptPixelError: the largest change to a pixel the partner kept (0 when kept exactly).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

EPS = 1e-6


class CompletionError(Metric):
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("squared", "cross_entropy"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, completed: torch.Tensor, truth: torch.Tensor, missing: torch.Tensor) -> None:
        """completed, truth: (B, C, H, W) in [0, 1]; missing: bool, True where the model filled in."""
        guess, target = completed[missing].double(), truth[missing].double()
        self.squared += (guess - target).pow(2).sum()
        self.cross_entropy += F.binary_cross_entropy(guess.clamp(EPS, 1 - EPS), target, reduction="sum")
        self.count += missing.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp_min(1)
        return {"mse": (self.squared / n).float(), "bce": (self.cross_entropy / n).float()}


class KeptPixelError(Metric):
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("largest", default=torch.tensor(0.0), dist_reduce_fx="max")

    def update(self, completed: torch.Tensor, observed: torch.Tensor, kept: torch.Tensor) -> None:
        if kept.any():
            self.largest = torch.maximum(self.largest, (completed[kept] - observed[kept]).abs().max().float())

    def compute(self) -> torch.Tensor:
        return self.largest
