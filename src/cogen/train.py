"""`cogen-train` / `python -m cogen.train`: compose, build, fit, test the best checkpoint,
write summary.json. Every part comes from its config group through `instantiate`."""
from __future__ import annotations

import math
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from cogen.app import build_trainer, console, entry_point, instantiate_each
from cogen.callbacks.run_config import StoreRunConfig
from cogen.collab import build_mode
from cogen.collab.compat import check_pair
from cogen.config import CONF_DIR
from cogen.metrics.domain import cards
from cogen.utils import ddp
from cogen.utils.run_files import write_summary



def test_checkpoint(trainer: pl.Trainer, which: str) -> str | None:
    """The checkpoint `test` should score: the best by the monitored metric, or the last."""
    ckpt = trainer.checkpoint_callback
    if ckpt is None:
        return None
    path = ckpt.best_model_path if which == "best" else ckpt.last_model_path
    return path or ckpt.last_model_path or None


def run(cfg: DictConfig) -> dict:
    check_pair(cfg.model, cfg.get("collab"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    collab = build_mode(cfg.get("collab"), cfg.paths.output_dir)  # before the model: a mode that cannot work here says so first
    model = instantiate(cfg.model, _convert_="all")
    trainer = build_trainer(cfg, instantiate_each(cfg.get("callbacks")) + collab + [StoreRunConfig(cfg)])
    out, started = Path(cfg.paths.output_dir), time.perf_counter()
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_s = time.perf_counter() - started
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    tested = None
    if cfg.test:
        tested = test_checkpoint(trainer, cfg.test_ckpt)
        (results,) = trainer.test(model, datamodule=datamodule, ckpt_path=tested, verbose=False)
        metrics.update(results)
    summary = write_summary(
        out, cfg, status="completed", metrics=metrics, global_step=trainer.global_step,
        epochs=trainer.current_epoch, tested_ckpt=tested, fit_s=round(fit_s, 2), feature_nets=cards(model, *collab),
        wall_s=round(time.perf_counter() - started, 2),
    )
    if trainer.is_global_zero:
        console.print(f"[bold green]done[/] {out}  summary.json, metrics.csv, samples/, checkpoints/")
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("test/") and v is not None}
        console.print(f"test metrics: {shown}")
    objective = metrics.get(cfg.get("objective_metric") or "")
    # None, not NaN, for a sweeper: Optuna 2 records a returned None as a failed trial but crashes on NaN.
    return {"summary": summary, "objective": objective if objective is not None and math.isfinite(objective) else None}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig):
    ddp.install()
    return entry_point(run)(cfg)


if __name__ == "__main__":
    # Run the importable copy: joblib, submitit and Ray pickle the task by reference only then
    # (`__main__.main` is pickled by value, with the unpicklable console it reaches).
    from cogen.train import main as importable_main

    importable_main()
