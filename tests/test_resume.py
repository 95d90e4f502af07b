"""`resume=auto`: a run killed mid-epoch (SIGKILL) and started again with the same command plus
`resume=auto` continues from its last checkpoint under the same run id, and ends where an
uninterrupted run ends: the noise generator and the epoch's batch order are restored."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, ROOT, cli, same_metric, summary

pytestmark = pytest.mark.slow
# 40 iterations per epoch, 2 epochs; a checkpoint every 5 iterations (2 optimizer steps each).
RUN = [*FAST, "data.num_samples=4000", "trainer.max_epochs=2", "test_ckpt=last", "callbacks.sample_plot=null",
       "callbacks.model_checkpoint.every_n_train_steps=10"]


def mid_epoch(ckpt: Path) -> bool:
    return 0 < torch.load(ckpt, map_location="cpu", weights_only=False)["MixtureDataModule"]["batches_done"] < 40


def kill_at_a_mid_epoch_checkpoint(args: list[str], outputs: Path) -> Path:
    """Start `cogen-train args`, SIGKILL it once a mid-epoch checkpoint exists; returns its run folder.
    (Checkpoints are written atomically, so a file that exists is whole.)"""
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "cogen.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not any(mid_epoch(c) for c in outputs.glob("train/*/*/checkpoints/last.ckpt")):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    (ckpt,) = outputs.glob("train/*/*/checkpoints/last.ckpt")
    return ckpt.parent.parent


def test_killed_run_resumes_with_resume_auto_and_matches_an_uninterrupted_run(tmp_path):
    outputs = tmp_path / "outputs"
    command = [*RUN, "logger=wandb", f"paths.log_dir={outputs}"]
    killed = kill_at_a_mid_epoch_checkpoint(command, outputs)
    assert mid_epoch(killed / "checkpoints/last.ckpt") and not (killed / "summary.json").exists()

    cli("cogen.train", *command, "resume=auto")
    (resumed,) = [p.parent for p in outputs.glob("train/*/*/summary.json")]
    assert resumed != killed
    run_id = json.loads((killed / "run.json").read_text())["run_id"]
    assert summary(resumed)["run_id"] == run_id
    assert json.loads((resumed / "run.json").read_text())["resumed_from"] == str(killed / "checkpoints/last.ckpt")
    assert list((resumed / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))

    whole = tmp_path / "whole"
    cli("cogen.train", *RUN, f"hydra.run.dir={whole}")
    assert summary(resumed)["global_step"] == summary(whole)["global_step"] == 2 * 80
    for key, value in summary(whole)["metrics"].items():
        if key.startswith(("test/", "val/")):
            assert same_metric(summary(resumed)["metrics"][key], value, rel=1e-5, nan_ok=True), key
    a = torch.load(whole / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(resumed / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5


def test_resume_auto_with_nothing_to_resume_starts_afresh(tmp_path):
    proc = cli("cogen.train", *FAST, "trainer.limit_train_batches=2", f"paths.log_dir={tmp_path}", "resume=auto")
    assert "starting afresh" in proc.stderr
    (done,) = tmp_path.glob("train/*/*/summary.json")
    assert json.loads(done.read_text())["status"] == "completed"
