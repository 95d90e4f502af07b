"""The knowledge-graph loaders (cogen.kg.sources) and their configs (conf/data/graph): the
facts they yield, splits that do not leak, PyKEEN's exact sizes, and one-line errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cogen.config import CogenError
from cogen.kg.countries import DEFAULT_RELATIONS, EXTRA_RELATIONS
from cogen.kg.graph import Triple
from cogen.kg.sources import countries_kg, pykeen_kg, tsv_kg
from cogen.kg.verbalise import Verbaliser

from conftest import CONF

GRAPHS = CONF / "data" / "graph"


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(CogenError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---- countries ----------------------------------------------------------------------------

def test_countries_known_facts():
    known = set(countries_kg(split="fact").known)
    for fact in [("France", "capital", "Paris"), ("Japan", "capital", "Tokyo"), ("Germany", "currency", "Euro"),
                 ("France", "borders", "Spain"), ("Spain", "borders", "France"), ("France", "language", "French"),
                 ("Brazil", "language", "Portuguese"), ("France", "region", "Europe"), ("Japan", "demonym", "Japanese"),
                 ("Greece", "language", "Modern Greek"), ("Vatican City State", "capital", "Vatican City"),
                 ("Croatia", "currency", "Euro"), ("Zambia", "currency", "Zambian Kwacha")]:  # replaced ISO codes
        assert Triple(*fact) in known, fact


def test_countries_size_and_names():
    kg = countries_kg(split="fact")
    countries = {t.head for t in kg.known}
    assert 240 <= len(countries) <= 260
    assert 2000 <= len(kg.known) <= 3000
    assert set(kg.relations) == set(DEFAULT_RELATIONS)
    # a border names the same entity as that country's own facts, and codes never leak through
    assert {t.tail for t in kg.known if t.relation == "borders"} <= countries
    assert not any(t.tail.isupper() and len(t.tail) == 3 for t in kg.known)
    # one record per country: countryinfo's duplicates (Burma/Myanmar, Wales under GBR) are gone
    assert "Myanmar" in countries and "Burma" not in countries and "Wales" not in countries
    assert {"capital", "region", "subregion", "demonym"} <= kg.functional


def test_countries_opt_in_relations():
    kg = countries_kg(split="fact", relations=["calling_code", "tld"])
    assert {Triple("France", "calling_code", "+33"), Triple("France", "tld", ".fr")} <= set(kg.known)
    assert set(kg.relations) == {"calling_code", "tld"}


def test_fact_split_partitions_the_triples():
    everything = set(countries_kg(split="fact", valid_fraction=0, test_fraction=0).train)
    kg = countries_kg(split="fact", valid_fraction=0.1, test_fraction=0.2, seed=0)
    train, valid, test = set(kg.train), set(kg.valid), set(kg.test)
    assert not (train & valid or train & test or valid & test)
    assert train | valid | test == everything
    assert (len(valid), len(test)) == (round(0.1 * len(everything)), round(0.2 * len(everything)))


def test_entity_split_never_names_a_held_out_country_in_training():
    everything = set(countries_kg(split="fact", valid_fraction=0, test_fraction=0).train)
    kg = countries_kg(split="entity", valid_fraction=0.1, test_fraction=0.1, seed=0)
    valid_countries, test_countries = {t.head for t in kg.valid}, {t.head for t in kg.test}
    held_out = valid_countries | test_countries
    assert not valid_countries & test_countries
    assert 40 <= len(held_out) <= 60
    assert not held_out & {e for t in kg.train for e in (t.head, t.tail)}
    # every fact about a held-out country is held out; training loses only facts naming one
    assert {t for t in everything if t.head in held_out} == set(kg.valid) | set(kg.test)
    assert set(kg.train) == {t for t in everything if not {t.head, t.tail} & held_out}


@pytest.mark.parametrize("split", ["fact", "entity"])
def test_splits_are_deterministic_in_seed(split):
    first, again, other = (countries_kg(split=split, seed=s) for s in (0, 0, 1))
    assert (first.train, first.valid, first.test) == (again.train, again.valid, again.test)
    assert first.test != other.test


@pytest.mark.parametrize("kwargs,needle", [
    ({"split": "country"}, "'entity'"),
    ({"relations": ["capitol"]}, "'capitol'"),
    ({"relations": []}, "no relations"),
    ({"valid_fraction": 0.5, "test_fraction": 0.5}, "together below 1"),
])
def test_countries_bad_arguments(kwargs, needle):
    assert needle in one_line_error(countries_kg, **kwargs)


# ---- PyKEEN ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,entities,relations,sizes", [
    ("nations", 14, 55, (1592, 199, 201)),
    ("kinships", 104, 25, (8544, 1068, 1074)),
    ("umls", 135, 46, (5216, 652, 661)),
])
def test_pykeen_sizes(name, entities, relations, sizes):
    kg = pykeen_kg(name)
    assert (len(kg.entities), len(kg.relations)) == (entities, relations)
    assert (len(kg.train), len(kg.valid), len(kg.test)) == sizes
    assert len(set(kg.known)) == sum(sizes)


def test_pykeen_labels_and_bad_name():
    assert Triple("brazil", "blockpositionindex", "china") in pykeen_kg("nations").train
    message = one_line_error(pykeen_kg, "fb15k")
    assert "'fb15k'" in message and "nations, kinships, umls" in message


# ---- TSV ------------------------------------------------------------------------------

def test_tsv_round_trip(tmp_path: Path):
    (tmp_path / "facts.tsv").write_text("# my graph\nFrance\tcapital\tParis\n\n  \nJapan\tcapital\tTokyo\r\n")
    (tmp_path / "held.tsv").write_text("Spain\tcapital\tMadrid\n")
    kg = tsv_kg(str(tmp_path / "facts.tsv"), test=str(tmp_path / "held.tsv"))
    assert kg.name == "facts"
    assert kg.train == (Triple("France", "capital", "Paris"), Triple("Japan", "capital", "Tokyo"))
    assert kg.valid == () and kg.test == (Triple("Spain", "capital", "Madrid"),)


@pytest.mark.parametrize("bad_line,got", [("France\tcapital", "got 2"), ("a\tb\tc\td", "got 4"), ("France\t\tParis", "empty field")])
def test_tsv_malformed_line_names_its_number(tmp_path: Path, bad_line, got):
    path = tmp_path / "kg.tsv"
    path.write_text("# header\nFrance\tcapital\tParis\n\nJapan\tcapital\tTokyo\n" + bad_line + "\n")
    message = one_line_error(tsv_kg, str(path))
    assert message.startswith(f"{path} line 5:") and got in message and repr(bad_line) in message


def test_tsv_long_malformed_line_is_shortened(tmp_path: Path):
    path = tmp_path / "kg.tsv"
    path.write_text("x" * 500 + "\n")
    message = one_line_error(tsv_kg, str(path))
    assert "line 1:" in message and len(message.replace(str(path), "")) < 150   # the path's length varies


def test_tsv_missing_and_empty_files(tmp_path: Path):
    missing = one_line_error(tsv_kg, str(tmp_path / "nowhere.tsv"))
    assert "nowhere.tsv" in missing and "head<TAB>relation<TAB>tail" in missing
    empty = tmp_path / "empty.tsv"
    empty.write_text("# only a comment\n\n")
    assert "empty.tsv: no triples" in one_line_error(tsv_kg, str(empty))


# ---- configs --------------------------------------------------------------------------

def load(option: str):
    return OmegaConf.merge({"seed": 0}, OmegaConf.load(GRAPHS / f"{option}.yaml"))


def test_countries_templates_cover_every_relation():
    templates = load("countries").templates
    verbaliser = Verbaliser(templates)  # raises if a template lacks {head} or does not end with {tail}
    assert set(templates) == set(DEFAULT_RELATIONS + EXTRA_RELATIONS)
    assert set(countries_kg().relations) <= set(templates)
    assert verbaliser.statement(Triple("France", "capital", "Paris")) == "the capital of France is Paris"


@pytest.mark.parametrize("option", ["countries", "nations", "kinships", "umls", "tsv"])
def test_graph_config_instantiates(option, tmp_path: Path):
    assert (GRAPHS / f"{option}.yaml").read_text().startswith("# @package data\n")  # Hydra reads it only first
    cfg = load(option)
    if option == "tsv":
        (tmp_path / "mine.tsv").write_text("France\tcapital\tParis\n")
        cfg.graph.train = str(tmp_path / "mine.tsv")
    kg = instantiate(cfg.graph)
    Verbaliser(cfg.templates)
    assert len(kg.train) > 0 and kg.name.startswith(option if option != "tsv" else "mine")


def test_graph_options_compose_into_data(tmp_path: Path):
    """Through Hydra, with a stand-in for conf/data/kg.yaml: `data/graph=X` fills data.graph
    and data.templates (the `# @package data` header), and data.graph.seed follows seed."""
    shutil.copytree(GRAPHS, tmp_path / "data" / "graph")
    (tmp_path / "data" / "kg.yaml").write_text("defaults:\n  - graph: countries\n  - _self_\n")
    (tmp_path / "run.yaml").write_text("defaults:\n  - data: kg\n  - _self_\nseed: 7\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        countries = compose(config_name="run")
        nations = compose(config_name="run", overrides=["data/graph=nations"])
    assert countries.data.graph.seed == 7 and countries.data.templates.capital == "the capital of {head} is {tail}"
    assert nations.data.graph == {"_target_": "cogen.kg.sources.pykeen_kg", "name": "nations"}
    assert nations.data.templates == {}
