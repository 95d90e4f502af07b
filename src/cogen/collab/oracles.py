"""What a simulated partner judges by: scorers of items in [0, 1] (higher: better).

A person who wants, say, more 3s rates an image by how much it looks like a 3; the simulated
partner does the same with the domain classifier's belief in that class. The mode's own goal
metric uses the same judge without the partner's noise, so it measures what the partner wants.
For text, the judge is the RL-tuned LM's own reward (model.reward), scaled to [0, 1].
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


class ClassPreference:
    """classifier: the frozen domain classifier (or what builds it). target: the class the partner wants."""

    def __init__(self, classifier: nn.Module | Callable[[], nn.Module], target: int):
        self.classifier = classifier if isinstance(classifier, nn.Module) else classifier()
        self.target = int(target)
        self.card = dict(getattr(self.classifier, "card", {}))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.classifier.to(images.device).eval()
        return self.classifier(images).softmax(-1)[:, self.target]


class RewardScale:
    """A text judge from an RL reward: (reward - low) / (high - low), clipped to [0, 1]."""

    def __init__(self, reward: Callable, low: float, high: float):
        self.reward, self.low, self.high = reward, float(low), float(high)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        from cogen.rl.rewards import Responses

        reward = self.reward(Responses(None, None, None, texts=list(texts)))   # a text rule: it reads .texts
        return ((torch.as_tensor(reward, dtype=torch.float32).cpu() - self.low) / (self.high - self.low)).clamp(0, 1)
