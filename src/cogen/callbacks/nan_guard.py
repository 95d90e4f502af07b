"""Stops a run at the first non-finite loss, before any checkpoint of the broken weights is written."""
from __future__ import annotations

import math

import pytorch_lightning as pl

from cogen.config import CogenError


class NonFiniteLossError(CogenError):
    pass


class NanGuard(pl.Callback):
    """Checks the losses a training step returns (a tensor, or a dict of named tensors)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        losses = outputs if isinstance(outputs, dict) else {"loss": outputs}
        for name, value in losses.items():
            if value is None or getattr(value, "numel", lambda: 0)() != 1:
                continue
            if not math.isfinite(float(value)):
                ckpt = trainer.checkpoint_callback
                last = getattr(ckpt, "last_model_path", "") or getattr(ckpt, "best_model_path", "") if ckpt else ""
                where = f"The last good checkpoint is {last}." if last else "No checkpoint had been written yet."
                raise NonFiniteLossError(
                    f"loss '{name}' became {float(value)} at step {trainer.global_step} (epoch {trainer.current_epoch}). "
                    f"{where} Lower the learning rate (model.lr=...) or resume with ckpt_path=<checkpoint>."
                )
