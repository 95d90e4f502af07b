"""KG embeddings trained with PyKEEN as a cogen task (`model=kge`, `model/kge=complex|transe`):
PyKEEN builds the model (any `pykeen.models` name), its loss and regulariser, and ranks the
held-out triples (`cogen.metrics.kge_ranks`); Lightning runs the loop, so the run gets cogen's
trainer, loggers, checkpoints and summary.json like every other task.

Training is 1-N (PyKEEN's LCWA loss): each training triple of a batch asks its two questions,
(head, relation, ?) and (?, relation, tail), scored against every entity with all training
answers as targets. The batches are `data=kg`'s triples, so the graph loads once, as for kg_lm.
At the end of training, and again after `test` (then with the tested checkpoint's weights), the
entity and relation tables go to `<save_dir>/<graph>_<model>_seed<seed>.pt` (`cogen.kg.embedding_store`).

Not a subclass of `pykeen.contrib.lightning.LitModule`: that one builds its own data set and
loaders (Lightning would ignore them beside cogen's data module) and validates by the loss only,
so this module calls PyKEEN's model, loss and evaluator directly instead.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pykeen.models import model_resolver

from cogen.config import CogenError
from cogen.kg.answers import TrainAnswers
from cogen.kg.embedding_store import KGEmbeddings, save_embeddings
from cogen.kg.graph import KnowledgeGraph, Triple
from cogen.kg.pykeen_ids import id_triples, triples_factory
from cogen.metrics.kge_ranks import FilteredRanks

logging.getLogger("pykeen").setLevel(logging.WARNING)   # it logs every embedding table it builds at INFO


def pykeen_model_class(name: str):
    try:
        return model_resolver.lookup(name)
    except (KeyError, ValueError):
        raise CogenError(f"model.kge.name={name!r} is not a PyKEEN model: use one of "
                         f"{', '.join(sorted(model_resolver.options))} (e.g. complex, transe).") from None


class KGEmbedding(pl.LightningModule):
    def __init__(self, graph: KnowledgeGraph, kge: Mapping, loss: str = "crossentropy", loss_kwargs: Mapping | None = None,
                 lr: float = 1e-2, label_smoothing: float = 0.0, seed: int = 0, save_dir: str | None = None):
        super().__init__()
        kge = dict(kge)
        if "name" not in kge:
            raise CogenError("model.kge has no name: pick a PyKEEN model with model/kge=complex|transe or model.kge.name=<model>.")
        self.save_hyperparameters(ignore=["graph"])
        self.graph, self.factory = graph, triples_factory(graph)
        self.kge = model_resolver.make(pykeen_model_class(kge["name"]), dict(kge.get("kwargs") or {}),
                                       triples_factory=self.factory, loss=loss, loss_kwargs=dict(loss_kwargs or {}),
                                       random_seed=seed)
        self.answers = TrainAnswers(self.factory.mapped_triples, self.factory.num_entities, self.factory.num_relations)
        known = id_triples(self.factory, graph.known)
        self.ranks = {"val": FilteredRanks(known), "test": FilteredRanks(known)}

    def ids(self, batch: Sequence[Triple]) -> torch.Tensor:
        return id_triples(self.factory, batch).to(self.device)

    def configure_optimizers(self):
        return torch.optim.Adam(self.kge.parameters(), lr=self.hparams.lr)

    def training_step(self, batch: Sequence[Triple], batch_idx: int) -> torch.Tensor:
        hrt = self.ids(batch)
        hr, rt = torch.unique(hrt[:, :2], dim=0), torch.unique(hrt[:, 1:], dim=0)
        scores = torch.cat([self.kge.score_t(hr), self.kge.score_h(rt)])
        labels = torch.cat([self.answers.tails(hr), self.answers.heads(rt)]).to(scores.device)
        loss = self.kge.loss.process_lcwa_scores(predictions=scores, labels=labels, num_entities=self.kge.num_entities,
                                                 label_smoothing=self.hparams.label_smoothing)
        loss = loss + self.kge.collect_regularization_term()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.kge.post_parameter_update()   # PyKEEN's constraints after each step, e.g. TransE's unit-norm entities

    def validation_step(self, batch: Sequence[Triple], batch_idx: int) -> None:
        self.ranks["val"].update(self.kge, self.ids(batch))

    def test_step(self, batch: Sequence[Triple], batch_idx: int) -> None:
        self.ranks["test"].update(self.kge, self.ids(batch))

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/{k}": v for k, v in self.ranks["val"].compute().items()}, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict({f"test/{k}": v for k, v in self.ranks["test"].compute().items()})

    def on_train_end(self) -> None:
        self.save("end of training")

    def on_test_end(self) -> None:
        self.save("tested checkpoint")

    def embeddings(self, weights: str) -> KGEmbeddings:
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        meta = {"model": self.kge.__class__.__name__, "graph": self.graph.name, "seed": self.hparams.seed,
                "weights": weights, "global_step": self.trainer.global_step, "metrics": metrics}
        with torch.no_grad():
            return KGEmbeddings(self.kge.entity_representations[0](), self.kge.relation_representations[0](),
                                dict(self.factory.entity_to_id), dict(self.factory.relation_to_id), meta)

    def save(self, weights: str) -> Path | None:
        if not self.hparams.save_dir or not self.trainer.is_global_zero:
            return None
        name = f"{self.graph.name}_{self.kge.__class__.__name__.lower()}_seed{self.hparams.seed}.pt"
        return save_embeddings(Path(self.hparams.save_dir) / name, self.embeddings(weights))
