"""Small real parts for the RL tests: a tiny GPT-2 over a few words, its rollout, and a Trainer."""
from __future__ import annotations

import pytorch_lightning as pl
import torch

from cogen.data.markov import MarkovTokenizer
from cogen.nets.lm import causal_lm
from cogen.rl.rollout import Rollout, response_stats


def tiny_lm(words: int = 4, seed: int = 0, **config):
    """A fresh 1-layer GPT-2 over `words` words + BOS, and its tokenizer."""
    torch.manual_seed(seed)
    tok = MarkovTokenizer(words)
    return causal_lm(config={"n_layer": 1, "n_head": 2, "n_embd": 16, **config}, tokenizer=tok), tok


def hand_made_rollout(policy, reference, tok, responses: list[list[int]], scores: list[float],
                      value_head=None) -> Rollout:
    """One prompt (BOS) and the given responses as one group, scored by the shared path."""
    ids = torch.tensor([[tok.bos_token_id] + r for r in responses])
    attention = torch.ones_like(ids)
    mask = torch.ones(len(responses), len(responses[0]))
    with torch.no_grad():
        new = response_stats(policy, ids, attention, 1, tok.never_sample, value_head=value_head)
        ref = response_stats(reference, ids, attention, 1, tok.never_sample)
    return Rollout(ids, attention, 1, mask, new["logp"], ref["logp"], torch.tensor(scores), len(responses),
                   values=new.get("values"))


def trainer(**kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)
