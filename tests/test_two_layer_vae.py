"""The two-stochastic-layer VAE / IWAE (Burda et al. 2016): its log weight against
torch.distributions, its bounds on a fixed batch, learning on real digits, the staged learning
rate, and the `experiment=iwae_vae` grid and table."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.distributions import Normal

from cogen.callbacks.staged_lr import StagedLR
from cogen.config import CogenError
from cogen.metrics.elbo import iwae_bound
from cogen.models.two_layer_vae import TwoLayerVAE
from cogen.nets.gaussian_mlp import GaussianMLP
from cogen.nets.likelihoods import Bernoulli
from cogen.nets.vae_nets import MLPDecoder, MLPEncoder
from conftest import compose_train

EPOCHS = 30                 # 30 epochs of 26 steps (batch 50) on the 1,294 digits training images: about 8 s
MIN_ELBO_GAIN = 18.0        # nats per image; measured 21.3-21.8 over seeds 0, 1, 2 (-49.0..-49.4 -> -27.3..-27.7)
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
             accelerator="cpu", num_sanity_val_steps=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small nets on 8x8 images gain nothing from more threads (see test_vae.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(**kwargs) -> TwoLayerVAE:
    torch.manual_seed(0)
    return TwoLayerVAE(MLPEncoder([1, 8, 8], 6, hidden=[16]), MLPDecoder(6, [1, 8, 8], hidden=[16]), Bernoulli(),
                       latent_dim=3, upper_encoder=GaussianMLP(6, 3, [8]), upper_decoder=GaussianMLP(3, 6, [8]),
                       z1_dim=6, **kwargs)


def test_log_weight_is_the_two_layer_joint_over_the_two_layer_posterior():
    """log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1), recomputed
    with torch.distributions from the same noise."""
    model = small_model()
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.4), generator=torch.Generator().manual_seed(1))
    mu, logvar = model.encode(x)
    log_px, ratio = model.sample_terms(x, mu, logvar, 3, torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)
    z1 = mu + (0.5 * logvar).exp() * torch.randn((3, *mu.shape), generator=g)
    mu2, logvar2 = model.upper_encoder(z1)
    z2 = mu2 + (0.5 * logvar2).exp() * torch.randn(mu2.shape, generator=g)
    pmu1, plogvar1 = model.upper_decoder(z2)
    expected = (Normal(0.0, 1.0).log_prob(z2).sum(-1) + Normal(pmu1, (0.5 * plogvar1).exp()).log_prob(z1).sum(-1)
                - Normal(mu, (0.5 * logvar).exp()).log_prob(z1).sum(-1) - Normal(mu2, (0.5 * logvar2).exp()).log_prob(z2).sum(-1))
    logits = model.decoder(z1)
    assert torch.allclose(ratio, expected, atol=1e-4)
    assert torch.allclose(log_px, torch.distributions.Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum((-3, -2, -1)), atol=1e-4)


def test_objectives_and_their_gradients():
    x = torch.bernoulli(torch.full((8, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    iwae = small_model(objective="iwae", k=5)
    out = iwae.bounds(x)
    assert out["log_weights"].shape == (5, 8)
    assert torch.allclose(out["bound"], iwae_bound(out["log_weights"]))
    (-out["bound"].mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in iwae.parameters())
    vae = small_model(objective="elbo", k=5)
    out = vae.bounds(x)
    assert torch.allclose(out["bound"], out["elbo"]) and torch.allclose(out["elbo"], -out["recon"] - out["kl"])
    assert small_model().generate(torch.randn(2, 3)).shape == (2, 1, 8, 8)
    with pytest.raises(CogenError, match="model.upper_encoder maps 6 -> 3"):
        TwoLayerVAE(MLPEncoder([1, 8, 8], 6), MLPDecoder(6, [1, 8, 8]), Bernoulli(), latent_dim=4,
                    upper_encoder=GaussianMLP(6, 3), upper_decoder=GaussianMLP(4, 6), z1_dim=6)


def test_image_grids_draw_the_top_layer(tmp_path: Path):
    from cogen.callbacks.image_grid import ImageGrid

    paths = ImageGrid(str(tmp_path), n_traversal_dims=2, traversal_steps=3).grids(small_model().eval(), torch.rand(4, 1, 8, 8), "t")
    assert sorted(paths) == ["reconstructions", "samples", "traversals"] and all(p.is_file() for p in paths.values())


@pytest.fixture(scope="module")
def trained(one_thread):
    """`model=iwae2 data=digits` (k=5), tested before and after a short fit."""
    cfg = compose_train("model=iwae2", "data=digits", "model.test_k=100")
    pl.seed_everything(0, verbose=False)
    dm, model = instantiate(cfg.data), instantiate(cfg.model, _convert_="all")
    (before,) = pl.Trainer(**QUIET).test(model, datamodule=dm, verbose=False)
    pl.Trainer(max_epochs=EPOCHS, limit_val_batches=0, **QUIET).fit(model, datamodule=dm)
    (after,) = pl.Trainer(**QUIET).test(model, datamodule=dm, verbose=False)
    return model.eval(), dm, before, after


def test_short_run_on_digits_improves_the_test_elbo(trained):
    _, _, before, after = trained
    assert after["test/elbo"] - before["test/elbo"] >= MIN_ELBO_GAIN, (before, after)
    assert after["test/log_likelihood"] >= after["test/elbo"]


def test_elbo_below_iwae_bound_which_rises_with_k(trained):
    """On a fixed batch: ELBO <= IWAE_5 <= IWAE_50 <= IWAE_500 (IWAE_1 = ELBO in expectation),
    each bound averaged over 500/k repeats, so every k uses the same 500 draws per image."""
    model, dm, _, _ = trained
    x = dm.splits["test"][0][:100]
    g = torch.Generator().manual_seed(0)
    bounds = {k: torch.stack([iwae_bound(model.log_weights(x, k, generator=g)) for _ in range(500 // k)]).mean(0)
              for k in (1, 5, 50, 500)}

    def gap(a, b):  # mean of a - b over the batch, and its standard error
        d = a - b
        return float(d.mean()), float(d.std() / math.sqrt(len(d)))

    elbo = bounds[1]                            # the 500-draw average of single log weights
    previous = elbo
    for k in (5, 50, 500):
        diff, se = gap(bounds[k], previous)
        assert diff > -3 * se, (k, diff, se)
        previous = bounds[k]
    diff, se = gap(bounds[5], elbo)
    assert diff > 3 * se and diff > 0.1, (diff, se)
    diff, se = gap(bounds[500], bounds[5])
    assert diff > 3 * se, (diff, se)


def test_staged_lr_is_burdas_schedule():
    paper = StagedLR([3 ** i for i in range(8)])
    assert paper.total_epochs == 3280
    assert [paper.stage(e) for e in (0, 1, 3, 4, 12, 13, 3279, 5000)] == [0, 1, 1, 2, 2, 3, 7, 7]
    assert paper.lr_factor(3279) * 1e-3 == pytest.approx(1e-4)
    assert paper.lr_factor(1) == pytest.approx(10 ** (-1 / 7))
    with pytest.raises(CogenError, match="passes"):
        StagedLR([3, 0])


def grid(protocol: str) -> list[list[str]]:
    keys = {"model": ["vae", "vae2"], "model.objective": ["elbo", "iwae"], "model.k": ["1", "5", "50"]}
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*keys.values())]


@pytest.mark.parametrize("protocol", ["short", "fashion", "paper"])
def test_experiment_composes_for_every_grid_point(protocol):
    from cogen.table import compose_experiment, sweep_values

    sweep = sweep_values(compose_experiment("iwae_vae", protocol, []), [], None)
    assert sweep["model"] == ["vae", "vae2"] and sweep["model.k"] == ["1", "5", "50"]
    data = sweep["data"][0]
    for point in grid(protocol):
        cfg = compose_train("experiment=iwae_vae", f"protocol={protocol}", f"data={data}", *point)
        values = dict(p.split("=") for p in point)
        assert (cfg.model.objective, str(cfg.model.k)) == (values["model.objective"], values["model.k"])
        assert cfg.model._target_.endswith("TwoLayerVAE" if values["model"] == "vae2" else "vae.VAE")
        assert cfg.data.batch_size == (100 if protocol == "fashion" else 20) and cfg.model.test_k == 5000
        # the final model is tested: last.ckpt must be rewritten every epoch, so no monitored metric
        assert cfg.test_ckpt == "last" and cfg.callbacks.model_checkpoint.monitor is None
        if protocol == "short":   # the shipped data: every grid point also builds
            model = instantiate(cfg.model, _convert_="all")
            assert model.hparams.k == int(values["model.k"])
    if protocol == "paper":
        assert cfg.trainer.max_epochs == 3280 and sum(cfg.callbacks.staged_lr.passes) == 3280 and data == "mnist"


def test_table_groups_by_layers_k_and_objective_and_joins_the_paper(tmp_path: Path):
    from cogen.table import build

    for (model, objective, k), seed in itertools.product([("vae", "elbo", "5"), ("vae2", "iwae", "50")], (0, 1)):
        folder = tmp_path / f"model.k={k},model.objective={objective},model={model},seed={seed}"
        folder.mkdir()
        summary = {"status": "completed", "task": "iwae_vae", "seed": seed, "protocol": "short",
                   "choices": {"model": model, "data": "digits"},
                   "overrides": [f"model={model}", f"model.objective={objective}", f"model.k={k}", "data=digits",
                                 f"seed={seed}", "experiment=iwae_vae", "protocol=short"],
                   "metrics": {"test/log_likelihood": -20.0 - seed, "test/elbo": -22.0}, "wall_s": 5.0}
        (folder / "summary.json").write_text(json.dumps(summary))
    assert build(["experiment=iwae_vae", f"runs=[{tmp_path}]", f"out={tmp_path / 'table'}"]) == 0
    md = (tmp_path / "table" / "table.md").read_text()
    assert "## 1 stochastic layer" in md and "## 2 stochastic layers" in md
    assert "| 5 | VAE | 2 | **-20.50 ± 0.71** | -86.47 |" in md
    assert "| 50 | IWAE | 2 | **-20.50 ± 0.71** | -82.90 |" in md
    assert "| 1 | IWAE | — | — | -85.33 |" in md                         # a paper-only cell is kept
