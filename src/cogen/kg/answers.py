"""The training answers of link-prediction queries, as multi-hot rows over all entities: what
1-N training (PyKEEN's LCWA loss) scores a (head, relation, ?) or (?, relation, tail) query against.
Looked up by sorted keys, so the graph never needs a dense entity x relation x entity tensor."""
from __future__ import annotations

import torch


class TrainAnswers:
    def __init__(self, triples: torch.Tensor, num_entities: int, num_relations: int):
        """triples: (N, 3) training (head, relation, tail) ids."""
        self.num_entities, self.num_relations = num_entities, num_relations
        h, r, t = triples.long().unbind(1)
        self._tail_keys, self._tails = self._sorted(h * num_relations + r, t)
        self._head_keys, self._heads = self._sorted(t * num_relations + r, h)

    @staticmethod
    def _sorted(keys: torch.Tensor, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.argsort(keys)
        return keys[order], answers[order]

    def tails(self, hr: torch.Tensor) -> torch.Tensor:
        """hr: (Q, 2) distinct (head, relation) ids -> (Q, E) float, 1 for every training tail."""
        return self._rows(hr[:, 0] * self.num_relations + hr[:, 1], self._tail_keys, self._tails)

    def heads(self, rt: torch.Tensor) -> torch.Tensor:
        """rt: (Q, 2) distinct (relation, tail) ids -> (Q, E) float, 1 for every training head."""
        return self._rows(rt[:, 1] * self.num_relations + rt[:, 0], self._head_keys, self._heads)

    def _rows(self, queries: torch.Tensor, keys: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        queries = queries.to(keys.device)
        labels = torch.zeros(len(queries), self.num_entities, device=keys.device)
        if not len(queries):
            return labels
        order = torch.argsort(queries)
        at = torch.searchsorted(queries[order], keys).clamp(max=len(queries) - 1)
        hit = queries[order][at] == keys
        labels[order[at[hit]], answers[hit]] = 1.0
        return labels
