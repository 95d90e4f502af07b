"""Each algorithm's advantages and loss on hand-made batches with known rewards; the KL estimate;
the adaptive-KL controller."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cogen.rl.kl import AdaptiveKL, FixedKL
from cogen.rl.losses import GRPO, PPO, RLOO, Reinforce, clipped_surrogate, gae, whiten
from cogen.rl.rollout import response_stats

from rl_helpers import hand_made_rollout, tiny_lm, trainer

GOOD, BAD = [0, 1, 2], [3, 3, 1]


def algorithms():
    return {"reinforce": Reinforce(), "rloo": RLOO(), "grpo": GRPO(), "ppo": PPO(epochs=1, minibatches=1)}


@pytest.mark.parametrize("name", ["reinforce", "rloo", "grpo", "ppo"])
def test_the_better_sample_gains_probability(name):
    algo = algorithms()[name]
    policy, tok = tiny_lm()
    reference = copy.deepcopy(policy)
    head = nn.Linear(policy.config.hidden_size, 1) if algo.needs_value else None
    if head is not None:
        nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    r = hand_made_rollout(policy, reference, tok, [GOOD, BAD], [1.0, 0.0], head)
    algo.advantages(r, beta=0.1)
    assert (r.advantages[0] > 0).all() and (r.advantages[1] < 0).all(), r.advantages
    before = r.logp.sum(1)
    params = list(policy.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.SGD(params, lr=0.02)
    new = response_stats(policy, r.ids, r.attention_mask, 1, tok.never_sample, value_head=head)
    loss, _ = algo.loss(r, new)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = response_stats(policy, r.ids, r.attention_mask, 1, tok.never_sample)["logp"].sum(1)
    assert after[0] > before[0] and after[1] < before[1], (before, after)


def test_advantages_have_the_textbook_values():
    policy, tok = tiny_lm()
    r = hand_made_rollout(policy, policy, tok, [GOOD, BAD, BAD, BAD], [4.0, 0.0, 1.0, 3.0])  # KL = 0: returns = scores
    scores = torch.tensor([4.0, 0.0, 1.0, 3.0])
    RLOO().advantages(r, 0.5)
    loo = torch.stack([scores[i] - (scores.sum() - scores[i]) / 3 for i in range(4)])
    torch.testing.assert_close(r.advantages[:, 0], loo)
    GRPO().advantages(r, 0.5)
    torch.testing.assert_close(r.advantages[:, 0], (scores - 2.0) / (scores.std() + 1e-4))
    GRPO(scale_rewards=False).advantages(r, 0.5)
    torch.testing.assert_close(r.advantages[:, 0], scores - 2.0)
    reinforce = Reinforce(baseline_decay=0.5)
    reinforce.advantages(r, 0.5)   # first batch: its own mean is the baseline
    torch.testing.assert_close(r.advantages[:, 0], scores - 2.0)
    assert float(reinforce.baseline) == 2.0
    r.score = scores + 4.0          # next batch, mean 6: baseline stays 2 for it, then moves to 4
    reinforce.advantages(r, 0.5)
    torch.testing.assert_close(r.advantages[:, 0], scores + 2.0)
    assert float(reinforce.baseline) == 4.0


def test_kl_enters_the_return_per_token():
    policy, tok = tiny_lm()
    reference, _ = tiny_lm(seed=1)
    r = hand_made_rollout(policy, reference, tok, [GOOD, BAD], [1.0, 0.0])
    rewards = r.token_rewards(beta=0.3)
    torch.testing.assert_close(rewards[:, :-1], -0.3 * (r.logp - r.ref_logp)[:, :-1])
    torch.testing.assert_close(rewards[:, -1], r.score - 0.3 * (r.logp - r.ref_logp)[:, -1])
    torch.testing.assert_close(r.returns_of(0.3), r.score - 0.3 * r.kl.sum(1))


def test_gae_by_hand_and_ppo_clipping():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6], [0.0, 0.1, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the second response ended after 2 tokens
    adv = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    d = [[0 + 0.4 - 0.2, 0 + 0.6 - 0.4, 1 - 0.6], [0.5 + 0.1 - 0.0, 0 + 0 - 0.1, 0.0]]
    expect = torch.tensor([[d[0][0] + 0.5 * (d[0][1] + 0.5 * d[0][2]), d[0][1] + 0.5 * d[0][2], d[0][2]],
                           [d[1][0] + 0.5 * d[1][1], d[1][1], 0.0]])
    torch.testing.assert_close(adv, expect)
    w = whiten(adv, mask)
    assert abs(float((w * mask).sum() / mask.sum())) < 1e-6 and float(w[1, 2]) == 0.0
    # A positive advantage whose ratio is already above 1 + clip gets no more push.
    logp = torch.zeros(3, requires_grad=True)
    loss, clipped = clipped_surrogate(logp, torch.tensor([-0.5, 0.0, 0.5]), torch.tensor([1.0, 1.0, 1.0]), clip=0.2)
    loss.sum().backward()
    assert clipped.tolist() == [1.0, 0.0, 0.0] and logp.grad[0] == 0 and logp.grad[1] < 0 and logp.grad[2] < 0


def test_adaptive_kl_controller_moves_beta_toward_the_target():
    ctl = AdaptiveKL(init_beta=0.5, target=2.0, horizon=1000)
    assert ctl.update(0.5, 2.0, 100) == 0.5
    assert ctl.update(0.5, 10.0, 100) == pytest.approx(0.5 * (1 + 0.2 * 0.1))   # error clipped at +0.2
    assert ctl.update(0.5, 1.8, 100) == pytest.approx(0.5 * (1 - 0.1 * 0.1))
    assert ctl.update(0.5, 0.0, 100) == pytest.approx(0.5 * (1 - 0.2 * 0.1))
    assert FixedKL(0.3).update(0.3, 50.0, 100) == 0.3


def test_kl_is_zero_at_the_reference_and_positive_after_one_update():
    from cogen.data.prompts import PromptDataModule
    from cogen.models.rl_lm import RLLM
    from cogen.rl.rewards import RuleReward

    policy, tok = tiny_lm()
    model = RLLM(policy, RuleReward("keyword", words=["a"]), RLOO(), FixedKL(0.1), tok, response_length=3,
                 samples_per_prompt=8, lr=0.05)
    data = PromptDataModule(tok, prompts=["", "b"], batch_size=4, steps_per_epoch=1)
    batch = data.collate([0, 1])
    r = model.rollout(batch["input_ids"], batch["attention_mask"], 256, torch.Generator().manual_seed(0))
    # Zero up to float rounding: the LM head reads only the response's positions, and PyTorch's
    # matmul takes another kernel for the policy's weights (they require grad) than for the
    # frozen reference's: 2.4e-7 at most here.
    assert float(r.kl.abs().max()) < 1e-6
    assert model.exact(torch.tensor([tok.bos_token_id]), 0.1)["kl"] == 0.0
    trainer(max_steps=1, limit_val_batches=0).fit(model, datamodule=data)
    exact = model.exact(torch.tensor([tok.bos_token_id]), 0.1)
    assert exact["kl"] > 1e-4
    r = model.rollout(batch["input_ids"], batch["attention_mask"], 2048, torch.Generator().manual_seed(1))
    assert float(r.kl.sum(1).mean()) > 0


def test_reference_reward_samples_the_frozen_reference_not_the_policy():
    """test/reference_reward (model.eval_reference, the KL = 0 end of a frontier) is the reference's
    own expected reward, computed here exactly by listing all 4,096 responses, however far the
    policy has moved."""
    from cogen.data.prompts import PromptDataModule
    from cogen.models.rl_lm import RLLM
    from cogen.rl.rewards import RuleReward

    policy, tok = tiny_lm()
    model = RLLM(policy, RuleReward("keyword", words=["a"]), RLOO(), FixedKL(0.1), tok, response_length=3,
                 samples_per_prompt=8, val_samples=4096)
    with torch.no_grad():   # the policy now prefers other responses than the reference
        for p in model.policy.parameters():
            p.add_(torch.randn_like(p))
    batch = PromptDataModule(tok, prompts=[""], batch_size=1, steps_per_epoch=1).collate([0])
    prompt = torch.tensor([tok.bos_token_id])
    model.exact(prompt, 0.1)
    ref_logp, rewards = model._exact_cache[(tok.bos_token_id,)]
    expected = float((ref_logp.exp() * rewards).sum())
    policy_logp = frontier_logprobs(model, prompt)
    assert abs(float((policy_logp.exp() * rewards).sum()) - expected) > 0.1   # the two differ
    model.on_validation_epoch_start()
    sampled = model.reference_reward(batch)
    assert sampled.shape == (4096,)
    assert abs(float(sampled.mean()) - expected) < 4 * float(sampled.std()) / 4096 ** 0.5


def frontier_logprobs(model, prompt: torch.Tensor) -> torch.Tensor:
    from cogen.rl import frontier

    return frontier.response_logprobs(model.policy, prompt, model.allowed_tokens(), model.hparams.response_length,
                                      model.suppress, model.hparams.temperature)
