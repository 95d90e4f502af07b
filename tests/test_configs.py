"""Every option of every config group composes, every experiment composes, and the
model/data options instantiate into working parts."""
from __future__ import annotations

import pytest
from hydra.utils import instantiate

from cogen.config import validate

from conftest import CONF, compose_train

GROUPS = ["model", "data", "trainer", "collab", "logger", "callbacks", "paths", "hydra", "debug", "experiment", "hparams_search"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in options(g)]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_group_option_composes(group, option):
    cfg = compose_train(f"{group}={option}")
    assert cfg.hydra.runtime.choices[group] == option


def test_every_experiment_is_listed_and_composes():
    from conftest import ROOT

    for folder in sorted(p for p in (ROOT / "experiments").iterdir() if p.is_dir()):
        assert (CONF / "experiment" / f"{folder.name}.yaml").exists(), f"experiments/{folder.name} has no experiment config"
        cfg = compose_train(f"experiment={folder.name}")
        assert cfg.task == folder.name


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("data", ["ring8", "grid25"])
def test_model_and_data_instantiate_and_step(model, data):
    import torch

    cfg = compose_train(f"model={model}", f"data={data}", "data.num_samples=300")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    gan = instantiate(cfg.model, _convert_="all")
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (100, 2 * gan.pack)
    d_loss, g_loss = gan.losses(batch, torch.randn(100 * gan.pack, gan.noise_dim))
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)


def test_eval_config_composes():
    cfg = compose_train("ckpt_path=x.ckpt", config_name="eval")
    assert cfg.task == "eval" and cfg.ckpt_path == "x.ckpt"
