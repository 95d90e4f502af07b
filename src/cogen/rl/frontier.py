"""The exact KL-reward frontier of a small response space, the correctness check of every algorithm.

For a prompt, a reference rho and a fixed reward r, the maximiser of E_pi[r] - beta*KL(pi||rho)
is pi_beta(y) = rho(y) exp(r(y)/beta) / Z_beta, with optimal value beta*log Z_beta. When every
response can be listed (vocab^length of them, e.g. 16^4 = 65,536), the probabilities of rho, of
pi_beta and of the current policy are all known exactly, and so is the gap of a policy to the
optimum: J*_beta - J_beta(pi) = beta * KL(pi || pi_beta), with no sampling error.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from cogen.rl.rollout import masked_logits


def all_responses(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """(len(tokens)**length, length): every response over `tokens`, in lexicographic order."""
    if length == 0:
        return torch.zeros(1, 0, dtype=torch.long)
    return torch.cartesian_prod(*[tokens] * length).reshape(-1, length)


@torch.no_grad()
def response_logprobs(model: nn.Module, prompt: torch.Tensor, tokens: torch.Tensor, length: int,
                      suppress: list[int] | tuple = (), temperature: float = 1.0, chunk: int = 1024) -> torch.Tensor:
    """log p(y | prompt) of every response y of `all_responses(tokens, length)`, in float64.

    One forward pass per prefix of length-1 tokens reads all four (or L) next-token
    distributions along it, so the cost is |tokens|^(length-1) sequences, not |tokens|^length."""
    device = next(model.parameters()).device
    prompt, tokens = prompt.to(device), tokens.to(device)
    prefixes = all_responses(tokens, length - 1).to(device)
    p = len(prompt)
    out = []
    for rows in prefixes.split(chunk):
        ids = torch.cat([prompt.expand(len(rows), -1), rows], 1)
        logp = masked_logits(model(input_ids=ids).logits[:, p - 1:], suppress, temperature).log_softmax(-1).double()
        along = logp[:, :-1].gather(-1, rows[..., None]).squeeze(-1).sum(1)      # the prefix itself
        out.append((along[:, None] + logp[:, -1, tokens]).reshape(-1))           # every last token
    return torch.cat(out)


def optimum(ref_logp: torch.Tensor, reward: torch.Tensor, beta: float) -> torch.Tensor:
    """log pi_beta, pi_beta proportional to rho * exp(r / beta); beta=0 puts all mass on argmax r."""
    if beta <= 0:
        best = reward == reward.max()
        return torch.where(best, ref_logp, torch.full_like(ref_logp, -math.inf)).log_softmax(0)
    return (ref_logp + reward.double() / beta).log_softmax(0)


def point(logp: torch.Tensor, ref_logp: torch.Tensor, reward: torch.Tensor) -> dict[str, float]:
    """Exact KL(pi||rho) and E_pi[r] of the distribution with log-probabilities `logp`."""
    p = logp.exp()
    log_ratio = torch.where(p > 0, logp - ref_logp, torch.zeros_like(logp))
    return {"kl": float((p * log_ratio).sum()), "reward": float((p * reward.double()).sum())}


def curve(ref_logp: torch.Tensor, reward: torch.Tensor, betas) -> list[dict[str, float]]:
    """The frontier: (beta, KL, reward) of pi_beta for each beta."""
    return [{"beta": float(b), **point(optimum(ref_logp, reward, b), ref_logp, reward)} for b in betas]


def reward_at_kl(ref_logp: torch.Tensor, reward: torch.Tensor, kl: float, iters: int = 80) -> float:
    """The most reward any policy gets within KL(pi||rho) <= kl: pi_beta's, for the beta whose KL
    is `kl` (KL falls monotonically in beta; found by bisection on log beta)."""
    top = point(optimum(ref_logp, reward, 0.0), ref_logp, reward)
    if kl >= top["kl"]:
        return top["reward"]
    lo, hi = -12.0, 12.0   # log beta
    for _ in range(iters):
        mid = (lo + hi) / 2
        if point(optimum(ref_logp, reward, math.exp(mid)), ref_logp, reward)["kl"] > kl:
            lo = mid
        else:
            hi = mid
    return point(optimum(ref_logp, reward, math.exp(hi)), ref_logp, reward)["reward"]


def gap(logp: torch.Tensor, ref_logp: torch.Tensor, reward: torch.Tensor, beta: float) -> dict[str, float]:
    """Where a policy stands against the exact optimum for this beta: its (KL, reward), pi_beta's,
    the objective gap J* - J = beta*KL(pi||pi_beta) >= 0, and the reward it leaves on the table
    at its own KL (the frontier's reward at that KL minus its reward)."""
    here = point(logp, ref_logp, reward)
    best_logp = optimum(ref_logp, reward, beta)
    best = point(best_logp, ref_logp, reward)
    to_best = point(logp, best_logp, reward)["kl"]
    return {"kl": here["kl"], "reward": here["reward"], "opt_kl": best["kl"], "opt_reward": best["reward"],
            "objective": here["reward"] - beta * here["kl"], "opt_objective": best["reward"] - beta * best["kl"],
            "gap": beta * to_best, "kl_to_opt": to_best,
            "reward_gap_at_kl": reward_at_kl(ref_logp, reward, here["kl"]) - here["reward"]}
