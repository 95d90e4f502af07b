"""Collaboration modes: how a partner (a person, or a simulated one) takes part in a run.

Each mode is a Lightning Callback built from the `collab` config group; `collab=autonomous`
(no `_target_`) adds none. The modes talk to their partner through `cogen.collab.partner.Partner`,
and every answer goes through `RecordedPartner` into the run's feedback store
(<output dir>/feedback.sqlite, with what was shown under feedback/), exported to feedback.csv
and a W&B table at the end of the run.
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

STORE_NAME = "feedback.sqlite"
PEOPLE = ("terminal", "web")   # partner kinds that are a person


def build_mode(collab: DictConfig | None, output_dir: str | Path | None = None) -> list:
    """The callbacks of the composed collaboration mode: [] for collab=autonomous. Built under a
    forked RNG, so that what a mode loads or trains (its judge) leaves the run's draws as they were.
    With an output_dir, the partner's answers are stored there."""
    if not collab or "_target_" not in collab:
        return []
    with torch.random.fork_rng(devices=[]):
        if not collab.get("partner"):
            return [instantiate(collab)]
        if isinstance(collab.partner, str):   # collab.partner=replay replaces the node with a string
            from cogen.config import CogenError

            raise CogenError(f"collab.partner={collab.partner} sets a value, not the partner: choose the partner "
                             f"with collab/partner={collab.partner} (a slash: it is a config group).")
        partner = instantiate(collab.partner)
        export = [OnePerson()] if partner.kind in PEOPLE else []
        if output_dir is not None and _rank() == 0:
            from cogen.collab.recorded import RecordedPartner
            from cogen.collab.store import FeedbackStore

            store = FeedbackStore(Path(output_dir) / STORE_NAME)
            partner = RecordedPartner(partner, store, Path(output_dir) / "feedback")
            export.append(ExportFeedback(store))
        return [instantiate(collab, partner=partner)] + export


def _rank() -> int:
    """The process's global rank before the trainer exists (DDP children get RANK from Lightning)."""
    import os

    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))


class OnePerson(pl.Callback):
    """A person answers one process: under DDP every rank would ask them (and only rank 0 stores
    the answers), so a multi-process run with a person stops before training, saying what works."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            from cogen.config import CogenError

            raise CogenError(f"a person answers in one process, but this run has {trainer.world_size} (DDP): use "
                             "trainer.devices=1 with collab/partner=terminal or web, or collab/partner=simulated or "
                             "replay (every rank gets the same answers) to train on several devices.")


class ExportFeedback(pl.Callback):
    """Writes the feedback store to feedback.csv beside it, and logs it as a W&B table."""

    def __init__(self, store):
        self.store = store

    def export(self, trainer: pl.Trainer) -> None:
        from pytorch_lightning.loggers import WandbLogger

        self.store.to_csv(self.store.path.with_suffix(".csv"))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.log({"feedback": self.store.to_wandb_table()})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.export(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.export(trainer)


def log_png(trainer, key: str, path) -> None:
    """Send a PNG a mode wrote to W&B as well, when the run logs there."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
