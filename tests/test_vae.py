"""The VAE family: bounds, nets, likelihoods, metrics, image grids, and learning on real digits."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from cogen.callbacks.image_grid import ImageGrid, image_grid
from cogen.metrics.elbo import IWAELogLikelihood, iwae_bound
from cogen.models.vae import VAE
from cogen.nets.likelihoods import Bernoulli, Gaussian
from cogen.nets.vae_nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

from conftest import compose_train

EPOCHS = 30                 # 30 epochs of 26 steps on the 1,294 digits training images: about 5 s
MIN_ELBO_GAIN = 18.0        # nats per image; measured 20.4-20.7 over seeds 0, 1, 2 (-45.1 -> -24.4..-24.7)
MIN_GAIN_OVER_PIXELS = 1.5  # over independent Bernoulli pixels fitted to the training set; measured 2.5-2.7
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
             accelerator="cpu", num_sanity_val_steps=0)


def vae_config(*overrides):
    return compose_train("model=vae", "data=digits", "model.test_k=100", *overrides)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small nets on 8x8 images gain nothing from more threads, and on a busy machine spinning
    OpenMP threads can make them many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread):
    """The default `model=vae data=digits` config, tested before and after a short fit."""
    cfg = vae_config()
    pl.seed_everything(0, verbose=False)
    dm, model = instantiate(cfg.data), instantiate(cfg.model, _convert_="all")
    (before,) = pl.Trainer(**QUIET).test(model, datamodule=dm, verbose=False)
    pl.Trainer(max_epochs=EPOCHS, limit_val_batches=0, **QUIET).fit(model, datamodule=dm)
    (after,) = pl.Trainer(**QUIET).test(model, datamodule=dm, verbose=False)
    return model.eval(), dm, before, after


def pixel_baseline(dm) -> float:
    """Test log-likelihood of independent Bernoulli pixels with the training set's means."""
    p = dm.splits["train"][0].mean(0).clamp(1e-3, 1 - 1e-3)
    x = dm.splits["test"][0]
    return float((x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3)).mean())


def test_short_run_on_digits_improves_the_test_elbo(trained):
    _, dm, before, after = trained
    gain = after["test/elbo"] - before["test/elbo"]
    assert gain >= MIN_ELBO_GAIN, (before, after)
    assert after["test/elbo"] >= pixel_baseline(dm) + MIN_GAIN_OVER_PIXELS, (after, pixel_baseline(dm))
    assert after["test/recon"] < before["test/recon"] - MIN_ELBO_GAIN
    assert after["test/log_likelihood"] >= after["test/elbo"]


def test_elbo_below_iwae_bound_which_rises_with_k(trained):
    """On a fixed batch: IWAE_1 = ELBO in expectation, and ELBO <= IWAE_5 <= IWAE_50 <= IWAE_500,
    each estimate averaged over 500/k repeats (the same number of draws per k)."""
    model, dm, _, _ = trained
    x = dm.splits["test"][0][:100]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        log_px_z, _ = model.sample_terms(x, mu, logvar, 500, g)
        elbo = log_px_z.mean(0) - model.kl(mu, logvar)               # (B,)
    bounds = {}
    for k in (1, 5, 50, 500):
        draws = torch.stack([iwae_bound(model.log_weights(x, k, generator=g)) for _ in range(500 // k)])
        bounds[k] = draws.mean(0)                                     # (B,)

    def gap(a, b):  # mean of a - b over the batch, and its standard error
        d = a - b
        return float(d.mean()), float(d.std() / math.sqrt(len(d)))

    diff, se = gap(bounds[1], elbo)
    assert abs(diff) < 4 * se + 1e-3, (diff, se)
    previous = elbo
    for k in (5, 50, 500):
        diff, se = gap(bounds[k], previous)
        assert diff > -3 * se, (k, diff, se)
        previous = bounds[k]
    diff, se = gap(bounds[5], elbo)
    assert diff > 3 * se and diff > 0.1, (diff, se)
    diff, se = gap(bounds[500], bounds[5])
    assert diff > 3 * se, (diff, se)


def small_vae(**kwargs) -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder([1, 8, 8], 4, hidden=[32]), MLPDecoder(4, [1, 8, 8], hidden=[32]), Bernoulli(),
               latent_dim=4, **kwargs)


def test_iwae_objective_is_the_k_sample_bound_and_trains():
    x = torch.bernoulli(torch.full((16, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    model = small_vae(objective="iwae", k=5)
    out = model.bounds(x)
    assert out["log_weights"].shape == (5, 16)
    assert torch.allclose(out["bound"], torch.logsumexp(out["log_weights"], 0) - math.log(5))
    (-out["bound"].mean()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    beta = small_vae(beta=0.5).bounds(x)
    assert torch.allclose(beta["bound"], beta["elbo"] + 0.5 * beta["kl"])


def test_iwae_bound_is_stable_for_large_log_weights():
    log_w = torch.tensor([[-10_000.0, -20_000.0], [-10_000.0, -20_001.0]])
    assert torch.allclose(iwae_bound(log_w), torch.tensor([-10_000.0, -20_000.0 + math.log((1 + math.exp(-1)) / 2)]))
    metric = IWAELogLikelihood()
    metric.update(log_w)
    metric.update(torch.full((3, 2), -5.0))
    assert metric.compute().item() == pytest.approx((-10_000 + -20_000 + math.log((1 + math.exp(-1)) / 2) - 10) / 4, rel=1e-6)


def test_gaussian_likelihood_matches_torch_distributions():
    params, x = torch.randn(3, 2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    lik = Gaussian(std=0.2)
    expected = torch.distributions.Normal(torch.sigmoid(params), 0.2).log_prob(x).sum((-3, -2, -1))
    assert torch.allclose(lik.log_prob(params, x), expected, atol=1e-4)
    assert len(list(Gaussian().parameters())) == 1 and not list(lik.parameters())
    expected = torch.distributions.Bernoulli(logits=params).log_prob(torch.round(x).expand_as(params)).sum((-3, -2, -1))
    assert torch.allclose(Bernoulli().log_prob(params, torch.round(x)), expected, atol=1e-4)


@pytest.mark.parametrize("shape", [[1, 8, 8], [1, 28, 28], [3, 10, 12]])
def test_nets_map_images_to_latents_and_back(shape):
    for enc, dec in ((MLPEncoder(shape, 6), MLPDecoder(6, shape)), (ConvEncoder(shape, 6), ConvDecoder(6, shape))):
        mu, logvar = enc(torch.rand(5, *shape))
        assert mu.shape == logvar.shape == (5, 6)
        assert dec(torch.randn(7, 5, 6)).shape == (7, 5, *shape)


def test_image_grids_are_written(tmp_path):
    model = small_vae().eval()
    x = torch.rand(10, 1, 8, 8)
    paths = ImageGrid(str(tmp_path), n_traversal_dims=3, traversal_steps=5).grids(model, x, "t")
    assert sorted(paths) == ["reconstructions", "samples", "traversals"]
    assert all(p.is_file() and p.stat().st_size > 100 for p in paths.values())
    import matplotlib.image

    assert matplotlib.image.imread(paths["traversals"]).shape[:2] == image_grid(torch.zeros(15, 1, 8, 8), 5).shape


def test_bad_objective_is_a_short_error():
    from cogen.config import CogenError

    with pytest.raises(CogenError, match="model.objective='vae'"):
        small_vae(objective="vae")
