"""The preference data set of RLHF (Ziegler et al. 2019): pairs of the reference LM's responses to
one prompt, and which of each pair a partner prefers. `model=reward_model` learns from it.

Each pair draws a prompt (seeded, from the same prompts as RL: `cogen.data.prompts`), and the
reference LM writes two responses of `response_length` tokens with `cogen.rl.rollout.sample`, on
the CPU, so that any machine shows the partner the same pairs. The partner answers
`compare(first texts, second texts)` questions of `pairs_per_question` pairs; every answer goes
through `RecordedPartner` into `store` (the run's feedback.sqlite, the texts shown under
feedback/), so that `collab/partner@data.partner=replay data.partner.store=<that file>` rebuilds
the very same data set.

The held-out test pairs (`test_pairs`, from the fixed `test_seed`) are asked first, so that runs
with any budget are scored on one test set; then training pairs (from `seed`) until `num_pairs`
are labelled or the partner's budget is spent. Those are split into train and val by
`split_seed`. `judge` is the hidden taste without noise: a simulated partner without an oracle
judges by it, and every pair carries its scores of both responses, for test/oracle_accuracy.
Where the judge scores a pair equally the simulated partner has no preference and answers by a
coin (`SimulatedPartner.compare`). A summary of the labels is written to preferences.json.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from cogen.collab.partner import Partner, simulated_parts
from cogen.config import CogenError
from cogen.data.prompts import PromptDataModule
from cogen.rl.rollout import sample
from cogen.utils.padding import pad_rows


@dataclass
class Pairs:
    """n labelled pairs: the prompt of each, both responses (right-padded, mask a prefix of ones),
    the partner's label (1: the second is preferred) and the judge's scores (n, 2) (NaN: no judge)."""

    prompts: list[list[int]]
    first: torch.Tensor
    first_mask: torch.Tensor
    second: torch.Tensor
    second_mask: torch.Tensor
    label: torch.Tensor
    oracle: torch.Tensor

    def __len__(self) -> int:
        return len(self.label)

    def take(self, rows: Sequence[int] | torch.Tensor) -> "Pairs":
        rows = torch.as_tensor(rows, dtype=torch.long)
        cut = {f.name: getattr(self, f.name)[rows] for f in fields(self) if f.name != "prompts"}
        return replace(self, prompts=[self.prompts[i] for i in rows.tolist()], **cut)

    @staticmethod
    def cat(parts: list["Pairs"]) -> "Pairs":
        return Pairs([p for part in parts for p in part.prompts],
                     *(torch.cat([getattr(part, f.name) for part in parts]) for f in fields(Pairs) if f.name != "prompts"))

    def strict(self) -> torch.Tensor:
        """Where the judge prefers one response of the pair."""
        return ~self.oracle.isnan().any(1) & (self.oracle[:, 0] != self.oracle[:, 1])


class PreferenceDataModule(pl.LightningDataModule):
    def __init__(self, tokenizer: Any, reference: nn.Module, partner: Partner,
                 judge: Callable[[Sequence[str]], torch.Tensor] | None = None, prompts: list[str] | None = None,
                 path: str | None = None, response_length: int = 4, temperature: float = 1.0, num_pairs: int = 2000,
                 test_pairs: int = 500, pairs_per_question: int = 100, val_fraction: float = 0.1,
                 batch_size: int = 64, eval_batch_size: int = 500, seed: int = 0, test_seed: int = 2333,
                 split_seed: int = 0, store: str | None = None):
        super().__init__()
        if min(response_length, num_pairs, test_pairs, pairs_per_question, batch_size, eval_batch_size) < 1 or temperature <= 0:
            raise CogenError("data.response_length, num_pairs, test_pairs, pairs_per_question, batch_size and "
                             "eval_batch_size must be at least 1, and data.temperature > 0.")
        if not 0 < val_fraction < 1:
            raise CogenError(f"data.val_fraction={val_fraction}: the share of labelled pairs kept for val, between 0 and 1.")
        self.prompt_data = PromptDataModule(tokenizer, prompts=prompts, path=path)   # its checks and BOS + tokens
        self.tokenizer, self.reference, self.partner, self.judge = tokenizer, reference, partner, judge
        self.response_length, self.temperature = response_length, temperature
        self.sizes = {"train": num_pairs, "test": test_pairs}
        self.pairs_per_question, self.val_fraction = pairs_per_question, val_fraction
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.test_seed, self.split_seed = seed, test_seed, split_seed
        self.store = store
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.suppress = list(getattr(tokenizer, "never_sample", []))
        eos = getattr(tokenizer, "eos_token_id", None)
        self.stop_token_id = None if eos in self.suppress else eos   # as model=rl_lm samples
        self.splits: dict[str, Pairs] = {}
        self.summary: dict = {}

    # --- making the data set, once -----------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for simulated in simulated_parts(self.partner):
            if simulated.oracle is None and self.judge is not None:
                simulated.oracle = self.judge
        partner, store = self._recorded()
        try:
            test = self.label(partner, self.sizes["test"], self.test_seed)
            labelled = self.label(partner, self.sizes["train"], self.seed) if len(test) == self.sizes["test"] else None
        finally:
            if store is not None:
                store.to_csv(store.path.with_suffix(".csv"))
                store.close()
        if labelled is None or len(labelled) < 2:
            raise CogenError(f"the partner's budget left {0 if labelled is None else len(labelled)} training pairs after "
                             f"{len(test)} of data.test_pairs={self.sizes['test']}: raise data.partner.budget or lower "
                             f"data.test_pairs.")
        order = torch.randperm(len(labelled), generator=torch.Generator().manual_seed(self.split_seed))
        n_val = min(len(labelled) - 1, max(1, round(self.val_fraction * len(labelled))))
        self.splits = {"train": labelled.take(order[n_val:]), "val": labelled.take(order[:n_val]), "test": test}
        self.summary = {name: describe(pairs) for name, pairs in self.splits.items()}
        if self.store is not None and self._rank() == 0:
            (Path(self.store).parent / "preferences.json").write_text(json.dumps(self.summary, indent=1))

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def _recorded(self):
        """The partner, recorded into the store on rank 0 (every rank gets the same answers)."""
        if self.store is None or self._rank() != 0:
            return self.partner, None
        from cogen.collab.recorded import RecordedPartner
        from cogen.collab.store import FeedbackStore

        store = FeedbackStore(self.store)
        return RecordedPartner(self.partner, store, Path(self.store).parent / "feedback"), store

    @torch.no_grad()
    def label(self, partner: Partner, n: int, seed: int) -> Pairs:
        """Up to n pairs drawn from `seed`, in questions of pairs_per_question; fewer where the budget ends."""
        generator, parts, got = torch.Generator().manual_seed(seed), [], 0
        while got < n:
            pairs, texts = self.draw(min(self.pairs_per_question, n - got), generator)
            answer = partner.compare(*texts)
            if answer is None:
                break
            k = len(answer)
            parts.append(replace(pairs.take(list(range(k))), label=torch.as_tensor(answer, dtype=torch.long).reshape(-1)))
            got += k
            if k < len(pairs):
                break
        return Pairs.cat(parts) if parts else self.draw(0, generator)[0]

    def draw(self, n: int, generator: torch.Generator) -> tuple[Pairs, tuple[list[str], list[str]]]:
        """n prompts, two responses of the reference to each, and the texts the partner sees."""
        ids = self.prompt_data.ids
        prompts = [ids[i] for i in torch.randint(len(ids), (n,), generator=generator).tolist()]
        if n:
            prompt_ids, prompt_mask = pad_rows(prompts, self.pad_token_id)
            self.reference.eval()
            response, mask = sample(self.reference.cpu(), prompt_ids.repeat_interleave(2, 0), prompt_mask.repeat_interleave(2, 0),
                                    self.response_length, generator, self.temperature, self.suppress,
                                    self.stop_token_id, self.pad_token_id)
        else:
            response, mask = torch.empty(0, self.response_length, dtype=torch.long), torch.empty(0, self.response_length)
        texts = [self.tokenizer.decode(y[m.bool()].tolist()) for y, m in zip(response, mask)]
        first, second = texts[0::2], texts[1::2]
        oracle = torch.full((n, 2), math.nan)
        if self.judge is not None and n:
            oracle = torch.stack([torch.as_tensor(self.judge(t), dtype=torch.float32).reshape(-1) for t in (first, second)], 1)
        pairs = Pairs(prompts, response[0::2], mask[0::2], response[1::2], mask[1::2],
                      torch.full((n,), -1, dtype=torch.long), oracle)
        return pairs, (first, second)

    # --- batches -----------------------------------------------------------------------------
    def collate(self, pairs: Pairs) -> dict[str, torch.Tensor]:
        prompt_ids, prompt_mask = pad_rows(pairs.prompts, self.pad_token_id)
        return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "first": pairs.first, "first_mask": pairs.first_mask,
                "second": pairs.second, "second_mask": pairs.second_mask, "label": pairs.label, "oracle": pairs.oracle}

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        pairs = self.splits[split]
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(range(len(pairs)), batch_size=batch_size, shuffle=shuffle, generator=generator,
                          collate_fn=lambda rows: self.collate(pairs.take(rows)))

    def train_dataloader(self):
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self):
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return self._loader("test", self.eval_batch_size, shuffle=False)


def describe(pairs: Pairs) -> dict[str, float]:
    """How many pairs; how many the judge has a preference on (strict), and on those the share of
    labels against it: a noise-p partner answers at random on a share p of pairs, half of them
    wrong, so twice that share estimates p. judge_pair_accuracy: the judge's own accuracy on the
    labels (a tie counts half), the ceiling of a reward model's pair_accuracy."""
    strict = pairs.strict()
    off = (pairs.label[strict] != (pairs.oracle[strict, 1] > pairs.oracle[strict, 0]).long()).float()
    disagree = float(off.mean()) if len(off) else math.nan
    judged = ~pairs.oracle.isnan().any(1)
    ties = int((judged & ~strict).sum())
    ceiling = (len(off) - float(off.sum()) + 0.5 * ties) / max(1, len(off) + ties) if judged.any() else math.nan
    return {"pairs": len(pairs), "strict": int(strict.sum()), "disagree_with_judge": disagree,
            "estimated_noise": 2 * disagree, "judge_pair_accuracy": ceiling}
