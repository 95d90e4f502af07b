"""Real text for pre-training a small language model: a byte-level BPE tokenizer learnt from the
corpus, and the corpus packed into blocks (as nanoGPT packs its text).

Every text starts with the end-of-text token, which also serves as BOS and padding, so that a
prompt `<|endoftext|> The movie` reads as the start of a new text both here and in RL. The
tokenizer is a `transformers.PreTrainedTokenizerFast`: it saves beside the model and loads back
with `AutoTokenizer.from_pretrained`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import TensorDataset

from cogen.config import CogenError
from cogen.data.token_splits import TokenSplitsDataModule

END = "<|endoftext|>"


def bpe_tokenizer(texts: Callable[[], list[str]] | list[str], vocab_size: int = 2048, cache_dir: str | None = None,
                  responses_fixed: bool = True):
    """A byte-level BPE over `texts`, learnt once and kept in `cache_dir` (learning is
    deterministic, so the cache only saves the seconds it takes). `responses_fixed`: RL never
    samples the end-of-text token, so every response has the configured length (as in Ziegler
    et al.'s sentiment task); false lets a response stop there."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(cache_dir).expanduser() if cache_dir else None
    if folder is not None and (folder / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(folder))
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        corpus = texts() if callable(texts) else texts
        if not corpus:
            raise CogenError("the tokenizer's corpus is empty: give data.tokenizer.texts some text.")
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        core.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[END], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False))
        tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=END, eos_token=END, pad_token=END)
        if folder is not None:
            tok.save_pretrained(str(folder))
    tok.never_sample = [tok.eos_token_id] if responses_fixed else []
    return tok


class TextDataModule(TokenSplitsDataModule):
    """Next-token prediction on a corpus: each split's texts, each led by the end-of-text token,
    joined into one stream and cut into blocks of `seq_len + 1` tokens (the first token of a
    block is context only). `texts(part=...)` gives a split's texts (train, val, test)."""

    def __init__(self, tokenizer: Any, texts: Callable[[str], list[str]], seq_len: int = 64, batch_size: int = 32,
                 eval_batch_size: int = 256, seed: int = 0):
        super().__init__(batch_size, eval_batch_size, seed)
        if seq_len < 1:
            raise CogenError(f"data.seq_len={seq_len}: must be >= 1.")
        self.tokenizer, self.texts, self.seq_len = tokenizer, texts, seq_len

    def blocks(self, texts: list[str]) -> torch.Tensor:
        end = self.tokenizer.eos_token_id
        stream = [t for ids in self.tokenizer(texts)["input_ids"] for t in [end, *ids]]
        n = len(stream) // (self.seq_len + 1)
        if n == 0:
            raise CogenError(f"the corpus has {len(stream)} tokens, fewer than one block of data.seq_len+1="
                             f"{self.seq_len + 1}: give more text or a shorter seq_len.")
        return torch.tensor(stream[:n * (self.seq_len + 1)]).view(n, self.seq_len + 1)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = {part: TensorDataset(self.blocks(self.texts(part=part))) for part in ("train", "val", "test")}
