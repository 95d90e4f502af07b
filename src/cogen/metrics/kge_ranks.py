"""Filtered link-prediction ranks by PyKEEN's own RankBasedEvaluator, fed batch by batch so that
Lightning's val/test loops drive it: each triple is ranked twice, against every entity in place
of its head and in place of its tail, after removing the other triples the graph knows (all
splits: Bordes et al.'s filtered setting). Ties count as PyKEEN's "realistic" rank (the mean of
the optimistic and pessimistic ranks), so a constant scorer does not look perfect.

Not a torchmetrics Metric: the evaluator keeps its ranks itself, and KGE runs use one device."""
from __future__ import annotations

import torch
from pykeen.constants import LABEL_HEAD, LABEL_TAIL
from pykeen.evaluation import RankBasedEvaluator
from pykeen.evaluation.evaluator import create_sparse_positive_filter_, filter_scores_
from pykeen.models import Model

METRICS = {"mrr": "inverse_harmonic_mean_rank", "hits@1": "hits_at_1", "hits@3": "hits_at_3", "hits@10": "hits_at_10"}
COLUMN = {LABEL_HEAD: 0, LABEL_TAIL: 2}


class FilteredRanks:
    def __init__(self, known: torch.Tensor):
        """known: (N, 3) ids of every triple the graph asserts, the filter."""
        self.known = known
        self.evaluator = RankBasedEvaluator(filtered=True)
        self.count = 0

    @torch.no_grad()
    def update(self, model: Model, hrt: torch.Tensor) -> None:
        rows = torch.arange(len(hrt), device=hrt.device)
        for target, column in COLUMN.items():
            scores = model.predict(hrt_batch=hrt, target=target)
            gold = scores[rows, hrt[:, column]].clone()
            others, _ = create_sparse_positive_filter_(hrt, self.known.to(hrt.device), filter_col=column)
            scores = filter_scores_(scores, others)
            scores[rows, hrt[:, column]] = gold
            self.evaluator.process_scores_(hrt, target, scores, true_scores=gold[:, None])
        self.count += len(hrt)

    def compute(self) -> dict[str, float]:
        """Both sides, realistic ranks; empties the evaluator for the next epoch."""
        if not self.count:
            return {}
        results = self.evaluator.finalize()
        self.count = 0
        return {name: float(results.get_metric(f"both.realistic.{key}")) for name, key in METRICS.items()}
