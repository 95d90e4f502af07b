"""Triples as text, from one template per relation: "the capital of {head} is {tail}".
The tail always comes last, so the text before it is the prompt a model completes with the
object, and the same template yields both training statements and test questions."""
from __future__ import annotations

from collections.abc import Mapping

from cogen.config import CogenError
from cogen.kg.graph import Triple

DEFAULT_TEMPLATE = "{head} {relation} {tail}"


class Verbaliser:
    def __init__(self, templates: Mapping[str, str] | None = None, default: str = DEFAULT_TEMPLATE):
        self.templates = dict(templates or {})
        self.default = default
        for relation, template in {**self.templates, "<default>": default}.items():
            if "{head}" not in template or not template.rstrip().endswith("{tail}") or template.count("{tail}") != 1:
                raise CogenError(f"template for {relation!r} is {template!r}: it needs {{head}} and must end with "
                                 f"{{tail}}, e.g. 'the capital of {{head}} is {{tail}}'.")

    def prompt(self, head: str, relation: str) -> str:
        """The statement up to its object: what a model is asked to complete."""
        template = self.templates.get(relation, self.default)
        before = template.rstrip()[: -len("{tail}")].rstrip()
        return before.format(head=head, relation=relation.replace("_", " "))

    def statement(self, triple: Triple) -> str:
        return f"{self.prompt(triple.head, triple.relation)} {triple.tail}"

    def words(self) -> set[str]:
        """The words templates add around the entities (for a word-level vocabulary)."""
        text = " ".join(t.replace("{head}", " ").replace("{tail}", " ") for t in self.templates.values())
        return set(text.split())
