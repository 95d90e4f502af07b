"""The knowledge graphs cogen can train on, one loader each; conf/data/graph/*.yaml names
them by `_target_`, so their arguments are plain values a user can override on the CLI."""
from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from cogen.config import CogenError
from cogen.kg.countries import DEFAULT_RELATIONS, EXTRA_RELATIONS, select
from cogen.kg.graph import KnowledgeGraph, Triple

PYKEEN_DATASETS = {"nations": "Nations", "kinships": "Kinships", "umls": "UMLS"}
COUNTRY_SPLITS = ("entity", "fact")
TSV_FORMAT = "one triple per line, head<TAB>relation<TAB>tail (blank lines and # comments are skipped)"


@lru_cache(maxsize=None)
def pykeen_kg(name: str) -> KnowledgeGraph:
    """One of PyKEEN's small benchmark graphs, with PyKEEN's own fixed splits (the files ship
    inside the wheel, so nothing is downloaded)."""
    if name not in PYKEEN_DATASETS:
        raise CogenError(f"pykeen_kg name {name!r} is not shipped offline: use one of {', '.join(PYKEEN_DATASETS)}.")
    import pykeen.datasets

    dataset = getattr(pykeen.datasets, PYKEEN_DATASETS[name])()
    return KnowledgeGraph(name, *(_labelled(f) for f in (dataset.training, dataset.validation, dataset.testing)))


def _labelled(factory) -> tuple[Triple, ...]:
    """Label triples from PyKEEN's id triples (its `.triples` does the same but logs a warning)."""
    entity, relation = factory.entity_id_to_label, factory.relation_id_to_label
    return tuple(Triple(entity[h], relation[r], entity[t]) for h, r, t in factory.mapped_triples.tolist())


def countries_kg(split: str = "entity", valid_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                 relations: list[str] | None = None) -> KnowledgeGraph:
    """Facts about ~250 countries (cogen.kg.countries). split="fact" holds out random facts;
    split="entity" holds out whole countries, which training text then never names."""
    if split not in COUNTRY_SPLITS:
        raise CogenError(f"countries_kg split {split!r}: use 'entity' (hold out whole countries) or 'fact' (hold out random facts).")
    _check_fractions(valid_fraction, test_fraction)
    triples = select(_check_relations(relations))
    held_out = _split_facts if split == "fact" else _split_countries
    return KnowledgeGraph(f"countries-{split}", *held_out(triples, valid_fraction, test_fraction, seed))


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise CogenError(f"valid_fraction={valid_fraction} and test_fraction={test_fraction}: each must be in [0, 1) "
                         f"and together below 1, e.g. 0.1 and 0.1.")


def _check_relations(relations: Iterable[str] | None) -> tuple[str, ...]:
    if relations is None:
        return DEFAULT_RELATIONS
    chosen = tuple(dict.fromkeys(relations))
    available = DEFAULT_RELATIONS + EXTRA_RELATIONS
    unknown = [r for r in chosen if r not in available]
    if unknown or not chosen:
        problem = f"unknown relation {unknown[0]!r}" if unknown else "no relations"
        raise CogenError(f"countries_kg: {problem}; choose from {', '.join(available)} (null = the default set).")
    return chosen


def _cut(items: Sequence, valid_fraction: float, test_fraction: float, seed: int) -> tuple[list, list, list]:
    """Seeded shuffle of sorted items, so the split depends on `seed` alone, not load order."""
    order = sorted(items)
    random.Random(seed).shuffle(order)
    n_test, n_valid = round(test_fraction * len(order)), round(valid_fraction * len(order))
    return order[n_test + n_valid:], order[n_test:n_test + n_valid], order[:n_test]


def _split_facts(triples, valid_fraction, test_fraction, seed):
    return tuple(sorted(part) for part in _cut(triples, valid_fraction, test_fraction, seed))


def _split_countries(triples, valid_fraction, test_fraction, seed):
    """Held-out countries' facts go to valid/test; training drops every triple that names a
    held-out country, as head or tail (e.g. "Spain borders France" when France is held out)."""
    _, valid_countries, test_countries = map(set, _cut({t.head for t in triples}, valid_fraction, test_fraction, seed))
    held_out = valid_countries | test_countries
    train = [t for t in triples if t.head not in held_out and t.tail not in held_out]
    return (sorted(train), sorted(t for t in triples if t.head in valid_countries),
            sorted(t for t in triples if t.head in test_countries))


def tsv_kg(train: str, valid: str | None = None, test: str | None = None, name: str | None = None) -> KnowledgeGraph:
    """A user's own graph from tab-separated files; valid/test are optional."""
    splits = [_read_tsv(path) if path else () for path in (train, valid, test)]
    return KnowledgeGraph(name or Path(train).stem, *splits)


def _read_tsv(path: str) -> tuple[Triple, ...]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CogenError(f"{path}: no such file. A knowledge graph file holds {TSV_FORMAT}.")
    triples = []
    try:
        with file.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                text = line.rstrip("\r\n")
                if text.strip() and not text.lstrip().startswith("#"):
                    triples.append(_parse(text, path, number))
    except UnicodeDecodeError:
        raise CogenError(f"{path}: not UTF-8 text. A knowledge graph file holds {TSV_FORMAT}.") from None
    if not triples:
        raise CogenError(f"{path}: no triples. Write {TSV_FORMAT}.")
    return tuple(triples)


def _parse(text: str, path: str, number: int) -> Triple:
    fields = [f.strip() for f in text.split("\t")]
    if len(fields) != 3 or not all(fields):
        got = f"got {len(fields)}" if len(fields) != 3 else "got an empty field"
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise CogenError(f"{path} line {number}: expected head<TAB>relation<TAB>tail (3 fields), {got}: {shown!r}")
    return Triple(*fields)
