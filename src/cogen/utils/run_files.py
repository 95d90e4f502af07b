"""What every run leaves in its folder, beside Hydra's `.hydra/`: run.json (command line,
git commit, run id), config.yaml (resolved) and summary.json (final metrics and status).
Only rank 0 writes."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

REPO_ROOT = Path(__file__).resolve().parents[3]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else None


def run_id_for(ckpt_path: str | None) -> str:
    """A resumed run keeps the id of the run that wrote its checkpoint; a new run gets the id a
    W&B sweep agent assigned (WANDB_RUN_ID), or a new one."""
    if ckpt_path:
        info = Path(ckpt_path).resolve().parent.parent / "run.json"
        if info.is_file():
            return json.loads(info.read_text())["run_id"]
    agent_id = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
    return agent_id or uuid.uuid4().hex[:8]


@rank_zero_only
def write_run_info(out: Path, cfg: DictConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    info = {"run_id": cfg.run_id, "argv": sys.argv, "command": " ".join(sys.argv), "git_commit": git_commit(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed_from": cfg.ckpt_path}
    (out / "run.json").write_text(json.dumps(info, indent=2))


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


@rank_zero_only
def write_summary(out: Path, cfg: DictConfig, status: str, metrics: dict[str, Any] | None = None,
                  **extra: Any) -> dict:
    """summary.json: what the table builder reads. NaN and inf are stored as null."""
    from cogen.config import hydra_choices, hydra_overrides

    summary = {
        "status": status,
        "task": cfg.get("task"),
        "run_id": cfg.get("run_id"),
        "seed": cfg.get("seed"),
        "protocol": cfg.get("protocol"),
        "choices": hydra_choices(),
        "overrides": hydra_overrides(),
        "metrics": {k: _number(v) for k, v in sorted((metrics or {}).items())},
        **extra,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _attach_to_wandb(out / "summary.json")
    return summary


def _attach_to_wandb(path: Path) -> None:
    """Put summary.json among the files of this job's W&B run (synced with it), so that
    `cogen-table runs=wandb:<entity>/<project>/<group>` can read a group's runs from the server."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.save(str(path), base_path=str(path.parent), policy="now")


def completed_summary(out: Path) -> dict | None:
    """The summary of a run folder that finished, or None."""
    path = Path(out) / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") == "completed" else None


def _without_resume(overrides) -> list[str]:
    return sorted(str(o) for o in overrides if not str(o).lstrip("+~").startswith("resume="))


def resumable_checkpoint(roots: list[Path], overrides: list[str]) -> str | None:
    """`resume=auto`: the last.ckpt of the newest run under `roots` whose overrides, `resume`
    aside, are this run's, unless that run completed. Runs that died before their first
    checkpoint are passed over. A DDP child rank finds the same file: rank 0 writes no
    checkpoint before every rank has joined."""
    wanted, found = _without_resume(overrides), []
    for root in roots:
        for record in Path(root).glob("**/.hydra/overrides.yaml"):
            run = record.parent.parent
            ckpt = run / "checkpoints" / "last.ckpt"
            if ckpt.is_file() and _without_resume(OmegaConf.load(record)) == wanted:
                found.append((ckpt.stat().st_mtime, str(run)))
    if not found:
        return None
    run = Path(max(found)[1])
    return None if completed_summary(run) else str(run / "checkpoints" / "last.ckpt")
