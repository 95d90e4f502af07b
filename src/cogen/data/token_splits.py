"""The loaders shared by the language-model data modules (data=markov, data=reviews): fixed
train/val/test TensorDatasets of token blocks, the training set reshuffled from the run's seed."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class TokenSplitsDataModule(pl.LightningDataModule):
    """A subclass fills `self.splits` ({"train", "val", "test"} -> TensorDataset) in `setup`."""

    def __init__(self, batch_size: int, eval_batch_size: int, seed: int):
        super().__init__()
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.splits: dict[str, TensorDataset] = {}

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True, drop_last=True, generator=g)

    def val_dataloader(self):
        return DataLoader(self.splits["val"], batch_size=self.eval_batch_size)

    def test_dataloader(self):
        return DataLoader(self.splits["test"], batch_size=self.eval_batch_size)
