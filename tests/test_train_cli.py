"""The real `cogen-train` / `cogen-eval` in subprocesses: run files, eval, resume, errors, multirun."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import cli, same_metric, summary, train

pytestmark = pytest.mark.slow
SHORT = ["trainer.limit_train_batches=20", "trainer.log_every_n_steps=5"]


def test_run_writes_its_files_and_eval_reproduces_the_test_metric(run_dir):
    train(run_dir, *SHORT, "model=pacgan2")
    for name in ("config.yaml", "run.json", "metrics.csv", "summary.json", "samples/final.png", "checkpoints/last.ckpt", ".hydra/overrides.yaml"):
        assert (run_dir / name).is_file(), name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["git_commit"] and "cogen.train" in info["command"] or "model=pacgan2" in info["command"]
    trained = summary(run_dir)
    assert trained["status"] == "completed" and trained["choices"]["model"] == "pacgan2"
    assert trained["global_step"] == 2 * 20  # two optimizer steps (D and G) per iteration

    eval_dir = run_dir.parent / "eval"
    cli("cogen.eval", f"ckpt_path={trained['tested_ckpt']}", f"hydra.run.dir={eval_dir}", "logger=csv")
    evaluated = summary(eval_dir)
    for key in ("test/modes", "test/hq_pct", "test/reverse_kl"):
        assert same_metric(evaluated["metrics"][key], trained["metrics"][key], nan_ok=True), key


def test_resume_continues_steps_and_run_id(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(first, *SHORT, "trainer.max_epochs=1")
    train(second, *SHORT, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints/last.ckpt'}")
    assert summary(second)["global_step"] == 2 * 40 and summary(second)["epochs"] == 2
    assert summary(second)["run_id"] == summary(first)["run_id"]
    steps = [int(row["step"]) for row in csv.DictReader((second / "metrics.csv").open()) if row.get("train/d_loss")]
    assert steps and min(steps) >= 20, "the resumed run logged steps of the first epoch again"


def test_wandb_offline_run_lands_in_the_run_dir_and_resume_keeps_its_id(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(first, *SHORT, "logger=wandb")
    run_id = summary(first)["run_id"]
    assert list((first / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    train(second, *SHORT, "logger=wandb", "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints/last.ckpt'}")
    assert list((second / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


@pytest.mark.parametrize("override,expected", [
    ("model=gann", "Could not find 'model/gann'"),
    ("trainer.max_epochz=3", "max_epochz"),
    ("model.lr=fast", "model.lr='fast': expected float"),
    ("seed=abc", "seed"),
    ("+model.generator.widht=3", "has no parameter 'widht'"),
    ("data.path=/no/such/points.npy", "data.path=/no/such/points.npy: no such file"),
])
def test_bad_overrides_get_a_short_error(run_dir, override, expected):
    proc = train(run_dir, override, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr
    # Hydra lists a group's options, one tab-indented line each: the list grows with the options.
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("\t")]
    assert "Traceback" not in proc.stderr and len(lines) <= 15, proc.stderr


def test_eval_needs_a_checkpoint(tmp_path):
    proc = cli("cogen.eval", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 1 and "ckpt_path is required" in proc.stderr and "Traceback" not in proc.stderr


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    good, broken = tmp_path / "good", tmp_path / "broken"
    train(good, *SHORT)
    last = good / "checkpoints/last.ckpt"
    before = last.read_bytes()
    proc = train(broken, *SHORT, "trainer.max_epochs=2", f"ckpt_path={last}", "data.mixture.std=nan",
                 "callbacks.model_checkpoint.every_n_train_steps=1", check=False)
    assert proc.returncode == 1
    assert "loss 'd_loss' became nan" in proc.stderr and "Traceback" not in proc.stderr
    assert summary(broken)["status"] == "failed"
    assert last.read_bytes() == before
    for ckpt in (broken / "checkpoints").glob("*.ckpt") if (broken / "checkpoints").exists() else []:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), ckpt


def test_multirun_of_two_jobs_writes_two_runs(tmp_path):
    cli("cogen.train", "-m", "seed=0,1", "logger=csv", "trainer.enable_progress_bar=false", "data.num_samples=2000",
        "trainer.max_epochs=1", *SHORT, f"hydra.sweep.dir={tmp_path}")
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == 2
    assert sorted(json.loads(p.read_text())["seed"] for p in summaries) == [0, 1]
