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


def family(model: str) -> type:
    """The LightningModule class a model option builds, e.g. cogen.models.gan.GAN."""
    from hydra.utils import get_class

    return get_class(compose_train(f"model={model}").model._target_)


def _draws_images(model: str) -> bool:
    return "shape" in compose_train(f"model={model}").model.generator


def _models():
    from cogen.models.gan import GAN
    from cogen.models.vae import VAE

    gans = [m for m in options("model") if issubclass(family(m), GAN)]
    return ([m for m in gans if not _draws_images(m)], [m for m in gans if _draws_images(m)],
            [m for m in options("model") if issubclass(family(m), VAE)])


POINT_GANS, IMAGE_GANS, VAE_MODELS = _models()


def test_every_model_option_has_a_family_test():
    # The language models are built and trained by tests/test_rl_*.py (lm_pretrain, rl_lm),
    # tests/test_knowledge_lm.py (kg_lm) and tests/test_reward_model.py (reward_model); the KG embeddings
    # (kge) by tests/test_kge.py.
    lms = [m for m in options("model")
           if family(m).__module__ in ("cogen.models.lm", "cogen.models.rl_lm", "cogen.models.knowledge_lm",
                                       "cogen.models.reward_model", "cogen.models.kge")]
    assert sorted(POINT_GANS + IMAGE_GANS + VAE_MODELS + lms) == options("model"), "a model option no instantiate test covers"


@pytest.mark.parametrize("model", POINT_GANS)
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


def _image_overrides(model: str, data: str, tmp_path: Path) -> list[str]:
    overrides = [f"model={model}", f"data={data}", "data.num_samples=300", "data.val_size=100"]
    if data == "mnist":
        from test_images import fake_mnist

        overrides.append(f"data.root={fake_mnist(tmp_path, gz=False)}")
    elif data == "fashion_mnist" and not Path(compose_train("data=fashion_mnist").data.root).is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist (make install does)")
    return overrides


@pytest.mark.parametrize("model", IMAGE_GANS)
@pytest.mark.parametrize("data", ["digits", "mnist", "fashion_mnist"])
def test_image_gan_and_image_data_instantiate_and_step(model, data, tmp_path):
    import torch

    cfg = compose_train(*_image_overrides(model, data, tmp_path), "model.metrics=null")  # FID is test_dcgan's; {} would merge, not clear
    check_types(cfg.model, "model")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    gan = instantiate(cfg.model, _convert_="all")
    x, _ = next(iter(dm.train_dataloader()))
    noise = torch.randn(len(x), gan.noise_dim)
    d_loss, g_loss = gan.losses(gan.packed(x), noise)
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert gan.sample(4).shape == (4, *cfg.data.shape)


@pytest.mark.parametrize("model", VAE_MODELS)
@pytest.mark.parametrize("data", ["digits", "mnist", "fashion_mnist"])
def test_vae_and_image_data_instantiate_and_step(model, data, tmp_path):
    import torch

    from cogen.models.vae import VAE

    cfg = compose_train(*_image_overrides(model, data, tmp_path))
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
