"""fusion=constrained: the human's rules about what may follow "the capital of France is", checked
against a knowledge base they trust, and the logits processor that enforces them while generating.

The entity-level tokenizer makes every entity one token, so the object of a prompt is exactly the
first generated token: the rules restrict that one step and leave the rest of the text alone."""
from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import torch
from transformers import LogitsProcessor

from cogen.config import CogenError
from cogen.kg.graph import KnowledgeGraph, Triple

ANY_RELATION = "*"
RULE_KEYS = ("relation", "object")
# range: a type check (a capital must be some country's capital); listed: closed world, only what
# the KB lists for this head; not_contradicting: open world, except a functional relation whose
# tail the KB knows. For `borders`, listed forbids a true neighbour the KB misses; not_contradicting
# allows it, and only a second capital of France is ruled out.
OBJECT_KINDS = ("range", "listed", "not_contradicting")


class ObjectRules:
    """Which objects each relation allows. The KB (`facts`) is what the human trusts, often the
    training triples alone, so a rule never leaks the test answers it is not given."""

    def __init__(self, facts: Iterable[Triple], rules: Sequence[Mapping], relations: Iterable[str]):
        self.relations = frozenset(relations)
        tails: dict[tuple[str, str], set[str]] = defaultdict(set)
        ranges: dict[str, set[str]] = defaultdict(set)
        for head, relation, tail in facts:
            tails[head, relation].add(tail)
            ranges[relation].add(tail)
        self._tails = {key: frozenset(v) for key, v in tails.items()}
        self._range = {r: frozenset(v) for r, v in ranges.items()}
        many = {r for (_, r), ts in self._tails.items() if len(ts) > 1}
        self.functional = frozenset(set(self._range) - many)
        self.rules = tuple(self._checked(i, rule) for i, rule in enumerate(rules))
        self._kinds: dict[str, tuple[str, ...]] = {}
        for relation in sorted(self.relations):
            kinds = tuple(k for r, k in self.rules if r in (relation, ANY_RELATION))
            if kinds:
                self._kinds[relation] = kinds
        self._refuse_unsatisfiable()

    @classmethod
    def from_graph(cls, graph: KnowledgeGraph, rules: Sequence[Mapping],
                   kb_splits: Sequence[str] = ("train",)) -> "ObjectRules":
        """Rules checked against the chosen splits of `graph` (train only by default)."""
        facts = [t for split in kb_splits for t in graph.split(split)]
        return cls(facts, rules, graph.relations)

    def _checked(self, index: int, rule) -> tuple[str, str]:
        where = f"fusion rule {index} ({dict(rule) if isinstance(rule, Mapping) else rule!r})"
        if not isinstance(rule, Mapping):
            raise CogenError(f"{where} is not a mapping: write it as {{relation: capital, object: listed}}.")
        for key in RULE_KEYS:
            if key not in rule:
                raise CogenError(f"{where} has no {key!r}: a rule needs both keys, e.g. "
                                 f"{{relation: capital, object: listed}}.")
        extra = sorted(set(rule) - set(RULE_KEYS))
        if extra:
            raise CogenError(f"{where} has unknown key {extra[0]!r}: a rule has only the keys "
                             f"{', '.join(RULE_KEYS)}.")
        relation, kind = str(rule["relation"]), str(rule["object"])
        if relation != ANY_RELATION and relation not in self.relations:
            raise CogenError(f"{where} names relation {relation!r}, which the graph lacks"
                             f"{_did_you_mean(relation, self.relations)}; valid ones include "
                             f"{_few(self.relations)} (all of them: print(graph.relations)), or '*' for every relation.")
        if kind not in OBJECT_KINDS:
            raise CogenError(f"{where} has object kind {kind!r}: use one of {', '.join(OBJECT_KINDS)}.")
        return relation, kind

    def _refuse_unsatisfiable(self) -> None:
        # Every kind falls back to the relation's range, and a listed tail is in the range, so a
        # rule can never be satisfied exactly when the KB has no tail at all for its relation.
        for relation in self._kinds:
            if not self._range.get(relation):
                raise CogenError(f"the fusion rules cover relation {relation!r}, but the rules' knowledge base has "
                                 f"no {relation!r} triple, so no object could ever be allowed: give the KB such "
                                 f"triples or name the constrained relations one by one instead of '*'.")

    def allowed(self, head: str, relation: str) -> frozenset[str] | None:
        """The objects every rule on `relation` allows after `head`; None when no rule covers it."""
        if relation not in self.relations:
            raise CogenError(f"relation {relation!r} is not in the graph{_did_you_mean(relation, self.relations)}; "
                             f"valid ones include {_few(self.relations)}.")
        kinds = self._kinds.get(relation)
        if kinds is None:
            return None
        out = self._range[relation]
        for kind in kinds:
            out = out & self._objects(kind, head, relation)
        return out

    def _objects(self, kind: str, head: str, relation: str) -> frozenset[str]:
        listed = self._tails.get((head, relation))
        if kind == "listed" and listed:
            return listed
        if kind == "not_contradicting" and listed and relation in self.functional:
            return listed
        return self._range[relation]


class AllowedObjects(LogitsProcessor):
    """Forbids, at the first generated step only, every token outside a row's allowed ids.

    `prompt_length` is the padded prompt length that `generate` starts from (with left padding,
    the same position for every row; 1 for an encoder-decoder's decoder). A row of None is free.
    `generate` repeats each prompt for `num_return_sequences` or beams; those rows share its ids."""

    supports_continuous_batching = False  # it reads the step from input_ids' length

    def __init__(self, prompt_length: int, allowed_ids: Sequence[Sequence[int] | None]):
        if int(prompt_length) < 1:
            raise CogenError(f"prompt_length is {prompt_length}: pass input_ids.shape[1], the padded prompt length.")
        self.prompt_length = int(prompt_length)
        self.allowed_ids = [None if ids is None else sorted({int(i) for i in ids}) for ids in allowed_ids]
        if not self.allowed_ids:
            raise CogenError("AllowedObjects got no rows: pass one allowed-id list (or None) per prompt.")
        for row, ids in enumerate(self.allowed_ids):
            if ids is not None and not ids:
                raise CogenError(f"row {row} allows no token, so nothing could be generated: pass None to leave "
                                 f"the row free, or check the rules and the tokenizer's vocabulary.")
            if ids is not None and ids[0] < 0:
                raise CogenError(f"row {row} allows token id {ids[0]}: token ids are >= 0.")
        self._masks: dict[tuple[int, torch.device], torch.Tensor] = {}

    @classmethod
    def for_prompts(cls, input_ids: torch.Tensor, allowed_ids: Sequence[Sequence[int] | None]) -> "AllowedObjects":
        """Takes the step from the (left-padded) prompts themselves, so it cannot be passed wrong."""
        return cls(input_ids.shape[1], allowed_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        if length < self.prompt_length:
            raise CogenError(f"generation reached length {length} before prompt_length={self.prompt_length}: pass "
                             f"input_ids.shape[1] of the left-padded prompts (1 for an encoder-decoder).")
        if length != self.prompt_length:
            return scores
        forbidden = self._forbidden(scores.shape[1], scores.device)
        rows, prompts = scores.shape[0], forbidden.shape[0]
        if rows % prompts:
            raise CogenError(f"generate has {rows} rows but AllowedObjects has {prompts}: pass one allowed-id list "
                             f"per prompt (copies for num_return_sequences or beams are handled).")
        return scores.masked_fill(forbidden.repeat_interleave(rows // prompts, dim=0), float("-inf"))

    def _forbidden(self, vocab_size: int, device: torch.device) -> torch.Tensor:
        key = (vocab_size, device)
        if key not in self._masks:
            forbidden = torch.zeros(len(self.allowed_ids), vocab_size, dtype=torch.bool)
            for row, ids in enumerate(self.allowed_ids):
                if ids is None:
                    continue
                if ids[-1] >= vocab_size:
                    raise CogenError(f"row {row} allows token id {ids[-1]}, but the model scores only {vocab_size} "
                                     f"tokens: build the allowed ids with the model's own tokenizer.")
                forbidden[row] = True
                forbidden[row, ids] = False
            self._masks[key] = forbidden.to(device)
        return self._masks[key]


def allowed_token_ids(rules: ObjectRules, heads: Sequence[str], relations: Sequence[str],
                      token_id_of: Mapping[str, int]) -> list[list[int] | None]:
    """One allowed-id list per prompt (None where no rule applies), for `AllowedObjects`.
    Entities the tokenizer lacks are dropped: the model could not produce them anyway."""
    if len(heads) != len(relations):
        raise CogenError(f"got {len(heads)} heads but {len(relations)} relations: pass one of each per prompt.")
    out: list[list[int] | None] = []
    for head, relation in zip(heads, relations):
        names = rules.allowed(head, relation)
        if names is None:
            out.append(None)
            continue
        ids = sorted({token_id_of[n] for n in names if n in token_id_of})
        if not ids:
            raise CogenError(f"the rules allow {len(names)} objects for ({head!r}, {relation!r}), e.g. "
                             f"{sorted(names)[0]!r}, but none is in the tokenizer's vocabulary: build the "
                             f"vocabulary from the same graph as the rules.")
        out.append(ids)
    return out


def _few(names: Iterable[str], n: int = 5) -> str:
    names = sorted(names)
    if not names:
        return "(none)"
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
