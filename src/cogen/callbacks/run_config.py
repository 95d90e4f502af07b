"""Stores the resolved model, data and collab configs in every checkpoint, so that `cogen-eval
ckpt_path=...` rebuilds exactly what was trained, with no overrides to repeat."""
from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

CHECKPOINT_KEY = "cogen_config"


class StoreRunConfig(pl.Callback):
    def __init__(self, cfg: DictConfig):
        self.stored = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "data", "collab")
                       if cfg.get(key) is not None}
        self.stored.update(seed=cfg.seed, run_id=cfg.run_id, task=cfg.task)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.stored
