"""A synthetic Markov grammar: text whose true probability is known, so that a language model
pre-trained on it can be compared with the truth, and an RL toy built on it can be solved exactly.

The grammar is a first-order Markov chain over `vocab_size` words, its start distribution and
each row of its transition matrix drawn from a Dirichlet(`concentration`) with `grammar_seed`:
a small concentration gives a sparse, learnable grammar. Words are written as letters (a, b, ...)
and token `vocab_size` is BOS, which starts every sequence and is never a target.
"""
from __future__ import annotations

import string

import torch
from torch.utils.data import TensorDataset

from cogen.config import CogenError
from cogen.data.token_splits import TokenSplitsDataModule


class MarkovTokenizer:
    """Word-level tokenizer of the grammar's vocabulary: one letter (or `w<i>`) per token, plus BOS.
    Has the small interface the RL module and the prompt data need (encode, decode, BOS, no EOS)."""

    def __init__(self, vocab_size: int = 16):
        if not 2 <= vocab_size <= 1000:
            raise CogenError(f"data.tokenizer.vocab_size={vocab_size}: use 2..1000 words.")
        self.vocab_size = vocab_size
        self.words = list(string.ascii_lowercase[:vocab_size]) if vocab_size <= 26 else [f"w{i}" for i in range(vocab_size)]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.bos_token_id = self.pad_token_id = vocab_size
        self.eos_token_id = None          # responses have a fixed length
        self.never_sample = [vocab_size]  # BOS is not a word: policies never emit it

    def __len__(self) -> int:
        return self.vocab_size + 1

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[w] for w in text.split()]
        except KeyError as e:
            raise CogenError(f"prompt {text!r}: word {e.args[0]!r} is not in the grammar's vocabulary "
                             f"({' '.join(self.words[:5])} ... {self.words[-1]}); write words separated by spaces.") from None

    def decode(self, ids) -> str:
        return " ".join(self.words[i] if i < self.vocab_size else "<bos>" for i in (int(t) for t in ids))


class MarkovGrammar:
    """The chain itself: sampling and exact log-probabilities."""

    def __init__(self, vocab_size: int = 16, concentration: float = 0.3, grammar_seed: int = 0):
        if concentration <= 0:
            raise CogenError(f"data.concentration={concentration}: must be > 0 (e.g. 0.3).")
        g = torch.Generator().manual_seed(grammar_seed)
        dirichlet = lambda n: torch._standard_gamma(torch.full((n, vocab_size), float(concentration)), generator=g)  # noqa: E731
        rows = dirichlet(vocab_size + 1).double() + 1e-6   # + tiny floor: every sequence stays possible
        rows = rows / rows.sum(1, keepdim=True)
        self.start, self.transition = rows[-1], rows[:-1]
        self.vocab_size = vocab_size

    def sample(self, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """(n, length) words, without BOS."""
        out = torch.empty(n, length, dtype=torch.long)
        probs = self.start.expand(n, -1)
        for t in range(length):
            out[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            probs = self.transition[out[:, t]]
        return out

    def log_prob(self, words: torch.Tensor) -> torch.Tensor:
        """log p of each (n, length) word sequence under the grammar."""
        lp = self.start.log()[words[:, 0]]
        if words.shape[1] > 1:
            lp = lp + self.transition.log()[words[:, :-1], words[:, 1:]].sum(1)
        return lp


class MarkovDataModule(TokenSplitsDataModule):
    """Sequences `BOS w1 .. w_seq_len` for language-model pre-training. Val/test batches also carry
    the grammar's own log-probability of each sequence: the floor a perfect model reaches."""

    def __init__(self, tokenizer: MarkovTokenizer, seq_len: int = 8, num_samples: int = 20000, val_samples: int = 2000,
                 test_samples: int = 2000, batch_size: int = 64, eval_batch_size: int = 1000,
                 concentration: float = 0.3, grammar_seed: int = 0, seed: int = 0):
        super().__init__(batch_size, eval_batch_size, seed)
        if seq_len < 1 or num_samples < batch_size:
            raise CogenError(f"data.seq_len={seq_len}, data.num_samples={num_samples}: need seq_len >= 1 and "
                             f"num_samples >= data.batch_size={batch_size}.")
        self.tokenizer, self.seq_len = tokenizer, seq_len
        self.sizes = {"train": num_samples, "val": val_samples, "test": test_samples}
        self.grammar = MarkovGrammar(tokenizer.vocab_size, concentration, grammar_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for i, (name, n) in enumerate(self.sizes.items()):
            # val/test come from fixed streams, the training set from the run's seed.
            g = torch.Generator().manual_seed(self.seed if name == "train" else 10_000 + i)
            words = self.grammar.sample(n, self.seq_len, g)
            ids = torch.cat([torch.full((n, 1), self.tokenizer.bos_token_id), words], 1)
            self.splits[name] = TensorDataset(ids) if name == "train" else TensorDataset(ids, self.grammar.log_prob(words).float())
