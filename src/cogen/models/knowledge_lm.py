"""The knowledge-fused language model (`model=kg_lm`): an LM that states facts, helped by a
knowledge graph the human partner trusts, through one of the fusion methods (`model/fusion=`):

- `none`: the LM alone, trained on the verbalised training facts; it memorises or guesses.
- `retrieval`: the top-k facts for the prompt, retrieved from the knowledge base, go before
  the prompt as text (retrieval-augmented generation). Training contexts come from the training
  facts only, so held-out entities stay out of training text; at val/test the knowledge base is
  `knowledge` (all known facts by default: what the partner supplies at use time).
- `constrained`: rules the partner supplies restrict the object at decoding time, through a
  logits processor in `generate` (and the same mask in the ranking).
- `embedding`: the graph's KG embeddings (a `model=kge` run's file, ComplEx by default) enter the
  LM's entity logits as the KGE's own score of (the latest entity, the relation the LM's state
  attends to, each candidate), behind a tanh gate that starts closed (`cogen.kg.fusion_adapter`);
  a submodule, so it is trained and checkpointed.

With `collab=knowledge_guided` the partner's own facts take the retriever's place at use time
(`fact_source`); a question the partner does not answer falls back to retrieval from the
training facts, all the model could find on its own.

Every sequence is `<bos> [facts ; ... <sep>] prompt object`, left-padded; the object is one
entity token (`cogen.kg.tokenizer`). Metrics: filtered Hits@k and MRR over all entities; for the
greedily generated object its exact match with the held-out one (accuracy), the share the graph
knows to be true (true_rate: another listed border counts), and the contradiction rate (another
object for a one-valued relation); and the perplexity of the statement tokens (fluency).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import Perplexity

from cogen.config import CogenError
from cogen.kg.constraints import AllowedObjects, allowed_token_ids
from cogen.kg.graph import KnowledgeGraph, Triple
from cogen.kg.tokenizer import EntityTokenizer
from cogen.kg.verbalise import Verbaliser
from cogen.metrics.link_prediction import LinkPrediction
from cogen.utils.padding import pad_rows

IGNORE = -100
KNOWLEDGE = ("known", "train")


class KnowledgeLM(pl.LightningModule):
    def __init__(self, graph: KnowledgeGraph, templates: Mapping[str, str] | None, policy: Callable[..., nn.Module],
                 fusion: Mapping[str, Callable | None] | None = None, knowledge: str = "known",
                 rules_knowledge: str = "train", lr: float = 3e-3, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        super().__init__()
        for key, value in (("knowledge", knowledge), ("rules_knowledge", rules_knowledge)):
            if value not in KNOWLEDGE:
                raise CogenError(f"model.{key}={value!r}: use one of {', '.join(KNOWLEDGE)}.")
        fusion = dict(fusion or {})
        unknown = set(fusion) - {"retriever", "rules", "embeddings"}
        if unknown:
            raise CogenError(f"model.fusion has unknown keys {sorted(unknown)}: it takes retriever, rules and embeddings "
                             f"(model/fusion=...).")
        retriever, rules, embeddings = fusion.get("retriever"), fusion.get("rules"), fusion.get("embeddings")
        self.save_hyperparameters(ignore=["graph", "policy", "fusion"])
        self.graph, self.verbaliser = graph, Verbaliser(templates)
        self.tokenizer = EntityTokenizer.for_graph(graph, templates)
        self.policy = policy(tokenizer=self.tokenizer)
        self.max_length = getattr(self.policy.config, "n_positions", None) or self.policy.config.max_position_embeddings
        self.embeddings = None
        if embeddings:
            self.embeddings = embeddings(graph=graph, tokenizer=self.tokenizer, width=self.policy.get_input_embeddings().embedding_dim)
            self.embeddings.attach(self.policy)
        self._make_retriever = retriever
        self._retrievers: dict[str, object] = {}
        self._contexts: dict[tuple[str, str, str], list[int]] = {}
        # Set by collab=knowledge_guided: (triples, stage) -> per triple the partner's facts, or None.
        self.fact_source: Callable[[Sequence[Triple], str], list[Sequence[Triple] | None]] | None = None
        self.rules = rules(facts=self._facts(rules_knowledge), relations=graph.relations) if rules else None
        self.entity_offset = int(self.tokenizer.entity_ids[0])
        self.num_entities = len(self.tokenizer.entity_ids)
        self.metrics = nn.ModuleDict({stage: nn.ModuleDict({
            "link": LinkPrediction(hits_at=(1, 3, 10)), "accuracy": MeanMetric(), "true_rate": MeanMetric(),
            "contradiction_rate": MeanMetric(),
            "perplexity": Perplexity(ignore_index=IGNORE)}) for stage in ("val", "test")})

    @property
    def fusion(self) -> str:
        parts = (("retrieval", self._make_retriever), ("embedding", self.embeddings), ("constrained", self.rules))
        return "+".join(name for name, on in parts if on is not None) or "none"

    def _facts(self, which: str) -> tuple[Triple, ...]:
        return self.graph.known if which == "known" else self.graph.train

    def configure_optimizers(self):
        params = [{"params": list(self.policy.parameters())}]
        if self.embeddings is not None:   # the adapter, at its own learning rate if it has one
            params.append({"params": list(self.embeddings.parameters()), "lr": self.embeddings.lr or self.hparams.lr})
        return torch.optim.AdamW(params, lr=self.hparams.lr, betas=tuple(self.hparams.betas),
                                 weight_decay=self.hparams.weight_decay)

    # --- turning triples into token ids ----------------------------------------------------------
    def contexts(self, triples: Sequence[Triple], stage: str) -> list[list[int]]:
        """Token ids of the facts before each prompt, `f1 ; f2 ; ... <sep>`: the partner's facts
        where it supplied some (collab=knowledge_guided), else the retrieved ones (cached per prompt)."""
        if self._make_retriever is None:
            return [[] for _ in triples]
        supplied = self.fact_source(triples, stage) if self.fact_source is not None else [None] * len(triples)
        kb = "train" if stage == "train" or self.fact_source is not None else self.hparams.knowledge
        if kb not in self._retrievers:
            self._retrievers[kb] = self._make_retriever(facts=self._facts(kb), verbaliser=self.verbaliser)
        retriever = self._retrievers[kb]
        keys = [(kb, t.head, t.relation) for t, facts in zip(triples, supplied) if facts is None]
        missing = sorted({k for k in keys if k not in self._contexts})
        if missing:
            found = retriever.retrieve([self.verbaliser.prompt(h, r) for _, h, r in missing])
            for key, indices in zip(missing, found):
                self._contexts[key] = self.encode_facts([retriever.facts[i] for i in indices])
        return [self._contexts[kb, t.head, t.relation] if facts is None else self.encode_facts(facts)
                for t, facts in zip(triples, supplied)]

    def encode_facts(self, facts: Sequence[Triple]) -> list[int]:
        ids: list[int] = []
        for fact in facts:
            ids += self.tokenizer.encode(self.verbaliser.statement(Triple(*fact))) + [self.tokenizer.fact_sep_token_id]
        return ids[:-1] + [self.tokenizer.sep_token_id] if ids else []

    def encode(self, triples: Sequence[Triple], stage: str, with_object: bool = True) -> dict[str, torch.Tensor]:
        """Left-padded ids, attention mask, position ids, and labels on the statement tokens only."""
        rows, labels = [], []
        for triple, context in zip(triples, self.contexts(triples, stage)):
            statement = self.tokenizer.encode(self.verbaliser.prompt(triple.head, triple.relation))
            if with_object:
                statement.append(self.tokenizer.entity_id(triple.tail))
            room = self.max_length - 1 - len(statement)
            if room < 0:
                raise CogenError(f"the statement {self.verbaliser.statement(triple)!r} needs {len(statement) + 1} "
                                 f"tokens, more than the model's {self.max_length}: raise model.policy.config.n_positions.")
            if len(context) > room:  # drop the lowest-ranked facts, whole, until the rest fits
                cut = max((i for i, t in enumerate(context[:room]) if t == self.tokenizer.fact_sep_token_id), default=-1)
                context = context[:cut] + [self.tokenizer.sep_token_id] if cut > 0 else []
            ids = [self.tokenizer.bos_token_id] + context + statement
            rows.append(ids)
            labels.append([IGNORE] * (1 + len(context)) + statement)
        ids, mask = pad_rows(rows, self.tokenizer.pad_token_id, device=self.device)
        target, _ = pad_rows(labels, IGNORE, device=self.device)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp_min(0), "labels": target}

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           position_ids=batch["position_ids"]).logits

    # --- training and evaluation ---------------------------------------------------------------
    def training_step(self, triples: list[Triple], batch_idx: int):
        batch = self.encode(triples, "train")
        logits = self.logits(batch)[:, :-1]
        loss = F.cross_entropy(logits.transpose(1, 2), batch["labels"][:, 1:], ignore_index=IGNORE)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(triples))
        return loss

    def allowed_ids(self, triples: Sequence[Triple]) -> list[list[int] | None] | None:
        """Per triple, the object tokens the partner's rules allow (None: no rule); None without rules."""
        if self.rules is None:
            return None
        return allowed_token_ids(self.rules, [t.head for t in triples], [t.relation for t in triples], self.tokenizer.index)

    @torch.no_grad()
    def generate_objects(self, triples: Sequence[Triple], stage: str = "test") -> list[str]:
        """The object the model writes after each prompt: greedy `generate`, through the rules'
        logits processor when the partner gave rules."""
        from transformers import LogitsProcessorList

        batch = self.encode(triples, stage, with_object=False)
        allowed = self.allowed_ids(triples)
        processors = LogitsProcessorList([AllowedObjects.for_prompts(batch["input_ids"], allowed)] if allowed else [])
        out = self.policy.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=1,
                                   do_sample=False, logits_processor=processors, pad_token_id=self.tokenizer.pad_token_id)
        return [self.tokenizer.tokens[int(i)] for i in out[:, -1]]

    def _evaluate(self, triples: list[Triple], stage: str) -> None:
        batch = self.encode(triples, stage)
        logits = self.logits(batch)
        metrics = self.metrics[stage]
        metrics["perplexity"].update(logits[:, :-1], batch["labels"][:, 1:])
        self.log(f"{stage}/loss", F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], ignore_index=IGNORE),
                 batch_size=len(triples), sync_dist=True)
        scores = logits[:, -2].float()   # the position that predicts the object
        allowed = self.allowed_ids(triples)
        for row, ids in enumerate(allowed or []):
            if ids is not None:   # the ranking obeys the same rules as generation
                keep = torch.zeros_like(scores[row], dtype=torch.bool)
                keep[ids] = True
                scores[row] = scores[row].masked_fill(~keep, float("-inf"))
        entity_scores = scores[:, self.entity_offset:self.entity_offset + self.num_entities]
        gold = torch.tensor([self.tokenizer.entity_id(t.tail) - self.entity_offset for t in triples], device=self.device)
        known = torch.zeros_like(entity_scores, dtype=torch.bool)
        for row, t in enumerate(triples):
            known[row, [self.tokenizer.entity_id(e) - self.entity_offset for e in self.graph.tails[t.head, t.relation]]] = True
        metrics["link"].update(entity_scores, gold, known)
        written = self.generate_objects(triples, stage)
        true = [w in self.graph.tails[t.head, t.relation] for w, t in zip(written, triples)]
        verdicts = {"accuracy": [w == t.tail for w, t in zip(written, triples)],   # the held-out object itself
                    "true_rate": true,                                           # any object the graph knows
                    "contradiction_rate": [t.relation in self.graph.functional and not ok for ok, t in zip(true, triples)]}
        for name, values in verdicts.items():
            metrics[name].update(torch.tensor(values, dtype=torch.float, device=self.device))

    def _log_epoch(self, stage: str) -> None:
        metrics = self.metrics[stage]
        values = {f"{stage}/{k}": v for k, v in metrics["link"].compute().items()}
        values.update({f"{stage}/{k}": metrics[k].compute() for k in ("accuracy", "true_rate", "contradiction_rate", "perplexity")})
        self.log_dict(values, sync_dist=False)
        for metric in metrics.values():
            metric.reset()

    def validation_step(self, triples: list[Triple], batch_idx: int) -> None:
        self._evaluate(triples, "val")

    def test_step(self, triples: list[Triple], batch_idx: int) -> None:
        self._evaluate(triples, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
