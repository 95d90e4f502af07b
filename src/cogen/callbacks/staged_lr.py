"""Burda et al.'s (2016) learning-rate schedule as a callback, so it serves any model whose
optimizer reads `hparams.lr`, with no change to the model: stage i = 0, 1, ... lasts
`passes[i]` epochs at lr * decay^i (the paper: passes 3^i for i = 0..7, 3,280 epochs in all,
decay 10^(-1/7), so the last stage runs at 1e-4 from lr = 1e-3). After the last stage the lr
stays at its last value; `trainer.max_epochs` decides where training ends.

The lr is a function of the epoch alone, set at the start of each epoch, so a run resumed from
a checkpoint follows the same schedule.
"""
from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl

from cogen.config import CogenError


class StagedLR(pl.Callback):
    def __init__(self, passes: Sequence[int], decay: float = 10 ** (-1 / 7)):
        if not passes or any(int(p) < 1 for p in passes):
            raise CogenError(f"callbacks.staged_lr.passes={list(passes)}: give one epoch count >= 1 per stage, "
                             f"e.g. [1, 3, 9, 27] (Burda et al.: 3^i for i = 0..7).")
        if not 0 < decay <= 1:
            raise CogenError(f"callbacks.staged_lr.decay={decay}: the lr factor per stage must be in (0, 1].")
        self.passes, self.decay = [int(p) for p in passes], float(decay)

    @property
    def total_epochs(self) -> int:
        return sum(self.passes)

    def stage(self, epoch: int) -> int:
        end = 0
        for i, p in enumerate(self.passes):
            end += p
            if epoch < end:
                return i
        return len(self.passes) - 1

    def lr_factor(self, epoch: int) -> float:
        return self.decay ** self.stage(epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        base = pl_module.hparams.get("lr")
        if base is None:
            raise CogenError("callbacks.staged_lr needs a model with an `lr` hyperparameter; remove the callback "
                             "(callbacks.staged_lr=null) for this model.")
        lr = base * self.lr_factor(trainer.current_epoch)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        pl_module.log("lr", lr, on_step=False, on_epoch=True)
