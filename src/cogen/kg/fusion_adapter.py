"""fusion=embedding: KG embeddings (a `model=kge` run's file) injected into the LM at its entity
tokens, ERNIE-style, behind tanh gates that start at 0 (Flamingo), so training begins from the LM
alone and opens a gate only as far as the KG vectors help.

Each side is a forward hook on the policy, so `generate`, the ranking and the perplexity all see
the fused model without any change to how they call it:
- `score` (the default, the one that helps): each entity token's logit gets the KGE's own score
  Re<h, r, conj t> (ComplEx; <h, r, t> for real embeddings), with h the latest entity in the text
  (the fact's head, where the object is predicted) and r the KGE's relation vectors mixed by an
  attention the LM's hidden state learns (plus a zero "no object here" relation). The LM learns
  only which relation it is stating; the KGE's trained geometry does the rest.
- `input`: the entity token's input embedding gets a projection of its KG vector added;
- `output`: each entity logit gets <hidden state, projection of the entity's KG vector>.
On Nations neither of the last two helped in 5 epochs (experiments/knowledge_fusion/README.md).
Non-entity tokens have zero KG rows and bias-free maps, so they are never changed.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cogen.config import CogenError
from cogen.kg.embedding_store import load_embeddings
from cogen.kg.graph import KnowledgeGraph
from cogen.kg.tokenizer import EntityTokenizer

SIDES = ("input", "output", "score")


def real_features(vectors: torch.Tensor) -> torch.Tensor:
    """Real features of an embedding table: ComplEx's real and imaginary parts side by side."""
    return torch.cat([vectors.real, vectors.imag], dim=-1) if vectors.is_complex() else vectors.float()


def embeddings_file(path: str, graph: KnowledgeGraph) -> Path:
    """The file for this graph: `{graph}` in `path` becomes the graph's name (countries-entity, nations, ...)."""
    return Path(str(path).replace("{graph}", graph.name)).expanduser()


def _train_command(graph: KnowledgeGraph, file: Path) -> str:
    seed = file.stem.rpartition("_seed")[2]
    data = {"countries-entity": "countries", "countries-fact": "countries_fact"}.get(graph.name, graph.name)
    return f"cogen-train model=kge data/graph={data}" + (f" seed={seed}" if seed.isdigit() else "")


class EntityEmbeddingFusion(nn.Module):
    def __init__(self, graph: KnowledgeGraph, tokenizer: EntityTokenizer, width: int, path: str,
                 sides: Sequence[str] = SIDES, lr: float | None = None, gate_init: float = 0.0):
        super().__init__()
        sides = tuple(sides)
        if not sides or set(sides) - set(SIDES):
            raise CogenError(f"model.fusion.embeddings.sides={list(sides)}: use a non-empty subset of {list(SIDES)}.")
        file = embeddings_file(path, graph)
        if not file.is_file():
            raise CogenError(f"{file}: no KG embeddings for graph {graph.name!r}; train them first: {_train_command(graph, file)}")
        kge = load_embeddings(file)
        missing = [e for e in graph.entities if e not in kge.entity_to_id]
        if missing:
            raise CogenError(f"{file} lacks {len(missing)} entities of graph {graph.name!r} (e.g. {missing[0]!r}): "
                             f"it was trained on another graph; retrain: {_train_command(graph, file)}")
        features = real_features(kge.entities)
        features = features / features.pow(2).mean().sqrt().clamp_min(1e-8)   # unit scale, whatever the KGE's norm
        table = torch.zeros(len(tokenizer), features.shape[1])
        rows = torch.tensor([kge.entity_to_id[e] for e in graph.entities])
        table[torch.tensor([tokenizer.entity_id(e) for e in graph.entities])] = features[rows]
        self.register_buffer("kge", table)   # frozen: per vocabulary token its entity's vector, zero for other tokens
        self.sides, self.source, self.lr = sides, str(file), lr   # lr: its own learning rate (None: the LM's)
        self.complex = kge.entities.is_complex()
        dim = features.shape[1]
        self.proj = nn.ModuleDict({side: nn.Linear(dim, width, bias=False) for side in sides if side != "score"})
        if "score" in sides:   # the KGE's own relation vectors, raw, so its scores are its trained logits
            raw = torch.zeros(len(tokenizer), dim)
            raw[torch.tensor([tokenizer.entity_id(e) for e in graph.entities])] = real_features(kge.entities)[rows]
            self.register_buffer("raw", raw)
            relations = real_features(kge.relations)   # and a zero one: "no fact's object is next here"
            self.register_buffer("relations", torch.cat([relations, relations.new_zeros(1, dim)]))
            self.query = nn.Linear(width, len(self.relations), bias=False)   # which relation the LM is stating
            nn.init.zeros_(self.query.weight)
        self.gate = nn.ParameterDict({side: nn.Parameter(torch.full((), float(gate_init))) for side in sides})
        self._heads: torch.Tensor | None = None

    def head_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """Per position, the KG vector of the latest entity token at or before it (zero if none):
        the head of the fact being stated, at the position that predicts its object."""
        is_entity = self.kge[ids].abs().sum(-1) > 0
        where = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        latest = torch.where(is_entity, where, torch.zeros_like(where)).cummax(dim=1).values
        found = torch.where(is_entity.cummax(dim=1).values, ids.gather(1, latest), torch.zeros_like(ids))
        return self.raw[found] * is_entity.cummax(dim=1).values.unsqueeze(-1)

    def relation_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """ComplEx's score Re<h, r, conj t> of every token t, with h the latest entity's KG vector and
        the relation r read from the LM's hidden state (DistMult's <h, r, t> for real embeddings)."""
        heads = self._heads[:, -hidden.shape[1]:].to(hidden.dtype)
        relation = self.query(hidden).softmax(-1) @ self.relations.to(hidden.dtype)
        if self.complex:
            (hr, hi), (rr, ri) = heads.chunk(2, -1), relation.chunk(2, -1)
            query = torch.cat([hr * rr - hi * ri, hr * ri + hi * rr], dim=-1)
        else:
            query = heads * relation
        return torch.tanh(self.gate["score"]) * (query @ self.raw.T.to(hidden.dtype))

    def extra(self, side: str, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The gated, projected KG vectors: of the tokens `ids`, or of the whole vocabulary."""
        vectors = self.kge if ids is None else self.kge[ids]
        return torch.tanh(self.gate[side]) * self.proj[side](vectors)

    def attach(self, policy: nn.Module) -> list:
        """Hooks the policy's input embeddings and output head; returns the handles."""
        handles = []
        if "input" in self.sides:
            handles.append(policy.get_input_embeddings().register_forward_hook(
                lambda module, args, out: out + self.extra("input", args[0]).to(out.dtype)))
        if "score" in self.sides:
            def remember_heads(module, args):
                self._heads = self.head_vectors(args[0])
            handles.append(policy.get_input_embeddings().register_forward_pre_hook(remember_heads))
            handles.append(policy.get_output_embeddings().register_forward_hook(
                lambda module, args, out: out + self.relation_scores(args[0]).to(out.dtype)))
        if "output" in self.sides:
            handles.append(policy.get_output_embeddings().register_forward_hook(
                lambda module, args, out: out + (args[0] @ self.extra("output").T.to(args[0].dtype)).to(out.dtype)))
        return handles
