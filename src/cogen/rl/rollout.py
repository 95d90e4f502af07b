"""The one rollout and scoring path every RL algorithm shares: sample responses, then read the
log-probabilities (and values) of the sampled tokens from one forward pass of the whole sequence.

Prompts are left-padded (`attention_mask` 0 on padding), so that every response starts at the
same column. All distributions go through `masked_logits`: temperature, and tokens a policy may
never emit (e.g. BOS) set to -inf, so sampling, the loss and the exact enumeration of
`cogen.rl.frontier` all see one and the same distribution.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn


def masked_logits(logits: torch.Tensor, suppress: list[int] | tuple = (), temperature: float = 1.0) -> torch.Tensor:
    logits = logits.float() / temperature   # a new tensor: the -inf below leave the model's logits alone
    if suppress:
        logits[..., list(suppress)] = float("-inf")
    return logits


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on the first real token of a left-padded row."""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def sample(model: nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, length: int,
           generator: torch.Generator | None = None, temperature: float = 1.0, suppress: list[int] | tuple = (),
           stop_token_id: int | None = None, pad_token_id: int = 0, repeats: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """`length` tokens after each prompt, `repeats` responses per prompt (a prompt's rows
    contiguous), with the KV cache (transformers >= 5.24 names it `cache`): (response ids, mask).
    The mask is 1 up to and including a stop token; after it the row holds padding.
    Each prompt is read once and its cache copied to its `repeats` rows. It runs in inference
    mode (no autograd bookkeeping at all, faster than no_grad on small models); the returned
    tensors are ordinary ones, fit for a later backward."""
    with torch.inference_mode():
        response, keep = _sample(model, prompt_ids, prompt_mask, length, generator, temperature, suppress,
                                 stop_token_id, pad_token_id, repeats)
    return response.clone(), keep.clone()


def _sample(model, prompt_ids, prompt_mask, length, generator, temperature, suppress, stop_token_id, pad_token_id,
            repeats):
    mask = prompt_mask.long()
    out = model(input_ids=prompt_ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True)
    logits, cache = out.logits[:, -1], out.cache
    if repeats > 1:
        logits, mask = logits.repeat_interleave(repeats, 0), mask.repeat_interleave(repeats, 0)
        cache.batch_repeat_interleave(repeats)
    n = mask.shape[0]
    tokens, alive = [], torch.ones(n, dtype=torch.bool, device=prompt_ids.device)
    keep = torch.ones(n, length, device=prompt_ids.device)
    for t in range(length):
        probs = masked_logits(logits, suppress, temperature).softmax(-1)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        token = torch.where(alive, token, torch.full_like(token, pad_token_id))
        keep[:, t] = alive.float()
        if stop_token_id is not None:
            alive = alive & (token != stop_token_id)
        tokens.append(token)
        if t + 1 < length:
            mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=mask.device)], 1)
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position_ids(mask)[:, -1:],
                        cache=cache, use_cache=True)
            logits, cache = out.logits[:, -1], out.cache
    return torch.stack(tokens, 1), keep


def response_stats(model: nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                   suppress: list[int] | tuple = (), temperature: float = 1.0, value_head: nn.Module | None = None,
                   entropy: bool = False) -> dict[str, torch.Tensor]:
    """Per response token: `logp` of the sampled token, and optionally the `entropy` of its
    distribution and the `values` of the state before it (from the last hidden layer).

    With a large vocabulary (SmolLM2: 49,152) the logits dominate time and memory, so the LM head
    runs on the response's positions only (`logits_to_keep`), the log-probability is the gathered
    logit minus the log-normaliser (no full log-softmax table), and the entropy, a logged number,
    is computed without autograd."""
    out = model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                output_hidden_states=value_head is not None, logits_to_keep=ids.shape[1] - prompt_len + 1)
    logits = masked_logits(out.logits[:, :-1], suppress, temperature)
    log_z = logits.logsumexp(-1)
    response = ids[:, prompt_len:]
    stats = {"logp": logits.gather(-1, response[..., None]).squeeze(-1) - log_z}
    if entropy:
        with torch.no_grad():   # H = log Z - sum_v p_v * logit_v; suppressed tokens have p = 0
            p = (logits - log_z[..., None]).exp()
            stats["entropy"] = log_z - (p * logits.clamp(min=torch.finfo(logits.dtype).min)).sum(-1)
    if value_head is not None:
        # The head shares the policy's trunk (as in Ziegler et al.'s code). A detached trunk was
        # measured worse on the exact toy: its poorer values bias GAE more than the shared
        # trunk's value gradient moves the policy.
        stats["values"] = value_head(out.hidden_states[-1][:, prompt_len - 1: -1]).squeeze(-1)
    return stats


@dataclass
class Rollout:
    """One batch of sampled responses: B = prompts x group_size rows, each prompt's group contiguous."""

    ids: torch.Tensor             # (B, P+L) prompt then response
    attention_mask: torch.Tensor  # (B, P+L)
    prompt_len: int
    mask: torch.Tensor            # (B, L) 1 on response tokens that count
    logp: torch.Tensor            # (B, L) policy log-probabilities at sampling time
    ref_logp: torch.Tensor        # (B, L) frozen reference
    score: torch.Tensor           # (B,) the reward source's score of each response
    group_size: int
    entropy: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None  # (B, L), set by the algorithm
    returns: torch.Tensor | None = None     # (B, L) value targets (PPO)

    @property
    def response(self) -> torch.Tensor:
        return self.ids[:, self.prompt_len:]

    @property
    def kl(self) -> torch.Tensor:
        """(B, L) per-token log(pi/rho) of the sampled tokens: summed, an unbiased estimate of KL(pi||rho)."""
        return (self.logp - self.ref_logp) * self.mask

    def token_rewards(self, beta: float) -> torch.Tensor:
        """Ziegler et al.'s per-token reward: -beta*log(pi/rho) at every token, plus the score at the last."""
        rewards = -beta * self.kl
        last = self.mask.sum(1).long().clamp(min=1) - 1  # the mask is a prefix of ones
        return rewards.scatter_add(1, last[:, None], self.score[:, None].to(rewards.dtype))

    def returns_of(self, beta: float) -> torch.Tensor:
        """(B,) the KL-shaped return score - beta*KL: its mean is the objective every algorithm maximises."""
        return self.token_rewards(beta).sum(1)

    def take(self, rows: torch.Tensor) -> "Rollout":
        """The rows `rows` of every per-row field (a minibatch)."""
        cut = {f.name: getattr(self, f.name)[rows] for f in fields(self)
               if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **cut)
