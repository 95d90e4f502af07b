"""End to end through `python -m cogen.train`: pre-train the tiny GPT-2 on the Markov grammar,
RL-tune it toward a rule reward, and the short errors of bad inputs."""
from __future__ import annotations

import csv
import time

import pytest

from conftest import cli, summary

QUIET = ["logger=csv", "trainer.enable_progress_bar=false"]


def rows(run_dir, key: str) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


@pytest.mark.slow
def test_pretrain_then_rl_raises_the_mean_reward(tmp_path):
    artifacts = tmp_path / "artifacts"
    started = time.perf_counter()
    cli("cogen.train", "model=lm_pretrain", "task=lm_pretrain", *QUIET, "data.num_samples=6400", "trainer.max_epochs=1",
        f"paths.artifacts_dir={artifacts}", f"hydra.run.dir={tmp_path / 'pre'}")
    pre = summary(tmp_path / "pre")["metrics"]
    assert pre["test/nll"] < 2.2 < 2.77  # uniform over 16 words is log 16 = 2.77 nats
    assert (artifacts / "lm" / "tiny_gpt2_markov" / "config.json").exists()
    run = tmp_path / "rl"
    cli("cogen.train", "model=rl_lm", "model/reward=rule", "logger=wandb", "trainer.enable_progress_bar=false",
        "data.steps_per_epoch=30", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
        f"paths.artifacts_dir={artifacts}", f"hydra.run.dir={run}")
    wall = time.perf_counter() - started
    first = rows(run, "train/reward")[0]          # rollout 0: the pre-trained reference's own responses
    tuned = summary(run)["metrics"]
    # The reference's mean reward is about 0.8 vowels; 30 rollouts lift it by more than 0.5.
    assert tuned["test/reward"] > first + 0.5, (first, tuned["test/reward"])
    assert tuned["test/exact_reward"] > first + 0.5 and tuned["test/exact_gap"] < 0.3
    assert (run / "samples" / "rollouts.jsonl").read_text().count("\n") == 8   # also a W&B table (offline run)
    assert list((run / "wandb").glob("offline-run-*")) and (run / "samples" / "frontier.png").is_file()
    assert wall < 180, f"pre-training and RL took {wall:.0f} s"


def last_line(proc) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.slow
def test_bad_inputs_get_short_errors(tmp_path):
    proc = cli("cogen.train", "model=rl_lm", *QUIET, f"model.policy.path={tmp_path / 'no_such_model'}",
               f"hydra.run.dir={tmp_path / 'a'}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert last_line(proc).startswith("cogen error: model path") and "does not exist" in last_line(proc)
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n")
    proc = cli("cogen.train", "model=rl_lm", *QUIET, f"data.path={empty}", f"hydra.run.dir={tmp_path / 'b'}", check=False)
    assert proc.returncode == 1 and "holds no prompts" in last_line(proc)
    proc = cli("cogen.train", "model=rl_lm", "model/reward=vibes", *QUIET, f"hydra.run.dir={tmp_path / 'c'}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "Could not find 'model/reward/vibes'" in proc.stderr and "\trule" in proc.stderr
