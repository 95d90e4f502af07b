"""Multiruns through each launcher that runs here (basic, joblib, submitit local), an Optuna
study in SQLite, and one trial of the W&B sweep as its agent would start it. In each, a
poisoned job fails alone: its summary.json says so and the other jobs finish."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import FAST, ROOT, cli, summary

pytestmark = pytest.mark.slow
TINY = [*FAST, "trainer.limit_train_batches=5", "callbacks.sample_plot=null"]
POISONED = "data.mixture.std=0.01,nan"   # nan: the NaN guard stops that job


def statuses(sweep: Path) -> dict[str, str]:
    """{data.mixture.std value: status} for each job of a sweep."""
    jobs = [summary(p.parent) for p in sweep.glob("*/summary.json")]
    return {next(o.split("=")[1] for o in s["overrides"] if o.startswith("data.mixture.std=")): s["status"] for s in jobs}


def wandb_run_record(run_dir: Path) -> dict:
    """The `run` record of a job's offline W&B run, read back with `wandb leet inspect`."""
    (offline,) = run_dir.glob("wandb/offline-run-*")
    out = subprocess.run(["wandb", "leet", "inspect", "--json", str(offline)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return next(json.loads(line)["run"] for line in out.splitlines() if '"type":"run"' in line)


def test_basic_launcher_poisoned_job_fails_alone_and_jobs_share_a_wandb_group(tmp_path):
    cli("cogen.train", "-m", POISONED, *TINY, "logger=wandb", f"hydra.sweep.dir={tmp_path}")
    assert statuses(tmp_path) == {"0.01": "completed", "nan": "failed"}
    runs = [wandb_run_record(tmp_path / job) for job in ("0", "1")]
    assert runs[0]["run_group"] == runs[1]["run_group"] == f"train-{tmp_path.name}"
    assert "data.mixture.std=0.01" in runs[0]["tags"] and "data.mixture.std=nan" in runs[1]["tags"]
    assert runs[0]["run_id"] != runs[1]["run_id"]
    # summary.json travels with the W&B run (synced with it), for cogen-table runs=wandb:<entity>/<project>/<group>
    for job in ("0", "1"):
        (attached,) = (tmp_path / job).glob("wandb/offline-run-*/files/summary.json")
        assert json.loads(attached.read_text()) == json.loads((tmp_path / job / "summary.json").read_text())


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_run_the_jobs_and_record_the_failure(tmp_path, launcher):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    cli("cogen.train", "-m", POISONED, *TINY, f"hydra/launcher={launcher}", *extra, f"hydra.sweep.dir={tmp_path}")
    assert statuses(tmp_path) == {"0.01": "completed", "nan": "failed"}


def test_optuna_study_in_sqlite_resumes_and_records_failed_trials(tmp_path):
    optuna = pytest.importorskip("optuna")
    search = ["hparams_search=pacgan_optuna", "hydra.sweeper.study_name=t", *TINY, f"paths.log_dir={tmp_path}"]
    cli("cogen.train", "-m", *search, "hydra.sweeper.n_trials=1", "data.mixture.std=0.5",
        f"hydra.sweep.dir={tmp_path / 'first'}")
    # The same study again, every trial poisoned: both are told FAIL and the sweep still ends cleanly.
    cli("cogen.train", "-m", *search, "hydra.sweeper.n_trials=2", "data.mixture.std=nan",
        f"hydra.sweep.dir={tmp_path / 'again'}")
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL"]
    assert set(study.trials[0].params) == {"model.lr", "model.pack"}
    assert [summary(p.parent)["status"] for p in (tmp_path / "again").glob("*/summary.json")] == ["failed"] * 2


def test_wandb_sweep_agent_command_runs_one_trial(tmp_path, monkeypatch):
    """W&B's server cannot be reached here: hand the agent's own command builder one trial, as
    the server would, and run it. The trial keeps the agent's run id and the sweep's group."""
    from wandb.wandb_agent import Agent

    sweep = yaml.safe_load((ROOT / "sweep.yaml").read_text())
    args = {key: spec["values"][0] if "values" in spec else spec.get("value", spec.get("min"))
            for key, spec in sweep["parameters"].items()}
    args.update({"trainer.max_epochs": 1, "logger": "wandb"}, **dict(o.split("=", 1) for o in TINY[1:]))
    monkeypatch.chdir(ROOT)
    for key, value in {"WANDB_SWEEP_ID": "sw1", "WANDB_RUN_ID": "", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                       "WANDB_DIR": str(tmp_path), "COGEN_ROOT": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    agent = Agent.__new__(Agent)
    agent._sweep_command, agent._in_jupyter, agent._function = sweep["command"], False, None
    agent._run_processes, agent._forward_signals = {}, False
    agent._command_run({"run_id": "trial001", "program": sweep["program"],
                        "args": {k: {"value": v} for k, v in args.items()}})
    assert agent._run_processes["trial001"].wait() == 0
    (done,) = tmp_path.glob("outputs/train/*/*/summary.json")
    assert summary(done.parent)["status"] == "completed" and summary(done.parent)["run_id"] == "trial001"
    assert f"model.lr={args['model.lr']}" in summary(done.parent)["overrides"]
    assert wandb_run_record(done.parent)["run_group"] == "wandb-sweep-sw1"
