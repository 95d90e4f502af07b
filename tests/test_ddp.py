"""Two-process CPU DDP (gloo), alone and inside a Hydra multirun: one output folder and one
summary per job, and the child rank never starts a sweep of its own."""
import csv

import pytest
import torch

from conftest import FAST, cli, same_metric, summary

pytestmark = pytest.mark.slow
DDP = [*FAST, "trainer=ddp_cpu", "trainer.limit_train_batches=10"]


def test_ddp_cpu_single_run(tmp_path):
    cli("cogen.train", *DDP, f"hydra.run.dir={tmp_path}")
    assert summary(tmp_path)["status"] == "completed"
    assert summary(tmp_path)["global_step"] == 2 * 10
    assert (tmp_path / "train_ddp_process_1.log").exists()


def test_ddp_cpu_inside_a_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    cli("cogen.train", "-m", "seed=0,1", *DDP, f"hydra.sweep.dir={sweep}")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"], jobs
    assert [summary(sweep / j)["seed"] for j in jobs] == [0, 1]
    for job in jobs:
        assert (sweep / job / "train_ddp_process_1.log").exists()
        assert not list((sweep / job).glob("**/multirun.yaml")), "a child rank started its own sweep"
    assert not (tmp_path / "outputs").exists()



def test_a_person_as_partner_stops_a_ddp_run_before_training_with_one_line(tmp_path):
    proc = cli("cogen.train", *DDP, "model=vae", "collab=co_creation", "collab/partner=terminal", f"hydra.run.dir={tmp_path}",
               check=False)
    run = summary(tmp_path)
    assert proc.returncode != 0 and run["status"] == "failed" and run.get("global_step", 0) == 0
    assert run["error"].startswith("a person answers in one process, but this run has 2 (DDP)") and "\n" not in run["error"]
    assert "Traceback" not in proc.stderr


def test_ddp_cpu_matches_one_process_with_the_same_global_batch(tmp_path):
    """Both ranks draw the global batch and its noise and keep their halves, and the generator's
    BatchNorm uses the global batch's statistics: 2 processes train what 1 process trains, to
    float rounding. Each rank scores half of the fixed noise and the metric states are summed:
    the 2-process test metrics are the 1-process ones."""
    run = [*FAST, "trainer.limit_train_batches=8", "trainer.log_every_n_steps=1", "data.mixture.std=0.5",
           "test_ckpt=last", "callbacks.sample_plot=null"]
    one, two = tmp_path / "one", tmp_path / "two"
    cli("cogen.train", *run, f"hydra.run.dir={one}")
    cli("cogen.train", *run, "trainer=ddp_cpu", f"hydra.run.dir={two}")
    losses = [[float(r["train/g_loss"]) for r in csv.DictReader((d / "metrics.csv").open()) if r.get("train/g_loss")]
              for d in (one, two)]
    assert len(losses[0]) == 8 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    weights = [torch.load(d / "checkpoints/last.ckpt", weights_only=False)["state_dict"] for d in (one, two)]
    diffs = torch.cat([(weights[0][k] - weights[1][k]).abs().flatten().double() for k in weights[0]
                       if weights[0][k].is_floating_point()])
    # Adam moves a weight by about lr per step however small its gradient, so where a gradient is
    # ~0 float rounding (the all-reduce sums two halves) can flip a step's sign: the worst weight may
    # differ by a step or two (lr = 1e-4), the typical one must not (measured: max 1.5e-4 with one
    # thread, 3e-7 with two).
    assert diffs.max() < 3e-4 and diffs.mean() < 1e-6, (diffs.max().item(), diffs.mean().item())
    a, b = summary(one)["metrics"], summary(two)["metrics"]
    for key in ("test/modes", "test/hq_pct", "test/reverse_kl"):
        assert same_metric(b[key], a[key], rel=1e-5), key
