"""cogen's KnowledgeGraph in PyKEEN's terms. The ids cover every entity and relation of the graph,
all splits included, so held-out triples map to ids too; labels are sorted, so the same graph
gives the same ids in every run (a saved embedding table stays readable by its id maps)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from pykeen.triples import TriplesFactory

from cogen.kg.graph import KnowledgeGraph, Triple


def triples_factory(graph: KnowledgeGraph) -> TriplesFactory:
    """PyKEEN's factory of the graph's training triples, over the ids of the whole graph."""
    entity_to_id = {e: i for i, e in enumerate(graph.entities)}
    relation_to_id = {r: i for i, r in enumerate(graph.relations)}
    labelled = np.array([list(t) for t in graph.train], dtype=str)
    return TriplesFactory.from_labeled_triples(labelled, entity_to_id=entity_to_id, relation_to_id=relation_to_id)


def id_triples(factory: TriplesFactory, triples: Iterable[Triple]) -> torch.Tensor:
    """(N, 3) long tensor of (head, relation, tail) ids."""
    entity, relation = factory.entity_to_id, factory.relation_to_id
    rows = [(entity[h], relation[r], entity[t]) for h, r, t in triples]
    return torch.tensor(rows, dtype=torch.long).view(-1, 3)
