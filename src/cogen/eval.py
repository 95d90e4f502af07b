"""`cogen-eval ckpt_path=...` / `python -m cogen.eval`: score a checkpoint on the test split.

The model and data are rebuilt from the resolved config that training stored in the
checkpoint, so no training override has to be repeated."""
from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cogen.app import build_trainer, console, entry_point
from cogen.callbacks.run_config import CHECKPOINT_KEY
from cogen.collab import build_mode
from cogen.config import CONF_DIR, CogenError
from cogen.metrics.domain import cards
from cogen.utils.run_files import write_summary


def stored_config(ckpt_path: str) -> DictConfig:
    if not ckpt_path:
        raise CogenError("ckpt_path is required: cogen-eval ckpt_path=outputs/<task>/<date>/<time>/checkpoints/last.ckpt")
    path = Path(ckpt_path)
    if not path.is_file():
        raise CogenError(f"ckpt_path={ckpt_path}: no such file. Pass a .ckpt from a run's checkpoints/ folder.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if CHECKPOINT_KEY not in checkpoint:
        raise CogenError(f"ckpt_path={ckpt_path}: this checkpoint was not written by cogen-train (no stored config).")
    return OmegaConf.create(checkpoint[CHECKPOINT_KEY])


def run(cfg: DictConfig) -> dict:
    trained = stored_config(cfg.ckpt_path)
    pl.seed_everything(trained.seed, workers=True, verbose=False)
    datamodule = instantiate(trained.data)
    collab_cfg = trained.get("collab")
    if collab_cfg is not None and "dirpath" in collab_cfg:   # a mode's images go to this folder, not the trained run's
        collab_cfg.dirpath = str(Path(cfg.paths.output_dir) / "samples")
    collab = build_mode(collab_cfg, cfg.paths.output_dir)  # a mode scores its own metrics (e.g. prompt adherence)
    model = instantiate(trained.model, _convert_="all")
    trainer = build_trainer(cfg, callbacks=collab)
    (metrics,) = trainer.test(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path, verbose=False)
    summary = write_summary(Path(cfg.paths.output_dir), cfg, status="completed", metrics=metrics,
                            tested_ckpt=str(cfg.ckpt_path), trained_run_id=trained.run_id,
                            feature_nets=cards(model, *collab))
    console.print(f"test metrics: { {k: round(v, 4) for k, v in metrics.items()} }")
    return {"summary": summary, "objective": None}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig):
    return entry_point(run)(cfg)


if __name__ == "__main__":
    main()
