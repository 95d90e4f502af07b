"""`model/reward=sentiment`: VADER's compound sentiment score (Hutto & Gilbert 2014) of each
response, in -1..1. VADER is a rule-based, human-validated lexicon that ships in the
`vaderSentiment` wheel and runs offline: the simulated partner of Ziegler et al.'s "positive
sentiment" task, where their labellers (and reward model) stood in for it.
"""
from __future__ import annotations

import torch

from cogen.rl.rewards import Responses, Reward


class SentimentReward(Reward):
    """scale x compound score of the response (with_prompt: of prompt + response)."""

    needs_text = True

    def __init__(self, scale: float = 1.0, with_prompt: bool = False):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer, self.scale, self.with_prompt = SentimentIntensityAnalyzer(), scale, with_prompt

    def __call__(self, batch: Responses) -> torch.Tensor:
        texts = [p + t for p, t in zip(batch.prompts, batch.texts)] if self.with_prompt else batch.texts
        return torch.tensor([self.scale * self.analyzer.polarity_scores(t)["compound"] for t in texts])

    def __repr__(self) -> str:
        return f"SentimentReward(scale={self.scale}, with_prompt={self.with_prompt})"
