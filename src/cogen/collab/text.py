"""What the text modes do with the RL-tuned LM (model=rl_lm): continue rows of tokens (a prompt,
and a partner's draft after it) with the policy or the frozen reference, and score what was
written with model.reward. Rows are lists of token ids, so drafts of different lengths mix."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from cogen.rl.rollout import sample
from cogen.utils.padding import pad_rows

CHUNK = 256   # rows sampled at once: a large request is not one huge batch


def is_text_model(pl_module: pl.LightningModule) -> bool:
    """The RL-tuned LM: a policy, its frozen reference, a tokenizer and model.reward."""
    return all(hasattr(pl_module, name) for name in ("policy", "reference", "tokenizer", "reward"))


def batch_rows(batch: dict) -> list[list[int]]:
    """A left-padded batch of prompts as rows of real tokens."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


@torch.no_grad()
def continue_rows(pl_module: pl.LightningModule, model: nn.Module, rows: list[list[int]], length: int,
                  generator: torch.Generator) -> list[list[int]]:
    """`length` tokens of `model` after each row (fewer where it writes the stop token), sampled as
    the RL-tuned LM samples: its temperature, its suppressed tokens."""
    hp, out = pl_module.hparams, []
    for start in range(0, len(rows), CHUNK):
        ids, mask = pad_rows(rows[start:start + CHUNK], pl_module.pad_token_id, device=pl_module.device)
        tokens, keep = sample(model, ids, mask, length, generator, hp.temperature, pl_module.suppress,
                              pl_module.stop_token_id, pl_module.pad_token_id)
        out += [t[k.bool()].tolist() for t, k in zip(tokens, keep)]
    return out


@torch.no_grad()
def rewards(pl_module: pl.LightningModule, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
    """model.reward of each response to its prompt."""
    prompt_ids, prompt_mask = pad_rows(prompts, pl_module.pad_token_id, device=pl_module.device)
    response_ids, response_mask = pad_rows(responses, pl_module.pad_token_id, left=False, device=pl_module.device)
    return pl_module.score(prompt_ids, prompt_mask, response_ids, response_mask).float()
