"""Prompt adherence: the share of generated images that a frozen domain classifier assigns to
the class that was asked for (collab=prompt_guided). A judge independent of the generator,
trained on real images of the same data set (`cogen.metrics.domain`)."""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric


class PromptAdherence(Metric):
    higher_is_better = True
    full_state_update = False

    def __init__(self, classifier: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, images: torch.Tensor, requested: torch.Tensor) -> None:
        """images: (B, C, H, W) in [0, 1]; requested: the class asked for with each, (B,)."""
        self.classifier.eval()   # a parent's .train() must not switch its dropout on
        predicted = self.classifier(images).argmax(-1)
        self.correct += (predicted == requested.to(predicted.device)).sum()
        self.total += len(requested)

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp_min(1)
