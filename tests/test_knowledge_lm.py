"""The knowledge-fused LM (model=kg_lm): its tokenizer, its filtered ranks, and what each fusion
method does to the facts it states about countries it never saw in training."""
from __future__ import annotations

import functools

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF, cli, summary
from cogen.config import CogenError
from cogen.kg.graph import KnowledgeGraph
from cogen.kg.tokenizer import EntityTokenizer
from cogen.metrics.link_prediction import LinkPrediction, filtered_ranks

RUN = ["logger=csv", "trainer.enable_progress_bar=false", "model=kg_lm", "data/graph=countries"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_every_entity_is_one_token_and_the_longest_name_wins():
    graph = KnowledgeGraph("t", [("Guinea", "capital", "Conakry"), ("Guinea-Bissau", "capital", "Bissau"),
                                 ("Equatorial Guinea", "capital", "Malabo")])
    tok = EntityTokenizer.for_graph(graph, {"capital": "the capital of {head} is {tail}"})
    ids = tok.encode("the capital of Equatorial Guinea is Malabo ; Guinea-Bissau <sep> Atlantis")
    assert tok.decode(ids) == "the capital of Equatorial Guinea is Malabo ; Guinea-Bissau <sep> <unk>"
    assert len(ids) == 10 and tok.entity_id("Equatorial Guinea") in ids and tok.entity_id("Guinea") not in ids
    assert set(tok.entity_ids.tolist()) == {tok.entity_id(e) for e in graph.entities}
    with pytest.raises(CogenError, match="'Atlantis' is not an entity"):
        tok.entity_id("Atlantis")


def test_filtered_ranks_skip_other_true_tails_and_split_ties():
    scores = torch.tensor([[0.9, 0.8, 0.5, 0.5, 0.1],
                           [0.2, 0.2, 0.2, 0.2, 0.2]])
    gold = torch.tensor([2, 0])
    known = torch.tensor([[True, False, False, False, False],   # entity 0 is another true tail: not counted
                          [False] * 5])
    # row 0: only entity 1 is above among the others, entity 3 ties -> 1 + 1 + 0.5; row 1: 4 ties -> 1 + 2
    assert filtered_ranks(scores, gold, known).tolist() == [2.5, 3.0]
    metric = LinkPrediction(hits_at=(1, 3))
    metric.update(scores, gold, known)
    out = metric.compute()
    assert out["mrr"].item() == pytest.approx((1 / 2.5 + 1 / 3) / 2)
    assert out["hits@1"].item() == 0.0 and out["hits@3"].item() == 1.0


def test_rules_from_the_whole_graph_make_every_generated_object_a_listed_one():
    """fusion=constrained with the partner's rules checked against every known fact: greedy
    `generate` through the logits processor can then only write a listed object, even from an
    untrained model, so every object is true, none contradicts the graph, and every one-valued
    fact (capital, region, ...) is stated exactly."""
    import pytorch_lightning as pl

    from cogen.data.kg import KGDataModule
    from cogen.kg.constraints import ObjectRules
    from cogen.kg.sources import countries_kg
    from cogen.models.knowledge_lm import KnowledgeLM
    from cogen.nets.lm import causal_lm

    templates = OmegaConf.to_container(OmegaConf.load(CONF / "data/graph/countries.yaml").templates)
    graph = countries_kg(split="entity", seed=0)
    policy = functools.partial(causal_lm, path=None, config={"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64})
    rules = functools.partial(ObjectRules, rules=[{"relation": "*", "object": "listed"}])
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    results = {}
    for name, fusion in (("none", {}), ("constrained", {"rules": rules})):
        pl.seed_everything(0, verbose=False)
        model = KnowledgeLM(graph, templates, policy, fusion=fusion, rules_knowledge="known")
        (results[name],) = trainer.test(model, KGDataModule(graph, templates), verbose=False)
    constrained, alone = results["constrained"], results["none"]
    assert constrained["test/true_rate"] == 1.0 and constrained["test/contradiction_rate"] == 0.0
    one_valued = sum(t.relation in graph.functional for t in graph.test) / len(graph.test)
    assert constrained["test/accuracy"] >= one_valued >= 0.4   # half the test facts are one-valued (seed 0)
    assert alone["test/accuracy"] < 0.05 and alone["test/true_rate"] < 0.05   # the same untrained model without rules
    assert results["constrained"]["test/hits@1"] > 0.4


@pytest.mark.slow
def test_retrieval_beats_the_lm_alone_on_countries_it_never_saw(tmp_path):
    """The issue's check, and Petroni et al. 2020's finding: with the relevant facts retrieved
    into its context (MiniLM), the LM states facts about held-out countries far better than it
    does alone. Measured (5 epochs, seed 0): exact match 0.118 alone vs 0.443 with retrieval,
    Hits@1 0.123 vs 0.476 (experiments/knowledge_fusion has all seeds)."""
    metrics = {}
    for fusion in ("none", "retrieval"):
        run = tmp_path / fusion
        cli("cogen.train", *RUN, f"model/fusion={fusion}", "data.graph.split=entity", "trainer.max_epochs=5",
            f"hydra.run.dir={run}")
        metrics[fusion] = summary(run)["metrics"]
        assert (run / "metrics.csv").is_file()
    alone, fused = metrics["none"], metrics["retrieval"]
    assert fused["test/accuracy"] >= alone["test/accuracy"] + 0.25, (alone, fused)
    assert fused["test/hits@1"] >= alone["test/hits@1"] + 0.2, (alone, fused)
    assert fused["test/contradiction_rate"] < alone["test/contradiction_rate"]
    assert fused["test/perplexity"] < alone["test/perplexity"]


def test_kg_lm_refuses_image_modes_and_bad_settings_in_one_line(tmp_path):
    proc = cli("cogen.train", *RUN, "collab=prompt_guided", f"hydra.run.dir={tmp_path / 'pg'}", check=False)
    assert proc.returncode != 0
    assert "collab=prompt_guided does not work with model family kg_lm" in proc.stderr + proc.stdout
    proc = cli("cogen.train", *RUN, "model.knowledge=everything", f"hydra.run.dir={tmp_path / 'kb'}", check=False)
    assert proc.returncode != 0 and "model.knowledge='everything': use one of known, train." in proc.stderr + proc.stdout
