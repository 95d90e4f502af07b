"""The RL algorithms. They share the rollout and its scoring (`cogen.rl.rollout`); each one only
turns a Rollout into advantages and a loss. All of them maximise the same objective,
E[score] - beta * KL(pi || rho), with the KL penalty inside the return (Ziegler et al. 2019), so
their fixed point is the same pi_beta (`cogen.rl.frontier`).

- REINFORCE with a baseline (Williams 1992): advantage = return - a running mean of returns.
- RLOO (Kool et al. 2019; Ahmadian et al. 2024): return - mean of the other samples of its prompt.
- GRPO (Shao et al. 2024): return standardised within its prompt's group; clipped ratio.
- PPO (Schulman et al. 2017, as in Ziegler et al.): per-token rewards, GAE over a value head,
  whitened advantages, clipped ratio and clipped value loss, several epochs of minibatches.
"""
from __future__ import annotations

import torch
from torch import nn

from cogen.config import CogenError
from cogen.rl.rollout import Rollout


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Zero mean (unless shift_mean=False) and unit variance over the masked entries."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates (Schulman et al. 2016) per token; the value after the
    last valid token is 0 (the episode ends there)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t] * mask[:, t]
    return advantages


def groups(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) -> (B / size, size): one row per prompt."""
    return x.view(-1, size)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token: -min(ratio * A, clip(ratio, 1 +- clip) * A), and whether the clip was active."""
    ratio = (logp - old_logp).exp()
    plain, clipped = ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages
    return -torch.minimum(plain, clipped), (clipped < plain).float()


class Algorithm(nn.Module):
    """advantages() fills rollout.advantages (and .returns); loss() scores one minibatch."""

    epochs: int = 1        # passes over one rollout
    minibatches: int = 1   # updates per pass
    lr_scale: float = 1.0  # x model.lr: more updates per rollout take smaller steps
    needs_value: bool = False
    min_group: int = 1     # samples per prompt it needs

    def advantages(self, rollout: Rollout, beta: float) -> None:
        raise NotImplementedError

    def loss(self, batch: Rollout, new: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sequence-level policy gradient: -A * log pi(response), averaged over responses."""
        loss = -(batch.advantages * new["logp"] * batch.mask).sum(1).mean()
        return loss, {}


class Reinforce(Algorithm):
    """The baseline is an exponential moving average of past batches' mean return (the first
    batch uses its own mean), kept in the checkpoint."""

    def __init__(self, baseline_decay: float = 0.9):
        super().__init__()
        if not 0 <= baseline_decay < 1:
            raise CogenError(f"model.algo.baseline_decay={baseline_decay}: use a value in [0, 1).")
        self.decay = baseline_decay
        self.register_buffer("baseline", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def advantages(self, rollout: Rollout, beta: float) -> None:
        returns = rollout.returns_of(beta)
        batch_mean = returns.mean().double()
        baseline = self.baseline if bool(self.seen) else batch_mean
        rollout.advantages = (returns - baseline.to(returns.dtype))[:, None] * rollout.mask
        self.baseline.copy_(self.decay * baseline + (1 - self.decay) * batch_mean)
        self.seen.fill_(True)


class RLOO(Algorithm):
    min_group = 2

    def advantages(self, rollout: Rollout, beta: float) -> None:
        k = rollout.group_size
        returns = groups(rollout.returns_of(beta), k)
        others = (returns.sum(1, keepdim=True) - returns) / (k - 1)
        rollout.advantages = (returns - others).reshape(-1, 1) * rollout.mask


class GRPO(Algorithm):
    """Group-relative advantages, the same for every token of a response; the loss averages the
    clipped surrogate over each response's tokens, then over responses. scale_rewards=false
    drops the division by the group's std (Dr. GRPO, Liu et al. 2025)."""

    min_group = 2

    def __init__(self, clip: float = 0.2, epochs: int = 1, minibatches: int = 1, scale_rewards: bool = True,
                 eps: float = 1e-4):
        super().__init__()
        self.clip, self.epochs, self.minibatches, self.scale_rewards, self.eps = clip, epochs, minibatches, scale_rewards, eps

    def advantages(self, rollout: Rollout, beta: float) -> None:
        returns = groups(rollout.returns_of(beta), rollout.group_size)
        centred = returns - returns.mean(1, keepdim=True)
        if self.scale_rewards:
            centred = centred / (returns.std(1, keepdim=True) + self.eps)
        rollout.advantages = centred.reshape(-1, 1) * rollout.mask

    def loss(self, batch, new):
        per_token, clipped = clipped_surrogate(new["logp"], batch.logp, batch.advantages, self.clip)
        per_response = (per_token * batch.mask).sum(1) / batch.mask.sum(1).clamp(min=1)
        return per_response.mean(), {"clipfrac": masked_mean(clipped, batch.mask)}


class PPO(Algorithm):
    needs_value = True

    def __init__(self, clip: float = 0.2, epochs: int = 4, minibatches: int = 4, gamma: float = 1.0, lam: float = 0.95,
                 vf_coef: float = 0.1, vf_clip: float = 0.2, whiten_advantages: bool = True, whiten_rewards: bool = False,
                 lr_scale: float = 1.0):
        super().__init__()
        self.clip, self.epochs, self.minibatches, self.lr_scale = clip, epochs, minibatches, lr_scale
        self.gamma, self.lam, self.vf_coef, self.vf_clip = gamma, lam, vf_coef, vf_clip
        self.whiten_advantages, self.whiten_rewards = whiten_advantages, whiten_rewards

    def advantages(self, rollout: Rollout, beta: float) -> None:
        if rollout.values is None:
            raise CogenError("PPO needs a value head: build the module with algo=ppo (it adds one).")
        rewards = rollout.token_rewards(beta)
        if self.whiten_rewards:  # per batch, as TRL's option; it rescales the objective, so off by default
            rewards = whiten(rewards, rollout.mask, shift_mean=False)
        advantages = gae(rewards, rollout.values, rollout.mask, self.gamma, self.lam)
        rollout.returns = (advantages + rollout.values) * rollout.mask
        rollout.advantages = whiten(advantages, rollout.mask) if self.whiten_advantages else advantages

    def loss(self, batch, new):
        per_token, clipped = clipped_surrogate(new["logp"], batch.logp, batch.advantages, self.clip)
        pg = masked_mean(per_token, batch.mask)
        values = new["values"]
        clipped_values = batch.values + (values - batch.values).clamp(-self.vf_clip, self.vf_clip)
        vf = 0.5 * masked_mean(torch.maximum((values - batch.returns) ** 2, (clipped_values - batch.returns) ** 2),
                               batch.mask)
        return pg + self.vf_coef * vf, {"clipfrac": masked_mean(clipped, batch.mask), "vf_loss": vf.detach(),
                                        "pg_loss": pg.detach()}
