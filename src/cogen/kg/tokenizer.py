"""A word-level tokenizer in which every entity name is one token ("United Kingdom" included).

Why: the object of a verbalised fact is then exactly one next token, so a small LM trained from
scratch can be scored by ranking every entity (Hits@k, MRR) and by its greedy choice, and rules
can restrict that one step. Words outside the vocabulary map to <unk>; <bos> doubles as padding.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from cogen.config import CogenError
from cogen.kg.graph import KnowledgeGraph
from cogen.kg.verbalise import Verbaliser

BOS, SEP, FACT_SEP, UNK = "<bos>", "<sep>", ";", "<unk>"
SPECIALS = (BOS, SEP, FACT_SEP, UNK)


class EntityTokenizer:
    def __init__(self, entities: Iterable[str], words: Iterable[str]):
        entities = sorted(set(entities))
        if not entities:
            raise CogenError("the tokenizer needs at least one entity: the knowledge graph is empty.")
        bad = [e for e in entities if e in SPECIALS or not e.strip()]
        if bad:
            raise CogenError(f"entity names {bad[:3]} clash with the tokenizer's special tokens or are blank: rename them.")
        self.tokens = list(SPECIALS) + entities + sorted(set(words) - set(entities) - set(SPECIALS))
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.bos_token_id = self.pad_token_id = self.eos_token_id = self.index[BOS]
        self.sep_token_id, self.fact_sep_token_id, self.unk_token_id = self.index[SEP], self.index[FACT_SEP], self.index[UNK]
        self.entity_ids = torch.arange(len(SPECIALS), len(SPECIALS) + len(entities))
        # Longest names first, so "Equatorial Guinea" wins over "Guinea"; only whole words match.
        names = sorted(entities, key=len, reverse=True)
        self._entity_re = re.compile(r"(?<!\S)(" + "|".join(map(re.escape, names)) + r")(?!\S)")

    @classmethod
    def for_graph(cls, graph: KnowledgeGraph, templates: Mapping[str, str] | None = None) -> "EntityTokenizer":
        """Entities of the graph, plus every other word its verbalised statements use."""
        verbaliser = Verbaliser(templates)
        probe = cls(graph.entities, [])
        words = verbaliser.words()
        for triple in graph.known:
            pieces, word_positions = probe._split(verbaliser.statement(triple))
            words.update(pieces[i] for i in word_positions)
        return cls(graph.entities, words)

    def __len__(self) -> int:
        return len(self.tokens)

    def _split(self, text: str) -> tuple[list[str], list[int]]:
        """Pieces of `text` and, for the ones that are words (not entities), their positions."""
        pieces: list[str] = []
        word_positions: list[int] = []
        end = 0
        for m in self._entity_re.finditer(text):
            for w in text[end:m.start()].split():
                word_positions.append(len(pieces))
                pieces.append(w)
            pieces.append(m.group(1))
            end = m.end()
        for w in text[end:].split():
            word_positions.append(len(pieces))
            pieces.append(w)
        return pieces, word_positions

    def encode(self, text: str) -> list[int]:
        pieces, _ = self._split(text)
        return [self.index.get(p, self.unk_token_id) for p in pieces]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokens[int(i)] for i in ids)

    def entity_id(self, name: str) -> int:
        try:
            return self.index[name]
        except KeyError:
            raise CogenError(f"{name!r} is not an entity of this knowledge graph.") from None
