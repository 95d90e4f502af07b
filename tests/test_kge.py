"""KG embeddings trained with PyKEEN (model=kge): the 1-N training targets, PyKEEN's filtered
ranks checked against cogen's own rank metric, the saved embeddings, a short ComplEx run on
Nations through the real CLI, and the one-line errors of a wrong model or graph name."""
from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from conftest import cli, compose_train, summary
from cogen.collab.compat import check_pair
from cogen.config import CogenError
from cogen.kg.answers import TrainAnswers
from cogen.kg.embedding_store import KGEmbeddings, load_embeddings, save_embeddings
from cogen.kg.graph import KnowledgeGraph
from cogen.kg.pykeen_ids import id_triples, triples_factory
from cogen.kg.sources import pykeen_kg
from cogen.metrics.kge_ranks import FilteredRanks
from cogen.metrics.link_prediction import LinkPrediction

RUN = ["model=kge", "data/graph=nations", "logger=csv", "trainer.enable_progress_bar=false"]
FOUR = ("test/mrr", "test/hits@1", "test/hits@3", "test/hits@10")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def chance_mrr(graph: KnowledgeGraph) -> float:
    """The MRR of a random ordering under the filtered protocol: with n candidates left after
    filtering (the gold one among them) the expected reciprocal rank is H_n / n."""
    tails, heads = defaultdict(set), defaultdict(set)
    for h, r, t in graph.known:
        tails[h, r].add(t)
        heads[r, t].add(h)
    expected = []
    for h, r, t in graph.test:
        for others in (tails[h, r] - {t}, heads[r, t] - {h}):
            n = len(graph.entities) - len(others)
            expected.append(sum(1 / k for k in range(1, n + 1)) / n)
    return sum(expected) / len(expected)


def test_answers_are_every_training_answer_of_each_query():
    triples = torch.tensor([[0, 0, 1], [0, 0, 2], [3, 0, 1], [0, 1, 3]])
    answers = TrainAnswers(triples, num_entities=4, num_relations=2)
    tails = answers.tails(torch.tensor([[0, 0], [0, 1], [2, 0]]))          # (0, r0, ?) (0, r1, ?) (2, r0, ?)
    assert tails.tolist() == [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    heads = answers.heads(torch.tensor([[0, 1], [1, 3]]))                   # (?, r0, 1) (?, r1, 3)
    assert heads.tolist() == [[1, 0, 0, 1], [1, 0, 0, 0]]


def test_pykeen_filtered_ranks_match_cogens_rank_metric_on_both_sides():
    """Two implementations of the same protocol: PyKEEN's evaluator (what model=kge logs) and
    cogen's LinkPrediction metric over the tail and head questions, on an untrained ComplEx.
    Also checks the ids: a graph's factory covers every entity, held-out ones included."""
    from pykeen.models import ComplEx

    graph = pykeen_kg("nations")
    factory = triples_factory(graph)
    model = ComplEx(triples_factory=factory, embedding_dim=8, random_seed=0).eval()
    hrt, known = id_triples(factory, graph.test), id_triples(factory, graph.known)
    ranks = FilteredRanks(known)
    ranks.update(model, hrt)
    ours = ranks.compute()
    reference = LinkPrediction(hits_at=(1, 3, 10))
    with torch.no_grad():
        for column, score in ((2, model.score_t), (0, model.score_h)):
            asked = hrt[:, [0, 1]] if column == 2 else hrt[:, [1, 2]]
            other = [c for c in (0, 1, 2) if c != column]
            same = (known[None, :, other] == hrt[:, None, other]).all(-1)           # (test, known) same question
            mask = torch.zeros(len(hrt), len(graph.entities), dtype=torch.bool)
            rows, cols = same.nonzero(as_tuple=True)
            mask[rows, known[cols, column]] = True
            reference.update(score(asked), hrt[:, column], mask)
    expected = {k: v.item() for k, v in reference.compute().items()}
    assert ours == pytest.approx(expected, abs=1e-5)
    assert factory.num_entities == len(graph.entities) == 14 and factory.num_triples == len(graph.train) == 1592


def test_embeddings_round_trip_and_a_missing_file_says_how_to_make_one(tmp_path):
    table = KGEmbeddings(torch.randn(3, 4, dtype=torch.cfloat), torch.randn(2, 4, dtype=torch.cfloat),
                         {"a": 0, "b": 1, "c": 2}, {"r": 0, "s": 1}, {"graph": "toy", "model": "ComplEx"})
    back = load_embeddings(save_embeddings(tmp_path / "kge" / "toy.pt", table))
    assert torch.equal(back.entities, table.entities) and torch.equal(back.entity("c"), table.entities[2])
    assert back.relation_to_id == {"r": 0, "s": 1} and back.meta["graph"] == "toy"
    with pytest.raises(CogenError, match="'d' is not an entity of graph 'toy'"):
        back.entity("d")
    with pytest.raises(CogenError, match="no such embeddings file. Train one first: cogen-train model=kge"):
        load_embeddings(tmp_path / "nothing.pt")


def test_paper_file_holds_table_1_with_its_source():
    from omegaconf import OmegaConf

    from cogen.table import compose_experiment
    from cogen.utils.aggregate import TableSpec, read_paper
    from conftest import ROOT

    cfg = compose_experiment("kg_embeddings", "short", [])
    spec = TableSpec.from_dict(OmegaConf.to_container(cfg.table, resolve=True))
    paper, source = read_paper(ROOT / "experiments/kg_embeddings/paper.csv", spec)
    assert "NeurIPS 2017" in source and "Table 1" in source
    assert len(paper) == 9 and all(len(v) == 4 for v in paper.values())        # 3 graphs x 3 models, 4 metrics
    assert paper["kinships", "complex"]["MRR"] == (0.81, None) and paper["umls", "complex"]["HITS@10"] == (1.0, None)
    assert paper["nations", "ntp_lambda"]["HITS@3"] == (0.89, None)
    assert [cfg.protocols.short.epochs[g] for g in ("nations", "umls", "kinships")] == [100, 30, 40]


def test_collaboration_modes_refuse_kg_embeddings_at_compose_time():
    cfg = compose_train("model=kge", "collab=prompt_guided")
    with pytest.raises(CogenError, match="collab=prompt_guided does not work with model family kge"):
        check_pair(cfg.model, cfg.collab)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One multirun (one process start, the slow part) of a good run and the wrong names: a model
    PyKEEN does not have, and a graph not shipped offline; a failed job leaves the sweep going."""
    root = tmp_path_factory.mktemp("kge")
    proc = cli("cogen.train", "-m", *RUN, "data.graph.name=nations,atlantis", "model.kge.name=complex,complx",
               "trainer.max_epochs=30", "data.batch_size=128", "trainer.check_val_every_n_epoch=10", "seed=0",
               f"paths.artifacts_dir={root / 'artifacts'}", f"hydra.sweep.dir={root / 'sweep'}")
    runs = {}
    for path in (root / "sweep").glob("*/summary.json"):
        job = summary(path.parent)
        chosen = dict(o.split("=", 1) for o in job["overrides"])
        runs[chosen["data.graph.name"], chosen["model.kge.name"]] = job
    return proc, runs, root / "artifacts"


@pytest.mark.slow
def test_complex_on_nations_beats_chance_and_saves_its_embeddings(sweep):
    _, runs, artifacts = sweep
    metrics = runs["nations", "complex"]["metrics"]
    assert set(FOUR) <= set(metrics)
    chance = chance_mrr(pykeen_kg("nations"))
    assert chance == pytest.approx(0.384, abs=1e-3)          # Nations is dense: few candidates survive filtering
    # Measured on 1 CPU thread: MRR 0.63, HITS@1 0.46, HITS@3 0.74, HITS@10 0.97 after 30 epochs (the paper's
    # ComplEx, 100 epochs: 0.75 / 0.62 / 0.84 / 0.99); a random ordering gets HITS@1 0.17.
    assert metrics["test/mrr"] > chance + 0.15 and metrics["test/hits@1"] > 0.35
    assert metrics["test/hits@1"] <= metrics["test/hits@3"] <= metrics["test/hits@10"] <= 1
    saved = load_embeddings(artifacts / "kge" / "nations_complex_seed0.pt")
    assert saved.entities.shape == (14, 100) and saved.entities.is_complex() and saved.relations.shape == (55, 100)
    assert len(saved.entity_to_id) == 14 and len(saved.relation_to_id) == 55 and saved.entity_to_id["usa"] < 14
    assert saved.meta["weights"] == "tested checkpoint"
    assert saved.meta["metrics"]["test/mrr"] == pytest.approx(metrics["test/mrr"])


@pytest.mark.slow
def test_a_wrong_model_or_graph_name_is_one_line(sweep):
    proc, runs, _ = sweep
    model_error = "model.kge.name='complx' is not a PyKEEN model: use one of "
    graph_error = "pykeen_kg name 'atlantis' is not shipped offline: use one of nations, kinships, umls."
    assert runs["nations", "complx"]["status"] == "failed" and runs["nations", "complx"]["error"].startswith(model_error)
    assert runs["atlantis", "complex"]["status"] == "failed" and runs["atlantis", "complex"]["error"] == graph_error
    assert all("\n" not in job.get("error", "") for job in runs.values())
    assert f"cogen error: {graph_error}" in proc.stderr and model_error in proc.stderr
    assert "Traceback" not in proc.stderr
