"""Collaboration modes on images: the simulated partner, the conditional VAE, completion, and
collab=prompt_guided / collab=co_creation through the real `cogen-train`."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cogen.collab.partner import Partner, SimulatedPartner
from cogen.collab.prompt_guided import PromptGuided
from cogen.models.vae import VAE
from cogen.nets.likelihoods import Bernoulli
from cogen.nets.vae_nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

from conftest import cli, summary, train

# collab=prompt_guided, cVAE on digits: test/prompt_adherence measured 1.000 after 20 epochs (15 epochs:
# 0.994, 10: 0.909, in-process over 1,000 requests); the target is 0.9.
ADHERENCE_EPOCHS, MIN_ADHERENCE = 20, 0.9
# collab=co_creation, VAE on digits, top half kept: after 30 epochs completion MSE 0.136 vs 0.148 for
# the mean-image fill (BCE 0.404 vs 0.434 nats per missing pixel); the binarised truth's own noise puts
# the floor near 0.070 (the MSE of the grey image that was binarised).
COMPLETION_EPOCHS, MIN_MSE_GAIN, MIN_BCE_GAIN = 30, 0.005, 0.015
SHORT = ["model.val_k=20", "model.test_k=100", "data.num_samples=null"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Small nets: one thread each is faster on a busy machine (no spinning OpenMP threads)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the partner ------------------------------------------------------------------------------
def test_simulated_partner_is_deterministic_under_its_seed():
    images = torch.rand(20, 1, 8, 8)

    def answers(seed):
        partner = SimulatedPartner(seed=seed, noise=0.3, mask="random_box")
        edit = partner.edit(images)
        return partner.ask_condition(10, 50), edit.mask, edit.observed

    first, again, other = answers(0), answers(0), answers(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])


def test_simulated_partner_noise_rate_and_bias():
    n, noise = 20_000, 0.3
    asked = SimulatedPartner(seed=0, noise=noise, bias=3).ask_condition(10, n)
    off_bias = (asked != 3).float().mean().item()          # a random answer misses class 3 with p = 0.9
    assert off_bias == pytest.approx(noise * 0.9, abs=4 * (0.27 * 0.73 / n) ** 0.5)
    assert torch.equal(SimulatedPartner(seed=0, bias=3).ask_condition(10, 100), torch.full((100,), 3))
    assert torch.bincount(SimulatedPartner(seed=0).ask_condition(10, 1000)).tolist() == [100] * 10

    images = torch.rand(2000, 1, 8, 8)
    edit = SimulatedPartner(seed=0, noise=noise).edit(images)
    random = ((edit.observed != images) & edit.mask).flatten(1).any(1).float().mean().item()  # kept pixels not the image's
    assert random == pytest.approx(noise, abs=4 * (noise * (1 - noise) / 2000) ** 0.5)


def test_simulated_drafts_keep_the_first_half_of_the_words_or_are_noise_at_the_configured_rate():
    texts = ["a b c d", "e f g h i", "j"] * 700
    drafts = SimulatedPartner(seed=0).edit(texts)
    assert drafts[:3] == ["a b", "e f", ""] and SimulatedPartner(seed=0).edit(texts) == drafts
    noisy = SimulatedPartner(seed=0, noise=0.3).edit(texts)
    assert noisy == SimulatedPartner(seed=0, noise=0.3).edit(texts)             # deterministic under its seed
    changed = sum(n != d for n, d in zip(noisy, drafts)) / (2 * len(texts) / 3)  # "" can not change
    assert changed == pytest.approx(0.3, abs=0.05)   # 4 sd of 1,400 drafts (a random one matches ~1 % of the time)
    assert len(SimulatedPartner(budget=2).edit(texts)) == 2


def test_budget_stops_answers_and_prompt_guided_tops_them_up():
    partner = SimulatedPartner(seed=0, budget=25)
    assert len(partner.ask_condition(10, 20)) == 20
    assert len(partner.ask_condition(10, 20)) == 5     # what is left of the budget
    assert partner.ask_condition(10, 20) is None and partner.edit(torch.rand(3, 1, 8, 8)) is None

    mode = PromptGuided(SimulatedPartner(seed=0, bias=7, budget=4), classifier=nn.Identity, num_classes=10,
                        n_samples=6)
    assert mode.requests().tolist() == [7, 7, 7, 7, 4, 5]   # then the mode's own: every class in turn
    assert mode.requests().tolist() == [0, 1, 2, 3, 4, 5]


def test_masks_keep_the_documented_part():
    images = torch.rand(500, 1, 8, 8)
    top = SimulatedPartner(mask="top_half").edit(images)
    assert top.mask[:, :, :4].all() and not top.mask[:, :, 4:].any()
    assert torch.equal(top.observed[top.mask], images[top.mask]) and (top.observed[~top.mask] == 0).all()
    left = SimulatedPartner(mask="left_half").edit(images).mask
    assert left[..., :4].all() and not left[..., 4:].any()
    box = ~SimulatedPartner(seed=0, mask="random_box").edit(images).mask[:, 0]     # the missing box
    heights, widths = box.any(2).sum(1), box.any(1).sum(1)
    assert heights.min() == 2 and heights.max() == 4 and widths.min() == 2 and widths.max() == 4
    assert torch.equal(box.sum((1, 2)), heights * widths)                           # one rectangle each


def test_simulated_partner_answers_every_question_the_base_partner_none():
    from cogen.config import CogenError

    images = torch.rand(3, 1, 8, 8)
    questions = (("ask_condition", (10, 2)), ("edit", (images,)), ("rate", (images,)), ("compare", (images, images)),
                 ("supply_facts", ("q",)))
    for question, args in questions:
        with pytest.raises(CogenError, match=rf"Partner \(partner\) cannot answer {question}\(\)"):
            getattr(Partner(), question)(*args)
    brightness = lambda items: items.flatten(1).mean(1)                            # noqa: E731 - an oracle
    partner = SimulatedPartner(oracle=brightness, facts=[("q", "is", "a"), ("b", "is", "c")])
    assert partner.rate(images).shape == (3,) and set(partner.rate(images).tolist()) <= {1, 2, 3, 4, 5}
    assert partner.compare(images, 1 - images).tolist() == (brightness(1 - images) > brightness(images)).long().tolist()
    assert partner.supply_facts("q") == [("q", "is", "a")]
    with pytest.raises(CogenError, match="no oracle to rate or compare with"):     # it says what to set
        SimulatedPartner().rate(images)


# -- the conditional VAE and completion -------------------------------------------------------
@pytest.mark.parametrize("nets", ["mlp", "conv"])
def test_conditional_nets_read_the_label(nets):
    shape, classes = [1, 8, 8], 10
    make = (MLPEncoder, MLPDecoder) if nets == "mlp" else (ConvEncoder, ConvDecoder)
    enc, dec = make[0](shape, 6, num_classes=classes), make[1](6, shape, num_classes=classes)
    x, y = torch.rand(5, *shape), torch.arange(5)
    mu, _ = enc(x, y)
    assert mu.shape == (5, 6) and not torch.allclose(mu, enc(x, y + 1)[0])
    z = torch.randn(7, 5, 6)                       # k samples per example: the label broadcasts over k
    out = dec(z, y)
    assert out.shape == (7, 5, *shape) and torch.allclose(out[3], dec(z[3], y), atol=1e-6)
    assert not torch.allclose(out, dec(z, (y + 1) % classes))


def tiny_vae(num_classes: int = 0, side: int = 8, latent: int = 4) -> VAE:
    torch.manual_seed(0)
    shape = [1, side, side]
    return VAE(MLPEncoder(shape, latent, hidden=[32], num_classes=num_classes),
               MLPDecoder(latent, shape, hidden=[32], num_classes=num_classes), Bernoulli(), latent_dim=latent,
               num_classes=num_classes).eval()


def test_sample_gives_images_of_the_requested_shape_and_seed():
    vae = tiny_vae(num_classes=10)
    labels = torch.tensor([1, 1, 2])
    a = vae.sample(3, labels=labels, generator=torch.Generator().manual_seed(0))
    b = vae.sample(3, labels=labels, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    from cogen.config import CogenError

    with pytest.raises(CogenError, match="model.num_classes=0"):
        tiny_vae().sample(2, labels=torch.tensor([0, 1]))


@pytest.mark.parametrize("conditional", [False, True])
def test_completion_keeps_the_given_pixels_bit_for_bit(conditional):
    vae = tiny_vae(num_classes=10 if conditional else 0)
    observed = torch.rand(6, 1, 8, 8) * 0.999 + 1e-4      # arbitrary grey values, not just 0/1
    mask = SimulatedPartner(seed=0, mask="random_box").edit(observed).mask
    labels = torch.arange(6) if conditional else None
    completed = vae.complete(torch.where(mask, observed, torch.zeros(())), mask, y=labels, steps=5, burn_in=1)
    assert torch.equal(completed[mask], observed[mask])
    assert ((completed >= 0) & (completed <= 1)).all()


def test_completion_is_refused_where_its_sampler_would_be_wrong():
    """A subclass with other latents (e.g. two stochastic layers) must bring its own `complete`."""

    class OtherLatents(VAE):
        def sample_terms(self, *args, **kwargs):
            return super().sample_terms(*args, **kwargs)

    from cogen.config import CogenError

    base = tiny_vae()
    other = OtherLatents(base.encoder, base.decoder, base.likelihood, latent_dim=4)
    assert base.can_complete and not other.can_complete
    with pytest.raises(CogenError, match="OtherLatents cannot complete images"):
        other.complete(torch.rand(2, 1, 8, 8), torch.ones(2, 1, 8, 8, dtype=torch.bool))


def test_completion_matches_the_models_exact_conditional():
    """Metropolis-within-Gibbs estimates E[x_miss | x_obs] under the model: compare it with a
    self-normalised importance sampling estimate from 200,000 prior draws (exact at this size)."""
    vae = tiny_vae(side=4, latent=2)
    with torch.no_grad():                          # a decoder whose pixels depend strongly on z
        vae.decoder.head.weight.mul_(6)
        vae.decoder.body[0].weight.mul_(3)
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.5), generator=g)
    mask = SimulatedPartner(mask="top_half").edit(x).mask
    with torch.no_grad():
        p = torch.sigmoid(vae.decoder(torch.randn(200_000, 2, generator=g)))        # (K, 1, 4, 4)
        log_obs = torch.where(mask, x * p[:, None].log() + (1 - x) * (-p[:, None]).log1p(), torch.zeros(()))
        weights = log_obs.sum((-3, -2, -1)).softmax(0)                             # (K, B)
        exact = torch.einsum("kb,kchw->bchw", weights, p)
    completed = vae.complete(x * mask, mask, steps=3000, burn_in=200, generator=torch.Generator().manual_seed(1))
    missing = ~mask
    assert (completed - exact)[missing].abs().mean() < 0.05          # measured 0.020
    assert (p.mean(0) - exact)[missing].abs().mean() > 0.15          # conditioning matters here: 0.28


# -- the real CLI ---------------------------------------------------------------------------
@pytest.mark.slow
def test_cvae_on_digits_reaches_the_prompt_adherence_target(run_dir):
    train(run_dir, "model=vae", "collab=prompt_guided", f"trainer.max_epochs={ADHERENCE_EPOCHS}", *SHORT)
    from omegaconf import OmegaConf

    assert OmegaConf.load(run_dir / "config.yaml").model.num_classes == 10   # the cVAE
    metrics = summary(run_dir)["metrics"]
    assert metrics["test/prompt_adherence"] >= MIN_ADHERENCE, metrics
    assert metrics["val/prompt_adherence"] >= MIN_ADHERENCE, metrics
    for stage in ("val", "test"):
        assert (run_dir / f"samples/prompt_guided_{stage}.png").is_file()
    (judge,) = summary(run_dir)["feature_nets"]   # the run says which classifier judged it
    assert judge["version"] == "v1" and judge["data"] == "digits" and judge["test_acc"] >= 0.98
    # cogen-eval rebuilds the mode from the checkpoint's config; its fresh partner asks anew
    scored = run_dir.parent / "eval"
    cli("cogen.eval", f"ckpt_path={summary(run_dir)['tested_ckpt']}", f"hydra.run.dir={scored}", "logger=csv")
    assert summary(scored)["metrics"]["test/prompt_adherence"] >= MIN_ADHERENCE
    assert summary(scored)["feature_nets"] == [judge] and (scored / "samples/prompt_guided_test.png").is_file()


@pytest.mark.slow
def test_co_creation_keeps_the_given_pixels_and_beats_the_mean_image(run_dir):
    train(run_dir, "model=vae", "collab=co_creation", f"trainer.max_epochs={COMPLETION_EPOCHS}", *SHORT)
    metrics = summary(run_dir)["metrics"]
    assert metrics["test/kept_pixel_error"] == 0.0
    assert metrics["test/completed_images"] == 359          # every held-out digit
    assert metrics["test/completion_mse"] <= metrics["test/baseline_mse"] - MIN_MSE_GAIN, metrics
    assert metrics["test/completion_bce"] <= metrics["test/baseline_bce"] - MIN_BCE_GAIN, metrics
    assert (run_dir / "samples/co_creation_test.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    (["model=gan", "collab=co_creation"],
     "collab=co_creation does not work with model family gan: a GAN has no encoder to condition on the "
     "partner's pixels; use model=vae or vae_conv."),
    (["collab=prompt_guided"], "collab=prompt_guided needs class labels, but this data set has no data.num_classes"),
])
def test_invalid_combinations_fail_before_training_with_one_line(run_dir, overrides, message):
    proc = train(run_dir, *overrides, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "cogen error" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert summary(run_dir)["status"] == "failed" and not (run_dir / "checkpoints").exists()
