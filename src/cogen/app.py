"""What `train` and `eval` share: building loggers and the Trainer, and turning known
failures into one short message instead of a traceback."""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from rich.console import Console

from cogen.config import CogenError, validate
from cogen.utils.run_files import (completed_summary, resumable_checkpoint, run_id_for, write_run_info,
                                   write_summary)

console = Console(stderr=True, soft_wrap=True)


def instantiate_each(node: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a dict-like group (callbacks, logger); null entries are off."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if v is not None and "_target_" in v]


def build_trainer(cfg: DictConfig, callbacks: list) -> pl.Trainer:
    loggers = instantiate_each(cfg.get("logger"))
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def _root_cause(e: BaseException) -> BaseException:
    while isinstance(e, InstantiationException) and e.__cause__ is not None:
        e = e.__cause__
    return e


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _finish_job() -> None:
    """Close this job's W&B run and process group, so the next job of a multirun starts clean."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
        os.environ.pop(key, None)


def _auto_resume(cfg: DictConfig) -> str | None:
    """The checkpoint `resume=auto` continues from (None: start afresh), announced on stderr."""
    from cogen.config import hydra_overrides

    roots = [Path(cfg.paths.output_dir), Path(cfg.paths.log_dir) / cfg.task]
    ckpt = resumable_checkpoint([r for r in roots if r.is_dir()], hydra_overrides())
    console.print(f"[dim]resume=auto: {'resuming ' + ckpt if ckpt else 'no unfinished run to resume; starting afresh'}[/]")
    return ckpt


def entry_point(job: Callable[[DictConfig], dict]) -> Callable[[DictConfig], float | None]:
    """Wraps a Hydra task: schema check, run id and run files first; a short message and a
    `failed` summary.json on a known error. A failed job of a multirun does not stop the sweep."""

    @functools.wraps(job)
    def wrapper(cfg: DictConfig):
        out = Path(cfg.paths.output_dir)
        done = completed_summary(out) if cfg.get("skip_completed") else None
        if done is not None:
            console.print(f"[dim]reusing completed run {out}[/]")
            return done["metrics"].get(cfg.get("objective_metric") or "")
        try:
            validate(cfg)
            with open_dict(cfg):
                if cfg.get("resume") == "auto" and not cfg.get("ckpt_path"):
                    cfg.ckpt_path = _auto_resume(cfg)
                cfg.run_id = run_id_for(cfg.get("ckpt_path"))
            write_run_info(out, cfg)
            return job(cfg).get("objective")
        except (CogenError, InstantiationException, FileNotFoundError) as e:
            cause = _root_cause(e)
            message = str(cause) if isinstance(cause, (CogenError, FileNotFoundError)) else f"{type(cause).__name__}: {cause}"
            console.print(f"[bold red]cogen error:[/] {message}")
            write_summary(out, cfg, status="failed", error=message)
            if _is_multirun():
                return None
            sys.exit(1)
        except Exception as e:
            # An unforeseen error: a lone run shows the traceback; a multirun job records it and the sweep goes on.
            write_summary(out, cfg, status="failed", error=f"{type(e).__name__}: {e}")
            if not _is_multirun():
                raise
            logging.getLogger(__name__).exception("job failed; the sweep goes on")
            return None
        finally:
            _finish_job()

    return wrapper
