"""collab=knowledge_guided: the partner supplies the facts the model should state.

At use time (`stages`, test by default) the knowledge-fused LM (model=kg_lm with a retriever)
is asked about subjects it may never have seen. For each question's subject the mode asks its
partner once, `supply_facts(subject)`, and puts the partner's facts before the prompt instead
of the retrieved ones: those about the asked relation of the subject first, then the rest, at
most `max_facts`. A subject the partner gives no facts for (a spent budget, or "I don't know")
falls back to retrieval from the training facts: all the model could find on its own.

The simulated partner knows the whole graph (every split) unless it is given its own facts,
so sweeping its budget and noise measures what each answer about a subject is worth. Logged:
`<stage>/answers` (subjects the partner answered) and `<stage>/partner_share` (the share of
questions whose context came from the partner).
"""
from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl

from cogen.collab.partner import Partner, partner_state, restore_partner, simulated_parts
from cogen.config import CogenError
from cogen.kg.graph import Triple

STAGES = ("val", "test")


class KnowledgeGuided(pl.Callback):
    def __init__(self, partner: Partner, stages: Sequence[str] = ("test",), max_facts: int = 5):
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise CogenError(f"collab.stages has {sorted(unknown)}: the partner supplies facts at {' or '.join(STAGES)}.")
        if max_facts < 1:
            raise CogenError(f"collab.max_facts={max_facts}: at least 1 fact before the prompt.")
        self.partner, self.stages, self.max_facts = partner, tuple(stages), max_facts
        self.supplied: dict[str, list[Triple] | None] = {}   # subject -> the partner's facts (None: no answer)
        self.answers, self.asked = 0, {stage: [0, 0] for stage in STAGES}   # stage -> [questions, from the partner]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "fact_source") or "retrieval" not in pl_module.fusion:
            raise CogenError("collab=knowledge_guided needs a model that reads facts before its prompt: model=kg_lm "
                             "with model/fusion=retrieval or retrieval_constrained.")
        for simulated in simulated_parts(self.partner):
            if not simulated.facts:
                simulated.facts = list(pl_module.graph.known)   # a partner who knows the whole graph
        pl_module.fact_source = self.facts_for

    def facts_for(self, triples: Sequence[Triple], stage: str) -> list[list[Triple] | None]:
        """Per question, the partner's facts (None: the model retrieves its own)."""
        if stage not in self.stages:
            return [None] * len(triples)
        for subject in dict.fromkeys(t.head for t in triples):   # ask about each subject once, in order
            if subject not in self.supplied:
                answer = self.partner.supply_facts(subject)
                self.answers += answer is not None
                self.supplied[subject] = [Triple(*f) for f in answer] if answer else None
        out = [self._ranked(t) for t in triples]
        self.asked[stage][0] += len(out)
        self.asked[stage][1] += sum(f is not None for f in out)
        return out

    def _ranked(self, question: Triple) -> list[Triple] | None:
        facts = self.supplied[question.head]
        if not facts:
            return None
        about = lambda f: (f.head == question.head and f.relation == question.relation, f.head == question.head)
        return sorted(facts, key=about, reverse=True)[: self.max_facts]   # stable: the partner's order within

    def _log(self, pl_module: pl.LightningModule, stage: str) -> None:
        questions, from_partner = self.asked[stage]
        if stage in self.stages and questions:
            pl_module.log_dict({f"{stage}/answers": float(self.answers), f"{stage}/partner_share": from_partner / questions})
        self.asked[stage] = [0, 0]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "test")

    def state_dict(self) -> dict:
        return {"supplied": self.supplied, "answers": self.answers, "partner": partner_state(self.partner)}

    def load_state_dict(self, state: dict) -> None:
        self.supplied, self.answers = state["supplied"], state["answers"]
        restore_partner(self.partner, state.get("partner"))
