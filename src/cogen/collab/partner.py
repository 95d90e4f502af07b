"""The partner: whoever answers a collaboration mode's questions, a person or a stand-in.

`Partner` is the one interface every mode talks to. A mode asks only what it needs:
- ask_condition(num_classes, n): which classes to generate (collab=prompt_guided);
- edit(images): the part of each image the partner keeps or draws (collab=co_creation);
- rate, compare, supply_facts: for later modes; no partner answers them yet.
An answer of None means "no answer" (e.g. a spent budget); each mode documents what it does then.

`SimulatedPartner` stands in for a person in tests and experiments: seeded, with a share of
random answers (`noise`), an optional favourite class (`bias`) and a limited number of answers
(`budget`), so a mode's behaviour with an imperfect, tiring human can be measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cogen.config import CogenError

MASKS = ("top_half", "left_half", "random_box")


@dataclass
class Edit:
    """What a partner keeps of each image: `mask` (B, C, H, W) bool, True where the pixel is the
    partner's; `observed` (B, C, H, W), the partner's pixels there (zeros elsewhere)."""

    mask: torch.Tensor
    observed: torch.Tensor

    def __len__(self) -> int:
        return len(self.mask)


class Partner:
    """The questions a mode may ask. A partner implements those it can answer."""

    def _cannot(self, question: str):
        return NotImplementedError(f"{type(self).__name__} cannot answer {question}() yet: no partner implements it; "
                                   f"it is part of the collaboration modes still to come.")

    def ask_condition(self, num_classes: int, n: int) -> torch.Tensor | None:
        """The classes to generate next: n int labels in [0, num_classes), or None."""
        raise self._cannot("ask_condition")

    def edit(self, images: torch.Tensor) -> Edit | None:
        """The part of each image (B, C, H, W) the partner keeps, or None."""
        raise self._cannot("edit")

    def rate(self, items):
        """A score for each item (a later mode: iterative refinement)."""
        raise self._cannot("rate")

    def compare(self, first, second):
        """Which of two items is better (a later mode: preference feedback)."""
        raise self._cannot("compare")

    def supply_facts(self, query):
        """Facts the model should respect (a later mode: knowledge-guided generation)."""
        raise self._cannot("supply_facts")


class SimulatedPartner(Partner):
    """A seeded stand-in for a person.

    seed: its answers are the same for the same seed and the same questions.
    noise: the probability that an answer is random (a uniformly random class; an edit whose
        pixels are uniform noise) instead of the partner's intent.
    bias: a favourite class it always asks for (without it, it asks for every class equally often).
    budget: how many answers it gives in all (one per class asked for, one per image edited); it
        answers only part of a question that would exceed it, then None. None: no limit.
    mask: which part of an image it keeps in `edit`: top_half, left_half or random_box
        (everything but a random box of a quarter to a half of the height and width).
    """

    def __init__(self, seed: int = 0, noise: float = 0.0, bias: int | None = None, budget: int | None = None,
                 mask: str = "top_half"):
        if not 0.0 <= noise <= 1.0:
            raise CogenError(f"collab.partner.noise={noise}: a probability, between 0 and 1.")
        if budget is not None and budget < 0:
            raise CogenError(f"collab.partner.budget={budget}: a number of answers, 0 or more (null: no limit).")
        if mask not in MASKS:
            raise CogenError(f"collab.partner.mask={mask!r}: use one of {', '.join(MASKS)}.")
        self.noise, self.bias, self.budget, self.mask = noise, bias, budget, mask
        self.generator = torch.Generator().manual_seed(seed)
        self.answered = 0

    def _allowance(self, n: int) -> int:
        """How many of n answers the budget still allows (and counts them as given)."""
        left = n if self.budget is None else min(n, self.budget - self.answered)
        self.answered += left
        return left

    def _random(self, n: int) -> torch.Tensor:
        """n booleans: which answers are random."""
        return torch.rand(n, generator=self.generator) < self.noise

    def ask_condition(self, num_classes: int, n: int) -> torch.Tensor | None:
        if self.bias is not None and not 0 <= self.bias < num_classes:
            raise CogenError(f"collab.partner.bias={self.bias}: not a class of this data set (0..{num_classes - 1}).")
        n = self._allowance(n)
        if n == 0:
            return None
        if self.bias is None:
            intent = (self.answered - n + torch.arange(n)) % num_classes   # every class in turn
            intent = intent[torch.randperm(n, generator=self.generator)]
        else:
            intent = torch.full((n,), self.bias)
        random = torch.randint(num_classes, (n,), generator=self.generator)
        return torch.where(self._random(n), random, intent)

    def edit(self, images: torch.Tensor) -> Edit | None:
        n = self._allowance(len(images))
        if n == 0:
            return None
        images = images[:n]
        mask = self._masks(images.shape).to(images.device)
        noise = torch.rand(images.shape, generator=self.generator).to(images)
        pixels = torch.where(self._random(n).to(images.device).view(-1, 1, 1, 1), noise, images)
        return Edit(mask, torch.where(mask, pixels, torch.zeros_like(pixels)))

    def _masks(self, shape: torch.Size) -> torch.Tensor:
        b, c, h, w = shape
        rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        if self.mask == "top_half":
            keep = (rows < h // 2).expand(b, h, w)
        elif self.mask == "left_half":
            keep = (cols < w // 2).expand(b, h, w)
        else:
            box_h = torch.randint(max(1, h // 4), max(1, h // 2) + 1, (b, 1, 1), generator=self.generator)
            box_w = torch.randint(max(1, w // 4), max(1, w // 2) + 1, (b, 1, 1), generator=self.generator)
            top = (torch.rand(b, 1, 1, generator=self.generator) * (h - box_h + 1)).long()
            left = (torch.rand(b, 1, 1, generator=self.generator) * (w - box_w + 1)).long()
            inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
            keep = ~inside
        return keep.unsqueeze(1).expand(b, c, h, w).clone()
