"""`data=kg`: the triples of one knowledge graph, by split (`data/graph=countries|nations|...`).

Batches are lists of `Triple`s, not tensors: verbalising, retrieving context and tokenising are
the knowledge-fused model's fusion method (`cogen.models.knowledge_lm`), not the data's."""
from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cogen.kg.graph import KnowledgeGraph, Triple
from cogen.kg.verbalise import Verbaliser


def as_triples(batch: list) -> list[Triple]:
    return [Triple(*t) for t in batch]


class KGDataModule(pl.LightningDataModule):
    def __init__(self, graph: KnowledgeGraph, templates: Mapping[str, str] | None = None, batch_size: int = 64,
                 eval_batch_size: int = 256, seed: int = 0):
        super().__init__()
        self.graph, self.batch_size, self.eval_batch_size, self.seed = graph, batch_size, eval_batch_size, seed
        self.verbaliser = Verbaliser(templates)   # checks the templates now, before any training

    def train_dataloader(self):
        return DataLoader(list(self.graph.train), batch_size=self.batch_size, shuffle=True, collate_fn=as_triples,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self):
        return DataLoader(list(self.graph.valid), batch_size=self.eval_batch_size, collate_fn=as_triples)

    def test_dataloader(self):
        return DataLoader(list(self.graph.test), batch_size=self.eval_batch_size, collate_fn=as_triples)
