"""Every option of every config group composes, every experiment composes, and the
model/data options instantiate into working parts."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from cogen.config import check_types, validate

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


def family(model: str) -> str:
    """The LightningModule class a model option builds, e.g. 'cogen.models.gan.GAN'."""
    return compose_train(f"model={model}").model._target_


GAN_MODELS = [m for m in options("model") if family(m) == "cogen.models.gan.GAN"]
VAE_MODELS = [m for m in options("model") if family(m) == "cogen.models.vae.VAE"]


def test_every_model_option_has_a_family_test():
    assert sorted(GAN_MODELS + VAE_MODELS) == options("model"), "a model option no instantiate test covers"


@pytest.mark.parametrize("model", GAN_MODELS)
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


@pytest.mark.parametrize("model", VAE_MODELS)
@pytest.mark.parametrize("data", ["digits", "mnist", "fashion_mnist"])
def test_vae_and_image_data_instantiate_and_step(model, data, tmp_path):
    import torch

    from cogen.models.vae import VAE

    overrides = [f"model={model}", f"data={data}", "data.num_samples=300", "data.val_size=100"]
    if data == "mnist":
        from test_images import fake_mnist

        overrides.append(f"data.root={fake_mnist(tmp_path, gz=False)}")
    elif data == "fashion_mnist" and not Path(compose_train("data=fashion_mnist").data.root).is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist (make install does)")
    cfg = compose_train(*overrides)
    check_types(cfg.data, "data")
    check_types(cfg.model, "model")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    vae = instantiate(cfg.model, _convert_="all")
    assert isinstance(vae, VAE)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (cfg.data.batch_size, *cfg.data.shape) and y.shape == (cfg.data.batch_size,)
    out = vae.bounds(x)
    loss = -out["bound"].mean()
    loss.backward()
    assert torch.isfinite(loss) and out["elbo"].shape == (cfg.data.batch_size,)
    assert vae.log_weights(x[:4], 7).shape == (7, 4)
