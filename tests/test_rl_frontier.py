"""The exact frontier: its algebra, the enumeration against the shared sampling and scoring
path, and every algorithm ending near the exact optimum of the toy (vocabulary 16, length 4)."""
from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from cogen.rl import frontier
from cogen.rl.rollout import response_stats, sample

from conftest import compose_train
from rl_helpers import tiny_lm, trainer


def toy_space():
    ref_logp = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64).log()
    reward = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    return ref_logp, reward


def test_optimum_is_the_tilted_reference_and_the_gap_is_exact():
    ref_logp, reward = toy_space()
    beta = 0.7
    tilted = ref_logp.exp() * (reward / beta).exp()
    torch.testing.assert_close(frontier.optimum(ref_logp, reward, beta).exp(), tilted / tilted.sum())
    points = frontier.curve(ref_logp, reward, [0.1, 0.3, 1.0, 3.0, 1e9])
    kls, rewards = [p["kl"] for p in points], [p["reward"] for p in points]
    assert kls == sorted(kls, reverse=True) and rewards == sorted(rewards, reverse=True)
    assert kls[-1] == pytest.approx(0, abs=1e-9) and rewards[-1] == pytest.approx(float((ref_logp.exp() * reward).sum()))
    # The optimum has no gap; any other policy's gap is J* - J, and equals beta * KL(pi || pi_beta).
    best = frontier.gap(frontier.optimum(ref_logp, reward, beta), ref_logp, reward, beta)
    assert best["gap"] == pytest.approx(0, abs=1e-12) and best["reward_gap_at_kl"] == pytest.approx(0, abs=1e-6)
    other = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64).log()
    g = frontier.gap(other, ref_logp, reward, beta)
    assert g["gap"] == pytest.approx(g["opt_objective"] - g["objective"]) and g["gap"] > 0
    assert g["opt_objective"] == pytest.approx(beta * math.log(float((ref_logp + reward / beta).exp().sum())))
    assert g["reward_gap_at_kl"] > 0   # a non-tilted policy is strictly inside the frontier


def test_enumeration_matches_the_sampler_and_the_scoring_path():
    policy, tok = tiny_lm(words=4)
    tokens = torch.arange(4)
    prompt = torch.tensor([tok.bos_token_id, 2])
    logp = frontier.response_logprobs(policy, prompt, tokens, 3, tok.never_sample)
    assert logp.shape == (64,) and float(logp.logsumexp(0)) == pytest.approx(0, abs=1e-6)  # BOS is never sampled
    ys = frontier.all_responses(tokens, 3)
    # The same probabilities through the training path, with this prompt left-padded beside a longer one.
    ids = torch.cat([torch.tensor([[tok.pad_token_id, tok.bos_token_id, 2]]).expand(64, -1), ys], 1)
    attention = torch.ones_like(ids)
    attention[:, 0] = 0
    with torch.no_grad():
        scored = response_stats(policy, ids, attention, 3, tok.never_sample)["logp"].sum(1).double()
    torch.testing.assert_close(scored, logp, atol=1e-5, rtol=0)
    # The KV-cache sampler draws from exactly these probabilities (total variation < 0.03 at n=20,000).
    n = 20000
    prompts = torch.tensor([[tok.pad_token_id, tok.bos_token_id, 2]]).expand(n, -1)
    mask = torch.tensor([[0, 1, 1]]).expand(n, -1)
    drawn, keep = sample(policy, prompts, mask, 3, torch.Generator().manual_seed(0), suppress=tok.never_sample)
    assert keep.all()
    index = (drawn * torch.tensor([16, 4, 1])).sum(1)
    freq = torch.bincount(index, minlength=64).double() / n
    assert 0.5 * float((freq - logp.exp()).abs().sum()) < 0.03


def test_a_prompt_read_once_for_its_group_draws_the_same_responses():
    """sample(..., repeats=k) reads each prompt once and copies its KV cache to its k rows: the
    same draws, token for token, as sampling the k-times repeated prompts (left padding included)."""
    policy, tok = tiny_lm(words=4)
    prompts = torch.tensor([[tok.pad_token_id, tok.bos_token_id, 2], [tok.bos_token_id, 1, 3]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    k = 5
    shared, shared_keep = sample(policy, prompts, mask, 4, torch.Generator().manual_seed(3), suppress=tok.never_sample,
                                 repeats=k)
    repeated, repeated_keep = sample(policy, prompts.repeat_interleave(k, 0), mask.repeat_interleave(k, 0), 4,
                                     torch.Generator().manual_seed(3), suppress=tok.never_sample)
    assert shared.shape == (2 * k, 4) and torch.equal(shared, repeated) and torch.equal(shared_keep, repeated_keep)
    assert not shared.is_inference() and len(set(map(tuple, shared.tolist()))) > 2   # ordinary tensors; draws differ


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """rho: the tiny GPT-2 pre-trained (300 steps, about 6 s) on the Markov grammar's text."""
    out = tmp_path_factory.mktemp("rl") / "tiny_gpt2_markov"
    cfg = compose_train("model=lm_pretrain", f"model.save_dir={out}")
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="all")
    trainer(max_steps=300, limit_val_batches=0).fit(model, datamodule=instantiate(cfg.data))
    return out


BETA = 0.5
# Objective gap J*_beta - J_beta(pi) = beta * KL(pi || pi_beta) after 100 rollouts of 128
# responses at beta=0.5; the reference's own gap is about 0.6. Measured (seeds 0-2, two references):
# REINFORCE and RLOO 0.007-0.008, GRPO 0.008-0.013, PPO (lr_scale 0.15) 0.028-0.034, with its
# |KL - KL*| 0.02-0.10 (at lr_scale 0.25 it reached 0.50 for seed 0: conf/model/algo/ppo.yaml).
TOLERANCE = {"reinforce": 0.02, "rloo": 0.02, "grpo": 0.03, "ppo": 0.06}


@pytest.mark.parametrize("algo", list(TOLERANCE))
def test_every_algorithm_ends_near_the_exact_optimum(algo, reference):
    import pytorch_lightning as pl

    cfg = compose_train("model=rl_lm", f"model/algo={algo}", f"model.policy.path={reference}",
                        f"model.kl.beta={BETA}", "data.steps_per_epoch=100")
    pl.seed_everything(0, verbose=False)
    model = instantiate(cfg.model, _convert_="all")
    start = model.exact(torch.tensor([16]), BETA)
    trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=instantiate(cfg.data))
    end = model.exact(torch.tensor([16]), BETA)
    assert start["gap"] > 0.5
    assert end["gap"] < TOLERANCE[algo], end
    assert abs(end["kl"] - end["opt_kl"]) < 0.3 and abs(end["reward"] - end["opt_reward"]) < 0.15, end
