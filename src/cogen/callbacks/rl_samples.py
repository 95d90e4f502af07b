"""Sampled responses of RL fine-tuning, as a W&B table and as JSON lines in samples/: what the
policy writes, and how the reward and the KL judge it, as training goes."""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

COLUMNS = ["rollout", "prompt", "response", "reward", "kl"]


class RolloutSamples(pl.Callback):
    def __init__(self, every_n_steps: int = 50, n_rows: int = 8, dirpath: str | None = None):
        self.every_n_steps, self.n_rows, self.dirpath = every_n_steps, n_rows, dirpath

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.fit_loop.total_batch_idx  # rollouts so far (global_step counts optimiser updates)
        if not self.every_n_steps or step % self.every_n_steps or not trainer.is_global_zero:
            return
        rows = [{"rollout": step, **row} for row in pl_module.sample_rows(self.n_rows)]
        if not rows:
            return
        if self.dirpath:
            Path(self.dirpath).mkdir(parents=True, exist_ok=True)
            with open(Path(self.dirpath) / "rollouts.jsonl", "a", encoding="utf-8") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="train/samples", columns=COLUMNS, data=[[r[c] for c in COLUMNS] for r in rows])
