"""What a person may answer, checked the same way in the terminal and on the web page: each
helper turns typed text (or a JSON value) into an answer, or raises ValueError with the reason
the person is shown before being asked again."""
from __future__ import annotations

import re
from typing import Any, Sequence

import torch

from cogen.collab.partner import Edit, make_masks
from cogen.config import CogenError

PARTS = ("top_half", "left_half")   # the parts a person can keep in `edit` (random_box is the simulator's)


class PartnerStopped(CogenError):
    """The person stopped the run (Ctrl-C or closed input) while a question was pending."""


def as_whole(value: Any, what: str, low: int, high: int) -> int:
    """value (typed text or a JSON value) as an int in [low, high]; else ValueError naming it."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = "nothing" if value is None else repr(value)
        raise ValueError(f"{shown} is not {what}: type whole numbers from {low} to {high}")
    return value


def check_count(values: Sequence, n: int, what: str, example: str) -> None:
    if len(values) != n:
        raise ValueError(f"{len(values)} {what} for {n} items: give one per item, e.g. {example}")


def cycle_classes(classes: Sequence[int], n: int) -> torch.Tensor:
    """n requests going through the chosen classes in turn."""
    if not classes:
        raise ValueError("no class given: type at least one, e.g. 3 or 3,5,7")
    return torch.tensor(list(classes), dtype=torch.int64)[torch.arange(n) % len(classes)]


def check_drafts(drafts: Sequence, n: int) -> list[str]:
    """One draft (the start of a text, maybe empty) per text shown, with its spaces tidied."""
    if not all(isinstance(d, str) for d in drafts):
        raise ValueError("every draft must be text: the words the text starts with (empty: the model writes it all)")
    check_count(drafts, n, "drafts", "a b | e | i o")
    return [" ".join(d.split()) for d in drafts]


def parse_fact(line: str) -> tuple[str, str, str]:
    parts = [p.strip() for p in line.split("|")]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{line!r} is not a fact: write head | relation | tail")
    return parts[0], parts[1], parts[2]


def edit_keeping(images: torch.Tensor, part: str) -> Edit:
    if part not in PARTS:
        raise ValueError(f"{part!r} is not a part: choose {' or '.join(PARTS)}")
    mask = make_masks(images.shape, part).to(images.device)
    return Edit(mask, torch.where(mask, images, torch.zeros_like(images)))


def split_answer(text: str) -> list[str]:
    return [t for t in re.split(r"[\s,]+", text.strip()) if t]
