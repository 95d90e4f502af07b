"""The partner: whoever answers a collaboration mode's questions, a person or a stand-in.

`Partner` is the one interface every mode talks to. A mode asks only what it needs:
- ask_condition(num_classes, n): which classes to generate (collab=prompt_guided);
- edit(items): the part of each item the partner keeps or writes (collab=co_creation): of an
  image, the pixels it keeps; of a text, the start it writes (its draft), which the model continues;
- rate(items): a 1-5 rating of each item (collab=iterative_refinement);
- compare(first, second): which of each pair is better (preference feedback);
- supply_facts(query): facts the model should respect (collab=knowledge_guided).
Items are images (a (B, C, H, W) tensor in [0, 1]) or texts (a list of str).
An answer of None means "no answer" (e.g. a spent budget); each mode documents what it does then.
A shorter answer than asked for means the budget ran out part way.

`SimulatedPartner` stands in for a person in tests and experiments: seeded, with a share of
random answers (`noise`), an optional favourite class (`bias`), a limited number of answers
(`budget`) and a delay per question (`latency`). It rates and compares from an `oracle` (a
scorer in [0, 1], e.g. a classifier's belief in the favourite class), so a mode's behaviour with
an imperfect, tiring human can be measured. Every partner's answers are stored by
`cogen.collab.recorded.RecordedPartner`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from cogen.config import CogenError

MASKS = ("top_half", "left_half", "random_box")
RATINGS = (1, 5)   # the rating scale, lowest and highest: a 5-point Likert scale


@dataclass
class Edit:
    """What a partner keeps of each image: `mask` (B, C, H, W) bool, True where the pixel is the
    partner's; `observed` (B, C, H, W), the partner's pixels there (zeros elsewhere)."""

    mask: torch.Tensor
    observed: torch.Tensor

    def __len__(self) -> int:
        return len(self.mask)


class Partner:
    """The questions a mode may ask. A partner implements those it can answer.
    `kind` and `id` say who answered, in the feedback store."""

    kind = "partner"

    @property
    def id(self) -> str:
        return self.kind

    def _cannot(self, question: str):
        return CogenError(f"{type(self).__name__} ({self.kind}) cannot answer {question}(): choose a partner that can "
                          f"(collab/partner=simulated answers every question).")

    def ask_condition(self, num_classes: int, n: int) -> torch.Tensor | None:
        """The classes to generate next: n int labels in [0, num_classes), or None."""
        raise self._cannot("ask_condition")

    def edit(self, items: torch.Tensor | Sequence[str]) -> Edit | list[str] | None:
        """Of images (B, C, H, W): the part of each the partner keeps (an Edit). Of texts: the
        partner's draft of each, the start the model continues ("" leaves it all to the model). Or None."""
        raise self._cannot("edit")

    def rate(self, items: torch.Tensor | Sequence[str]) -> torch.Tensor | None:
        """A rating of each item, int64 in RATINGS (1 worst, 5 best), or None."""
        raise self._cannot("rate")

    def compare(self, first: torch.Tensor | Sequence[str], second: torch.Tensor | Sequence[str]) -> torch.Tensor | None:
        """For each pair (first[i], second[i]): 0 if the first is better, 1 if the second; or None."""
        raise self._cannot("compare")

    def supply_facts(self, query: str) -> list[tuple[str, str, str]] | None:
        """(head, relation, tail) facts the model should respect when it answers `query`, or None."""
        raise self._cannot("supply_facts")


class SimulatedPartner(Partner):
    """A seeded stand-in for a person.

    seed: its answers are the same for the same seed and the same questions.
    noise: the probability that an answer is random (a uniformly random class; an edit whose
        pixels are uniform noise) instead of the partner's intent.
    bias: a favourite class it always asks for (without it, it asks for every class equally often).
    budget: how many answers it gives in all (one per class asked for, image edited, item rated,
        pair compared or query answered); it answers only part of a question that would exceed it,
        then None. None: no limit.
    mask: which part of an image it keeps in `edit`: top_half, left_half or random_box
        (everything but a random box of a quarter to a half of the height and width). Of a text
        it always keeps the first half of the words: its draft.
    oracle: scores items in [0, 1] (higher: better) for `rate` and `compare`; a pair it scores
        equally gets a fair coin's answer (a person without a preference), not always the first.
    facts: the (head, relation, tail) facts it knows, for `supply_facts` (those that mention the query).
    latency: seconds it takes to answer each question, to measure a mode's wall time with a person.
    """

    kind = "simulated"

    def __init__(self, seed: int = 0, noise: float = 0.0, bias: int | None = None, budget: int | None = None,
                 mask: str = "top_half", oracle: Callable[[torch.Tensor | Sequence[str]], torch.Tensor] | None = None,
                 facts: Sequence[Sequence[str]] = (), latency: float = 0.0):
        if not 0.0 <= noise <= 1.0:
            raise CogenError(f"collab.partner.noise={noise}: a probability, between 0 and 1.")
        if budget is not None and budget < 0:
            raise CogenError(f"collab.partner.budget={budget}: a number of answers, 0 or more (null: no limit).")
        if mask not in MASKS:
            raise CogenError(f"collab.partner.mask={mask!r}: use one of {', '.join(MASKS)}.")
        if latency < 0:
            raise CogenError(f"collab.partner.latency={latency}: seconds per answer, 0 or more.")
        self.noise, self.bias, self.budget, self.mask = noise, bias, budget, mask
        self.oracle, self.facts, self.latency, self.seed = oracle, [tuple(f) for f in facts], latency, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.answered = 0

    @property
    def id(self) -> str:
        return f"simulated(seed={self.seed}, noise={self.noise}, bias={self.bias})"

    def state_dict(self) -> dict:
        """What a resumed run needs to go on answering as this one would: answers given, random state."""
        return {"answered": self.answered, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.answered = state["answered"]
        self.generator.set_state(state["generator"])

    def _wait(self) -> None:
        if self.latency:
            time.sleep(self.latency)

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
        self._wait()
        if self.bias is None:
            intent = (self.answered - n + torch.arange(n)) % num_classes   # every class in turn
            intent = intent[torch.randperm(n, generator=self.generator)]
        else:
            intent = torch.full((n,), self.bias)
        random = torch.randint(num_classes, (n,), generator=self.generator)
        return torch.where(self._random(n), random, intent)

    def edit(self, items: torch.Tensor | Sequence[str]) -> Edit | list[str] | None:
        n = self._allowance(len(items))
        if n == 0:
            return None
        self._wait()
        if not isinstance(items, torch.Tensor):
            return self._drafts([str(t) for t in items[:n]])
        images = items[:n]
        mask = self._masks(images.shape).to(images.device)
        noise = torch.rand(images.shape, generator=self.generator).to(images)
        pixels = torch.where(self._random(n).to(images.device).view(-1, 1, 1, 1), noise, images)
        return Edit(mask, torch.where(mask, pixels, torch.zeros_like(pixels)))

    def _drafts(self, texts: list[str]) -> list[str]:
        """The first half of each text's words; a random draft (as many words drawn from all the
        texts shown) where the answer is noisy."""
        words = [t.split() for t in texts]
        pool = [w for ws in words for w in ws]
        drafts = []
        for ws, random in zip(words, self._random(len(texts)).tolist()):
            keep = len(ws) // 2
            if random and pool:
                ws = [pool[i] for i in torch.randint(len(pool), (keep,), generator=self.generator).tolist()]
            drafts.append(" ".join(ws[:keep]))
        return drafts

    def _need_oracle(self) -> None:
        if self.oracle is None:   # checked before the budget is charged
            raise CogenError("the simulated partner has no oracle to rate or compare with: set collab.partner.oracle "
                             "(collab=iterative_refinement sets one per family).")

    def _scores(self, items) -> torch.Tensor:
        return torch.as_tensor(self.oracle(items), dtype=torch.float32).detach().cpu().clamp(0, 1)

    def rate(self, items: torch.Tensor | Sequence[str]) -> torch.Tensor | None:
        self._need_oracle()
        n = self._allowance(len(items))
        if n == 0:
            return None
        self._wait()
        low, high = RATINGS
        intent = (low + torch.round(self._scores(items[:n]) * (high - low))).long()
        random = torch.randint(low, high + 1, (n,), generator=self.generator)
        return torch.where(self._random(n), random, intent)

    def compare(self, first: torch.Tensor | Sequence[str], second: torch.Tensor | Sequence[str]) -> torch.Tensor | None:
        self._need_oracle()
        n = self._allowance(len(first))
        if n == 0:
            return None
        self._wait()
        first_score, second_score = self._scores(first[:n]), self._scores(second[:n])
        random = torch.randint(0, 2, (n,), generator=self.generator)
        # Equal scores: no preference, so the answer is the coin already drawn (no extra draws:
        # the answers where the oracle has a preference stay as they were).
        intent = torch.where(second_score == first_score, random, (second_score > first_score).long())
        return torch.where(self._random(n), random, intent)

    def supply_facts(self, query: str) -> list[tuple[str, str, str]] | None:
        if self._allowance(1) == 0:
            return None
        self._wait()
        known = [f for f in self.facts if f[0] == query or f[2] == query]
        other = [f for f in self.facts if f not in known]
        if self._random(1).item() and other:   # a wrong fact: a known one about something else
            return [other[int(torch.randint(len(other), (1,), generator=self.generator))]]
        return known

    def _masks(self, shape: torch.Size) -> torch.Tensor:
        return make_masks(shape, self.mask, self.generator)


def partner_state(partner: Partner) -> dict | None:
    """What a resumed run needs of its partner (a simulated one's answers and random state), or
    None for a partner without state (a person, a replay); a mode's checkpoint state holds it."""
    state_dict = getattr(partner, "state_dict", None)
    return state_dict() if state_dict else None


def restore_partner(partner: Partner, state: dict | None) -> None:
    if state is not None and hasattr(partner, "load_state_dict"):
        partner.load_state_dict(state)


def simulated_parts(partner: Partner) -> list[SimulatedPartner]:
    """The simulated partners behind `partner`: itself, the one a RecordedPartner records, or a web
    partner's fallback. A mode gives them what the family judges by (an oracle, the graph's facts)
    when the config gave them none."""
    inner = partner.__dict__.get("partner", partner)   # through RecordedPartner
    found = [inner, getattr(inner, "simulated", None)]
    return [p for p in found if isinstance(p, SimulatedPartner)]


def make_masks(shape: torch.Size, mask: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) bool, True on the kept part (one of MASKS); shared by every partner that edits,
    so a person's top_half is the simulated partner's. random_box draws its boxes from `generator`."""
    b, c, h, w = shape
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    if mask == "top_half":
        keep = (rows < h // 2).expand(b, h, w)
    elif mask == "left_half":
        keep = (cols < w // 2).expand(b, h, w)
    else:
        box_h = torch.randint(max(1, h // 4), max(1, h // 2) + 1, (b, 1, 1), generator=generator)
        box_w = torch.randint(max(1, w // 4), max(1, w // 2) + 1, (b, 1, 1), generator=generator)
        top = (torch.rand(b, 1, 1, generator=generator) * (h - box_h + 1)).long()
        left = (torch.rand(b, 1, 1, generator=generator) * (w - box_w + 1)).long()
        inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
        keep = ~inside
    return keep.unsqueeze(1).expand(b, c, h, w).clone()
