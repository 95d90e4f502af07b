"""RL checkpoints leave out a reference that was loaded from a folder (it is rebuilt from the
config, its SHA-256 is kept), resume with it, and refuse in one line when the folder's weights
have changed since; a reference built fresh from a config stays in the checkpoint."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from conftest import cli, compose_train, summary

QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "data.steps_per_epoch=4", "model.val_samples=8"]


def save_fresh_policy(folder, seed: int = 0):
    cfg = compose_train("model=rl_lm", "model.policy.path=null")
    torch.manual_seed(seed)
    instantiate(cfg.model.policy).save_pretrained(str(folder))


def test_fresh_reference_stays_in_the_checkpoint():
    cfg = compose_train("model=rl_lm", "model.policy.path=null")
    model = instantiate(cfg.model, _convert_="all")
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert any(k.startswith("reference.") for k in checkpoint["state_dict"]) and "reference" not in checkpoint


@pytest.mark.slow
def test_reference_from_a_folder_is_rebuilt_on_resume_and_checked(tmp_path):
    folder = tmp_path / "reference"
    save_fresh_policy(folder)
    common = ["model=rl_lm", *QUIET, f"model.policy.path={folder}"]
    cli("cogen.train", *common, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'first'}")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    keys = checkpoint["state_dict"].keys()
    assert not [k for k in keys if k.startswith("reference.")] and any(k.startswith("policy.") for k in keys)
    assert checkpoint["reference"]["source"] == str(folder) and len(checkpoint["reference"]["sha256"]) == 64

    cli("cogen.train", *common, "trainer.max_epochs=2", f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}")
    resumed = summary(tmp_path / "resumed")
    assert resumed["global_step"] == 8 and resumed["metrics"]["test/kl"] > 0

    save_fresh_policy(folder, seed=1)   # the folder now holds other weights
    proc = cli("cogen.train", *common, "trainer.max_epochs=2", f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'changed'}",
               check=False)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert lines[-1].startswith("cogen error: this checkpoint's reference was loaded from") and "model.policy.path" in lines[-1]
