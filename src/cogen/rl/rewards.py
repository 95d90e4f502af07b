"""Reward sources: what a (simulated) human partner rewards. A reward scores whole responses,
given as a `Responses` batch (token ids, and the decoded text when it asks for it), and returns
one float per response. `model/reward=rule` is a programmable rule (a keyword, a length, a
lexicon, or your own function); `model/reward=learned` is a reward model learnt from a partner's
pairwise preferences (`LearnedReward`, the RLHF path). Another source (a sentiment model) plugs in
as another `Reward` subclass with its own conf/model/reward/<name>.yaml.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from cogen.config import CogenError


@dataclass
class Responses:
    prompt_ids: torch.Tensor     # (B, P), left-padded
    response_ids: torch.Tensor   # (B, L)
    mask: torch.Tensor           # (B, L) 1 on the tokens that count
    prompts: list[str] | None = None  # decoded, when the reward needs text
    texts: list[str] | None = None
    prompt_mask: torch.Tensor | None = None  # (B, P) 1 on the prompt's real tokens; None: all of them


class Reward:
    """Base class: `needs_text` asks the module to decode; `__call__` returns a (B,) float tensor."""

    needs_text: bool = False

    def __call__(self, batch: Responses) -> torch.Tensor:
        raise NotImplementedError


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def keyword(batch: Responses, words: list[str], weight: float = 1.0) -> torch.Tensor:
    """weight x how many times the response contains any of `words` (whole words, any case)."""
    wanted = {w.lower() for w in words}
    return torch.tensor([weight * sum(w in wanted for w in _words(t)) for t in batch.texts])


def lexicon(batch: Responses, scores: dict[str, float]) -> torch.Tensor:
    """The sum of the lexicon's score of every word of the response (0 for words not in it)."""
    table = {w.lower(): float(s) for w, s in scores.items()}
    return torch.tensor([sum(table.get(w, 0.0) for w in _words(t)) for t in batch.texts])


def echo(batch: Responses, weight: float = 1.0) -> torch.Tensor:
    """weight x how many words of the response are words of its prompt: a reward that depends on the
    prompt, so that a prompt chosen by a partner (collab=prompt_guided) is a condition to follow."""
    prompt_words = [set(_words(p)) for p in batch.prompts]
    return torch.tensor([weight * sum(w in words for w in _words(t)) for words, t in zip(prompt_words, batch.texts)])


def length(batch: Responses, unit: str = "tokens", target: float | None = None, scale: float = 1.0) -> torch.Tensor:
    """The response's length in tokens, words or chars; with a target, -|length - target|."""
    if unit == "tokens":
        n = batch.mask.sum(1).float().cpu()
    elif unit in ("words", "chars"):
        n = torch.tensor([float(len(_words(t)) if unit == "words" else len(t)) for t in batch.texts])
    else:
        raise CogenError(f"model.reward.unit={unit!r}: use tokens, words or chars.")
    return scale * (n if target is None else -(n - target).abs())


length.needs_text = False  # tokens need no text; words/chars decode (see RuleReward)
RULES: dict[str, Callable[..., torch.Tensor]] = {"keyword": keyword, "lexicon": lexicon, "length": length, "echo": echo}


class RuleReward(Reward):
    """A rule by name (keyword, lexicon, length, echo) or a dotted path `package.module.function` to
    your own `f(batch: Responses, **params) -> (B,) tensor`; `params` are the rule's arguments."""

    def __init__(self, rule: str, **params: Any):
        self.name, self.params = rule, params
        self.fn = RULES.get(rule) or _import(rule)
        self.needs_text = getattr(self.fn, "needs_text", True) or params.get("unit", "tokens") != "tokens"

    def __call__(self, batch: Responses) -> torch.Tensor:
        return torch.as_tensor(self.fn(batch, **self.params), dtype=torch.float32).reshape(-1)

    def __repr__(self) -> str:
        return f"RuleReward({self.name}, {self.params})"


def _import(path: str) -> Callable:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name) if module else _unknown(path)
    except (ImportError, AttributeError):
        return _unknown(path)


def _unknown(path: str):
    raise CogenError(f"model.reward.rule={path!r} does not exist: use one of {', '.join(RULES)}, "
                     f"or a dotted path to your own function (package.module.function).")


class LearnedReward(Reward):
    """A reward model learnt from a partner's pairwise preferences (the RLHF path): `cogen-train
    model=reward_model task=reward_model` saves it to `path`. It reads prompt + response token ids,
    so the policy's tokenizer must be the one it was trained with (model/reward=learned passes
    data.tokenizer, checked here). normalise: mean 0, std 1 on the reference LM's responses.
    Scores on the responses' device, without gradients."""

    needs_text = False

    def __init__(self, path: str, tokenizer: Any = None, normalise: bool = True):
        from pathlib import Path

        from cogen.nets.reward import HEAD_FILE, RewardNet

        if not (Path(path).expanduser() / HEAD_FILE).is_file():
            raise CogenError(f"model.reward.path={path} holds no reward model: train one first (cogen-train "
                             f"model=reward_model task=reward_model), or point model.reward.path at its save_dir.")
        self.net = RewardNet.load(path).eval().requires_grad_(False)
        vocab = self.net.backbone.config.vocab_size
        if tokenizer is not None and len(tokenizer) > vocab:
            raise CogenError(f"model.reward.path={path} reads {vocab} token ids but the policy's tokenizer has "
                             f"{len(tokenizer)}: train the reward model on the policy's tokenizer (data.tokenizer).")
        self.path, self.normalise = path, normalise

    @torch.no_grad()
    def __call__(self, batch: Responses) -> torch.Tensor:
        device = batch.response_ids.device
        if self.net.mean.device != device:
            self.net.to(device)
        prompt_mask = batch.prompt_mask if batch.prompt_mask is not None else torch.ones_like(batch.prompt_ids)
        return self.net(batch.prompt_ids, prompt_mask, batch.response_ids, batch.mask, normalise=self.normalise).float()

    def __repr__(self) -> str:
        return f"LearnedReward({self.path})"
