"""ModelCheckpoint whose last.ckpt always holds the newest weights.

Lightning 2.6 rewrites last.ckpt at an epoch's end only when it also saved a top-k checkpoint
there. With a monitored metric, last.ckpt would hold the last *improving* epoch, so
`test_ckpt=last` would score stale weights and `resume=auto` would lose the epochs since.
This subclass saves last.ckpt at every epoch end where Lightning skipped it.
"""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class KeepLastCheckpoint(ModelCheckpoint):
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer) \
                and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
