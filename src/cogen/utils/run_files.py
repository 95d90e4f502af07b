"""What every run leaves in its folder, beside Hydra's `.hydra/`: run.json (command line,
git commit, run id), config.yaml (resolved) and summary.json (final metrics and status).
Only rank 0 writes."""
from __future__ import annotations

import json
import math
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
    """A resumed run keeps the id of the run that wrote its checkpoint; a new run gets a new one."""
    if ckpt_path:
        info = Path(ckpt_path).resolve().parent.parent / "run.json"
        if info.is_file():
            return json.loads(info.read_text())["run_id"]
    return uuid.uuid4().hex[:8]


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
    return summary


def completed_summary(out: Path) -> dict | None:
    """The summary of a run folder that finished, or None."""
    path = Path(out) / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") == "completed" else None
