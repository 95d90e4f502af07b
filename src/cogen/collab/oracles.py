"""What a simulated partner judges by: scorers of items in [0, 1] (higher: better).

A person who wants, say, more 3s rates an image by how much it looks like a 3; the simulated
partner does the same with the domain classifier's belief in that class. The mode's own goal
metric uses the same judge without the partner's noise, so it measures what the partner wants.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class ClassPreference:
    """classifier: builds the frozen domain classifier. target: the class the partner wants."""

    def __init__(self, classifier: Callable[[], nn.Module], target: int):
        self.classifier, self.target = classifier(), int(target)
        self.card = dict(getattr(self.classifier, "card", {}))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.classifier.to(images.device).eval()
        return self.classifier(images).softmax(-1)[:, self.target]
