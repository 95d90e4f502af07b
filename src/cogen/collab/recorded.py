"""Every partner answers through `RecordedPartner`, which writes each question and answer to the
run's feedback store before the mode sees the answer. What was shown is saved beside the store
(a PNG grid for images, a JSON list for texts), and each shown item gets a sample id
"<question number>:<index>", so a stored rating can be traced to the image or text it rates.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from cogen.callbacks.image_grid import save_grid
from cogen.collab.partner import Partner
from cogen.collab.store import FeedbackStore


class RecordedPartner(Partner):
    """partner: who answers. store: where answers go. artifacts_dir: where what was shown goes."""

    def __init__(self, partner: Partner, store: FeedbackStore, artifacts_dir: str | Path):
        self.partner, self.store, self.artifacts_dir = partner, store, Path(artifacts_dir)
        self.asked = 0

    @property
    def kind(self) -> str:
        return self.partner.kind

    @property
    def id(self) -> str:
        return self.partner.id

    def __getattr__(self, name: str) -> Any:   # a partner's own settings (budget, answered, ...) read through
        if name.startswith("__") or "partner" not in self.__dict__:   # copy/pickle probe a bare instance
            raise AttributeError(name)
        return getattr(self.__dict__["partner"], name)

    def _save_shown(self, name: str, items) -> str | None:
        """Save what the partner was shown; returns its path relative to the store's folder."""
        if isinstance(items, torch.Tensor) and items.dim() == 4:
            path = self.artifacts_dir / f"{name}.png"
            save_grid(items, min(len(items), max(1, math.ceil(math.sqrt(len(items))))), path)
        elif isinstance(items, (list, tuple)) and all(isinstance(i, str) for i in items):
            path = self.artifacts_dir / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(list(items), indent=1))
        else:
            return None
        return str(path.relative_to(self.store.path.parent)) if path.is_relative_to(self.store.path.parent) else str(path)

    def _ask(self, question: str, shown: dict, items: Sequence | None, *args) -> Any:
        self.asked += 1
        name = f"q{self.asked:05d}_{question}"
        artifact = self._save_shown(name, items) if items is not None else None
        if items is not None:
            shown = {**shown, "n": len(items), "sample_ids": [f"{self.asked}:{i}" for i in range(len(items))]}
        asked_at = time.time()
        answer = getattr(self.partner, question)(*args)
        self.store.record(question, self.kind, self.id, shown, answer, artifact=artifact, asked_at=asked_at)
        return answer

    def ask_condition(self, num_classes: int, n: int):
        return self._ask("ask_condition", {"num_classes": num_classes, "n": n}, None, num_classes, n)

    def edit(self, items):
        return self._ask("edit", {}, items, items)

    def rate(self, items):
        return self._ask("rate", {}, items, items)

    def compare(self, first, second):
        both = torch.cat([first, second]) if isinstance(first, torch.Tensor) else list(first) + list(second)
        return self._ask("compare", {"pairs": len(first)}, both, first, second)

    def supply_facts(self, query: str):
        return self._ask("supply_facts", {"query": query}, None, query)
