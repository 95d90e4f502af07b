"""Prompts for RL fine-tuning: from a text file (one prompt per line) or a list in the config.

Each prompt becomes BOS + its tokens. Training batches draw `batch_size` prompts with
replacement, `steps_per_epoch` batches an epoch; val/test go once through the distinct prompts.
Batches are left-padded, so that every response starts at the same column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler

from cogen.config import CogenError
from cogen.utils.padding import pad_rows


class PromptDataModule(pl.LightningDataModule):
    def __init__(self, tokenizer: Any, prompts: list[str] | None = None, path: str | None = None,
                 batch_size: int = 32, steps_per_epoch: int = 100, eval_batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.tokenizer, self.batch_size, self.eval_batch_size = tokenizer, batch_size, eval_batch_size
        self.steps_per_epoch, self.seed = steps_per_epoch, seed
        self.texts = read_prompts(path) if path is not None else list(prompts or [])
        if not self.texts:
            raise CogenError("no prompts: give data.path=<file with one prompt per line> or data.prompts=[...] "
                             "(an empty string is a prompt of BOS alone).")
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.ids = [bos + list(tokenizer.encode(t)) for t in self.texts]
        if any(not ids for ids in self.ids):
            raise CogenError("a prompt encodes to no tokens and the tokenizer has no BOS: remove empty prompts.")

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, mask = pad_rows([self.ids[i] for i in indices], pad)
        return {"input_ids": ids, "attention_mask": mask, "index": torch.tensor(indices)}

    def train_dataloader(self):
        n = self.steps_per_epoch * self.batch_size
        sampler = RandomSampler(range(len(self.ids)), replacement=True, num_samples=n,
                                generator=torch.Generator().manual_seed(self.seed))
        return DataLoader(range(len(self.ids)), batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate,
                          drop_last=True)

    def val_dataloader(self):
        return DataLoader(range(len(self.ids)), batch_size=self.eval_batch_size, collate_fn=self.collate)

    test_dataloader = val_dataloader


def read_prompts(path: str) -> list[str]:
    """The non-blank lines of a UTF-8 file; a missing or empty file is a one-line error."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CogenError(f"data.path={path}: no such prompt file. Give a text file with one prompt per line.")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line]
    if not prompts:
        raise CogenError(f"data.path={path}: the prompt file holds no prompts. Write one prompt per line.")
    return prompts
