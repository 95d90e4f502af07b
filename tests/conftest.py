"""Shared helpers: compose configs through Hydra's compose API, and run the real CLI in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Short runs used across tests: one epoch of a few batches on a small training set.
FAST = ["logger=csv", "trainer.enable_progress_bar=false", "data.num_samples=2000", "trainer.max_epochs=1"]


def compose_train(*overrides: str, config_name: str = "train"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)


def cli(module: str, *args: str, cwd: Path | None = None, timeout: int = 600, check: bool = True):
    """Run `python -m <module> args...` for real; returns the CompletedProcess."""
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def train(run_dir: Path, *overrides: str, check: bool = True):
    return cli("cogen.train", *FAST, f"hydra.run.dir={run_dir}", *overrides, check=check)


def same_metric(actual, expected, **tolerance) -> bool:
    """A summary.json metric against another: both None (a NaN is written as null), or approximately
    equal. pytest >= 9.2's approx refuses None with a relative tolerance instead of comparing it."""
    return actual is None if expected is None else actual == pytest.approx(expected, **tolerance)


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"
