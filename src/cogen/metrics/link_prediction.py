"""Filtered link-prediction ranks (Bordes et al. 2013): the gold tail's rank among every
candidate entity, after removing the other tails the graph knows for the same (head, relation),
so that a model is not punished for naming another true answer. Ties count half (PyKEEN's
"realistic" rank), so a constant scorer does not look perfect."""
from __future__ import annotations

import torch
from torchmetrics import Metric


def filtered_ranks(scores: torch.Tensor, gold: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """scores (B, E), gold (B,) candidate index, known (B, E) True for other true tails -> ranks (B,), 1 = best."""
    gold_score = scores.gather(1, gold[:, None])
    others = ~known
    others[torch.arange(len(gold)), gold] = False
    higher = ((scores > gold_score) & others).sum(1)
    tied = ((scores == gold_score) & others).sum(1)
    return 1.0 + higher.double() + 0.5 * tied.double()


class LinkPrediction(Metric):
    higher_is_better = True
    full_state_update = False

    def __init__(self, hits_at: tuple[int, ...] = (1, 3, 10), **kwargs):
        super().__init__(**kwargs)
        self.hits_at = tuple(hits_at)
        self.add_state("reciprocal", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hits", default=torch.zeros(len(self.hits_at), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, gold: torch.Tensor, known: torch.Tensor) -> None:
        ranks = filtered_ranks(scores.detach(), gold, known)
        self.reciprocal += (1.0 / ranks).sum()
        self.hits += torch.stack([(ranks <= k).sum() for k in self.hits_at]).double()
        self.total += len(ranks)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.total.clamp_min(1)
        out = {"mrr": (self.reciprocal / n).float()}
        out.update({f"hits@{k}": (h / n).float() for k, h in zip(self.hits_at, self.hits)})
        return out
