"""collab/partner=terminal: a person answers in the console.

Images are saved as a numbered PNG grid (the path is printed: open it in any viewer), texts are
printed numbered. Every answer is one line: all of a batch's ratings or choices at once, so a
batch costs one Enter. A malformed line is asked again with the reason; only the valid answer is
returned (and stored by RecordedPartner). Ctrl-C stops the run cleanly: each answer already given
is committed to the feedback store on its own.

Answers are checked by `cogen.collab.answers`, as on the web page.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.prompt import Prompt
from rich.text import Text

from cogen.collab.answers import (PARTS, PartnerStopped, as_whole, check_count, check_drafts, cycle_classes,
                                  edit_keeping, parse_fact, split_answer)
from cogen.collab.partner import RATINGS, Edit, Partner

class TerminalPartner(Partner):
    """name: who answers (the stored partner id). console: where to ask (default: the terminal).
    dirpath: where the shown images are saved as PNG grids."""

    kind = "terminal"

    def __init__(self, name: str = "human", console: Console | None = None, dirpath: str = "feedback_shown"):
        self.name, self.console, self.dirpath = name, console or Console(), Path(dirpath)
        self.shown = 0

    @property
    def id(self) -> str:
        return self.name

    def _say(self, text: str, style: str | None = None) -> None:
        self.console.print(Text(text, style=style or ""), highlight=False, soft_wrap=True)

    def _ask(self, prompt: str, parse: Callable[[str], Any]) -> Any:
        """Ask until parse accepts the line; Ctrl-C or closed input stops the run."""
        while True:
            try:
                line = Prompt.ask(Text(prompt), console=self.console)
            except (KeyboardInterrupt, EOFError):
                self._say("\nStopped: every answer given so far is saved in the run's feedback store "
                          "(feedback.sqlite); run the same command with resume=auto to go on.", "bold yellow")
                raise PartnerStopped("the terminal partner stopped the run (Ctrl-C); its answers are saved.") from None
            try:
                return parse(line or "")
            except ValueError as e:
                self._say(str(e), "red")

    def _show(self, items, question: str, nrow: int | None = None) -> None:
        """Save images as a grid and print its path, or print texts numbered."""
        if isinstance(items, torch.Tensor):
            from cogen.callbacks.image_grid import save_grid

            self.shown += 1
            path = self.dirpath / f"{self.shown:05d}_{question}.png"
            save_grid(items, nrow or max(1, math.ceil(math.sqrt(len(items)))), path)
            self._say(f"{len(items)} images, numbered left to right, top to bottom: {path.resolve()}", "bold")
        else:
            for i, text in enumerate(items, 1):
                self._say(f"{i}. {text}")

    def ask_condition(self, num_classes: int, n: int) -> torch.Tensor:
        def parse(line: str) -> torch.Tensor:
            return cycle_classes([as_whole(t, "a class", 0, num_classes - 1) for t in split_answer(line)], n)

        return self._ask(f"Which class to generate next (0-{num_classes - 1}; several: 3,5,7 taken in turn "
                         f"for the {n} samples)", parse)

    def rate(self, items) -> torch.Tensor:
        low, high = RATINGS
        self._show(items, "rate")

        def parse(line: str) -> torch.Tensor:
            ratings = [as_whole(t, "a rating", low, high) for t in split_answer(line)]
            check_count(ratings, len(items), "ratings", "5 3 4")
            return torch.tensor(ratings, dtype=torch.int64)

        return self._ask(f"Rate the {len(items)} items in order, {low} worst to {high} best, on one line "
                         f"(e.g. 5 3 4)", parse)

    def compare(self, first, second) -> torch.Tensor:
        n = len(first)
        if isinstance(first, torch.Tensor):   # row i shows pair i: 1 on the left, 2 on the right
            self._show(torch.stack([first[:n], second[:n]], 1).flatten(0, 1), "compare", nrow=2)
            self._say("Row i is pair i: 1 is the left image, 2 the right one.")
        else:
            for i, (a, b) in enumerate(zip(first, second), 1):
                self._say(f"Pair {i}:\n  1) {a}\n  2) {b}")

        def parse(line: str) -> torch.Tensor:
            choices = [as_whole(t, "a choice", 1, 2) for t in split_answer(line)]
            check_count(choices, n, "choices", "1 2 1")
            return torch.tensor(choices, dtype=torch.int64) - 1

        return self._ask(f"For each of the {n} pairs, the better one, 1 or 2, on one line (e.g. 1 2 1)", parse)

    def edit(self, items) -> Edit | list[str]:
        self._show(items, "edit")
        if not isinstance(items, torch.Tensor):
            return self._ask(f"Write the start of each of the {len(items)} texts, separated by | (e.g. a b | e | i o; "
                             "an empty part leaves that text to the model)",
                             lambda line: check_drafts(line.split("|"), len(items)))
        return self._ask(f"Which part of every image to keep: {' or '.join(PARTS)}",
                         lambda line: edit_keeping(items, line.strip()))

    def supply_facts(self, query: str) -> list[tuple[str, str, str]]:
        self._say(f"Facts the model should respect about {query!r}: one per line, head | relation | tail; "
                  "an empty line ends.")
        facts = []
        while True:
            fact = self._ask(f"Fact {len(facts) + 1}", lambda line: parse_fact(line) if line.strip() else None)
            if fact is None:
                return facts
            facts.append(fact)
