"""Trained KG embeddings in a form other models can load without PyKEEN: one `.pt` file with the
entity and relation tables (row i = id i; complex for ComplEx), the label -> id maps, and what
made them (model, graph, metrics), for a later `fusion=embedding` to read with `load_embeddings`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cogen.config import CogenError


@dataclass
class KGEmbeddings:
    entities: torch.Tensor                 # (num_entities, dim), complex for ComplEx
    relations: torch.Tensor                # (num_relations, dim)
    entity_to_id: dict[str, int]
    relation_to_id: dict[str, int]
    meta: dict = field(default_factory=dict)

    def entity(self, label: str) -> torch.Tensor:
        if label not in self.entity_to_id:
            raise CogenError(f"{label!r} is not an entity of graph {self.meta.get('graph')!r}: check the spelling.")
        return self.entities[self.entity_to_id[label]]


def save_embeddings(path: str | Path, embeddings: KGEmbeddings) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save({"entities": embeddings.entities.detach().cpu(), "relations": embeddings.relations.detach().cpu(),
                "entity_to_id": dict(embeddings.entity_to_id), "relation_to_id": dict(embeddings.relation_to_id),
                "meta": dict(embeddings.meta)}, temporary)
    temporary.replace(path)   # a reader never sees half a file
    return path


def load_embeddings(path: str | Path) -> KGEmbeddings:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CogenError(f"{path}: no such embeddings file. Train one first: cogen-train model=kge data/graph=<graph>.")
    return KGEmbeddings(**torch.load(file, map_location="cpu", weights_only=True))
