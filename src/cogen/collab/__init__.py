"""Collaboration modes: how a partner (a person, or a simulated one) takes part in a run.

Each mode is a Lightning Callback built from the `collab` config group; `collab=autonomous`
(no `_target_`) adds none. The modes talk to their partner through `cogen.collab.partner.Partner`.
"""
from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig


def build_mode(collab: DictConfig | None) -> list:
    """The callbacks of the composed collaboration mode: [] for collab=autonomous. Built under a
    forked RNG, so that what a mode loads or trains (its judge) leaves the run's draws as they were."""
    if not collab or "_target_" not in collab:
        return []
    with torch.random.fork_rng(devices=[]):
        return [instantiate(collab)]


def log_png(trainer, key: str, path) -> None:
    """Send a PNG a mode wrote to W&B as well, when the run logs there."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
