"""Causal language models from transformers: a saved model by `from_pretrained(path)` (a real
pre-trained one, or one cogen pre-trained), or a fresh GPT-2 built from a small config."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from cogen.config import CogenError

# A few layers of small width: trains and samples on a CPU in milliseconds. Dropout is off:
# RL compares the log-probabilities of sampling with those of the update.
TINY_GPT2 = {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 32,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def causal_lm(path: str | None = None, config: dict | None = None, tokenizer: Any = None,
              gguf_file: str | None = None) -> nn.Module:
    """The model saved at `path`, or (path=None) a fresh GPT-2 from `config` over the
    tokenizer's vocabulary (its BOS doubles as EOS and padding)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise CogenError(f"model path {path} does not exist: pre-train one first (cogen-train model=lm_pretrain), "
                             f"or set model.policy.path to a saved transformers model.")
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            return transformers.AutoModelForCausalLM.from_pretrained(str(folder), **extra)
        except (OSError, ValueError) as e:
            raise CogenError(f"model path {path} holds no loadable transformers model ({str(e).splitlines()[0]}): "
                             f"point model.policy.path at a save_pretrained folder.") from None
    settings = {**TINY_GPT2, **(config or {})}
    if tokenizer is not None:
        special = tokenizer.bos_token_id
        settings = {"vocab_size": len(tokenizer), "bos_token_id": special, "eos_token_id": special,
                    "pad_token_id": special, **settings}
    if "vocab_size" not in settings:
        raise CogenError("a fresh GPT-2 needs its vocabulary: give model.policy.tokenizer or model.policy.config.vocab_size.")
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**settings))
