"""One container for every knowledge graph cogen reads: (head, relation, tail) triples as the
names that appear in text, split into train / valid / test. Loaders live in `cogen.kg.sources`."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from cogen.config import CogenError

SPLITS = ("train", "valid", "test")


class Triple(NamedTuple):
    head: str
    relation: str
    tail: str


@dataclass(frozen=True)
class KnowledgeGraph:
    """Triples by split. `known` (every split) is what the graph asserts, e.g. for filtered
    ranking and contradiction checks; `train` is all a model may learn from."""

    name: str
    train: tuple[Triple, ...]
    valid: tuple[Triple, ...] = ()
    test: tuple[Triple, ...] = ()

    def __post_init__(self) -> None:
        if not self.train:
            raise CogenError(f"knowledge graph {self.name!r} has no training triples: check its source "
                             f"(a TSV needs lines `head<TAB>relation<TAB>tail`).")
        for split in SPLITS:
            object.__setattr__(self, split, tuple(Triple(*t) for t in getattr(self, split)))

    def split(self, name: str) -> tuple[Triple, ...]:
        if name not in SPLITS:
            raise CogenError(f"split {name!r}: use one of {', '.join(SPLITS)}.")
        return getattr(self, name)

    @cached_property
    def known(self) -> tuple[Triple, ...]:
        return self.train + self.valid + self.test

    @cached_property
    def entities(self) -> tuple[str, ...]:
        return tuple(sorted({e for t in self.known for e in (t.head, t.tail)}))

    @cached_property
    def relations(self) -> tuple[str, ...]:
        return tuple(sorted({t.relation for t in self.known}))

    @cached_property
    def tails(self) -> dict[tuple[str, str], frozenset[str]]:
        """(head, relation) -> every tail the graph asserts, over all splits."""
        out: dict[tuple[str, str], set[str]] = defaultdict(set)
        for h, r, t in self.known:
            out[h, r].add(t)
        return {k: frozenset(v) for k, v in out.items()}

    @cached_property
    def functional(self) -> frozenset[str]:
        """Relations with at most one tail per head: another tail for a known head contradicts."""
        many = {r for (_, r), ts in self.tails.items() if len(ts) > 1}
        return frozenset(set(self.relations) - many)

    def summary(self) -> str:
        return (f"{self.name}: {len(self.entities)} entities, {len(self.relations)} relations, "
                f"{len(self.train)} / {len(self.valid)} / {len(self.test)} triples")
