"""Two-process CPU DDP (gloo), alone and inside a Hydra multirun: one output folder and one
summary per job, and the child rank never starts a sweep of its own."""
import pytest

from conftest import FAST, cli, summary

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
