"""collab/partner=replay: answer every question from a stored feedback store, in order.

A run with a real person writes feedback.sqlite in its run dir. Re-running the same config and
seed with `collab/partner=replay collab.partner.store=<that file>` gives the mode the very same
answers, bit for bit, so the run (and its metrics) is reproduced and can be swept later. A run
that asks something else than the recorded one stops with the first difference.
"""
from __future__ import annotations

from typing import Any

from cogen.collab.partner import Partner
from cogen.collab.store import FeedbackStore
from cogen.config import CogenError


class ReplayPartner(Partner):
    """store: the feedback.sqlite to replay. session: which of its sessions (None: the first)."""

    kind = "replay"

    def __init__(self, store: str, session: str | None = None):
        if not store:
            raise CogenError("collab/partner=replay needs the store to replay: add collab.partner.store=<run dir>/feedback.sqlite.")
        source = FeedbackStore.open_existing(store)
        sessions = source.sessions()
        if not sessions:
            raise CogenError(f"the feedback store {store} holds no answers: there is nothing to replay.")
        if session is not None and session not in sessions:
            raise CogenError(f"collab.partner.session={session!r} is not in {store}; it holds {', '.join(sessions)}.")
        self.records = source.records(session or sessions[0])
        source.close()
        self.source, self.position = store, 0

    @property
    def id(self) -> str:
        original = self.records[0]
        return f"replay of {original.partner_kind}:{original.partner_id}"

    def _next(self, question: str, shown: dict) -> Any:
        if self.position >= len(self.records):
            raise CogenError(f"replay: the run asked a {question} question after all {len(self.records)} stored answers "
                             f"of {self.source} were used; replay needs the recorded run's config and seed.")
        record = self.records[self.position]
        self.position += 1
        differs = {k: (v, record.shown.get(k)) for k, v in shown.items() if record.shown.get(k) != v}
        if record.question != question or differs:
            raise CogenError(f"replay: question {self.position} is {question}{shown or ''} but the store recorded "
                             f"{record.question}{ {k: record.shown.get(k) for k in shown} or ''}; replay needs the "
                             f"recorded run's config and seed.")
        return record.answer

    def ask_condition(self, num_classes: int, n: int):
        return self._next("ask_condition", {"num_classes": num_classes, "n": n})

    def edit(self, items):
        return self._next("edit", {"n": len(items)})

    def rate(self, items):
        return self._next("rate", {"n": len(items)})

    def compare(self, first, second):
        return self._next("compare", {"pairs": len(first)})

    def supply_facts(self, query: str):
        return self._next("supply_facts", {"query": query})
