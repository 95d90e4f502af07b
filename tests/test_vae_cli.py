"""The real `cogen-train` with the VAE family: run files, image grids in W&B, eval, short errors."""
from __future__ import annotations

import pytest

from conftest import cli, summary, train
from test_images import fake_mnist

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Small nets: one thread each is faster on a busy machine (no spinning OpenMP threads)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
SHORT = ["trainer.max_epochs=2", "model.val_k=20", "model.test_k=200"]


def test_vae_on_digits_writes_grids_and_eval_reproduces_the_test_metrics(run_dir):
    train(run_dir, "model=vae", "data=digits", "data.num_samples=null", "logger=wandb", *SHORT)
    trained = summary(run_dir)
    assert trained["choices"]["callbacks"] == "images" and trained["choices"]["data"] == "digits"
    metrics = trained["metrics"]
    for key in ("test/elbo", "test/recon", "test/kl", "test/log_likelihood", "val/elbo", "train/elbo"):
        assert key in metrics, key
    assert metrics["test/log_likelihood"] >= metrics["test/elbo"]
    assert metrics["test/elbo"] == pytest.approx(-metrics["test/recon"] - metrics["test/kl"], abs=1e-3)
    for kind in ("reconstructions", "samples", "traversals"):
        assert (run_dir / f"samples/{kind}_final.png").is_file(), kind
        assert list(run_dir.glob(f"wandb/offline-run-*/files/media/images/{kind}_*.png")), kind
    assert not trained["tested_ckpt"].endswith("last.ckpt")  # the best by val/elbo

    eval_dir = run_dir.parent / "eval"
    cli("cogen.eval", f"ckpt_path={trained['tested_ckpt']}", f"hydra.run.dir={eval_dir}", "logger=csv")
    for key in ("test/elbo", "test/log_likelihood"):
        assert summary(eval_dir)["metrics"][key] == pytest.approx(metrics[key], abs=1e-4), key


def test_conv_iwae_on_mnist_idx_files_from_data_root(run_dir, tmp_path):
    root = fake_mnist(tmp_path / "mnist", n_train=400, n_test=100)
    train(run_dir, "model=vae_conv", "model.objective=iwae", "model.k=3", "data=mnist", f"data.root={root}",
          "data.num_samples=200", "data.val_size=100", *SHORT, "model.test_k=20")
    metrics = summary(run_dir)["metrics"]
    assert "train/iwae_bound" in metrics and "test/log_likelihood" in metrics
    assert summary(run_dir)["choices"]["model/net"] == "conv"


def test_missing_mnist_root_is_a_short_error(run_dir):
    proc = cli("cogen.train", "model=vae", "data=mnist", "data.root=/nope", f"hydra.run.dir={run_dir}", "logger=csv",
               check=False)
    assert proc.returncode != 0
    assert "data.root=/nope: no such folder. MNIST needs the IDX files train-images-idx3-ubyte" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 5, proc.stderr
    assert summary(run_dir)["status"] == "failed"
