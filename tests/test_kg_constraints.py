"""fusion=constrained: the rules give the expected objects on a hand-made KG, mistakes in them are
one-line errors, and a real GPT-2 generating through `AllowedObjects` never emits a forbidden
object while the steps after it stay exactly as the model would have chosen."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList

from cogen.config import CogenError
from cogen.kg.constraints import AllowedObjects, ObjectRules, allowed_token_ids
from cogen.kg.graph import KnowledgeGraph, Triple

FACTS = [
    Triple("France", "capital", "Paris"),
    Triple("Italy", "capital", "Rome"),
    Triple("France", "borders", "Spain"),
    Triple("France", "borders", "Italy"),
    Triple("Spain", "borders", "France"),
    Triple("Paris", "located_in", "France"),
    Triple("Lyon", "located_in", "France"),
]
RELATIONS = ["capital", "borders", "located_in", "currency"]
BOS, EOS, PAD = 0, 1, 2


def rules(*pairs: tuple[str, str], relations=RELATIONS) -> ObjectRules:
    return ObjectRules(FACTS, [{"relation": r, "object": k} for r, k in pairs], relations)


# --- the rules ---------------------------------------------------------------------------------

def test_range_is_every_tail_of_the_relation():
    assert rules(("capital", "range")).allowed("Germany", "capital") == {"Paris", "Rome"}


def test_listed_gives_the_heads_tails_and_falls_back_to_range_for_an_unknown_head():
    r = rules(("capital", "listed"), ("borders", "listed"))
    assert r.allowed("France", "capital") == {"Paris"}
    assert r.allowed("France", "borders") == {"Spain", "Italy"}
    assert r.allowed("Germany", "capital") == {"Paris", "Rome"}
    assert r.allowed("France", "located_in") is None


def test_not_contradicting_pins_only_functional_relations():
    r = rules(("capital", "not_contradicting"), ("borders", "not_contradicting"))
    assert r.functional >= {"capital", "located_in"} and "borders" not in r.functional
    assert r.allowed("France", "capital") == {"Paris"}
    # borders has many tails per head: another neighbour contradicts nothing, so the range stays.
    assert r.allowed("France", "borders") == {"Spain", "Italy", "France"}


def test_several_rules_on_one_relation_intersect_and_star_covers_every_relation():
    r = rules(("*", "range"), ("capital", "listed"), relations=["capital", "borders", "located_in"])
    assert r.allowed("France", "capital") == {"Paris"}
    assert r.allowed("Germany", "located_in") == {"France"}
    assert r.allowed("Spain", "borders") == {"Spain", "Italy", "France"}


def test_from_graph_uses_only_the_training_split_by_default():
    graph = KnowledgeGraph("toy", train=FACTS, test=[Triple("Spain", "capital", "Madrid")])
    r = ObjectRules.from_graph(graph, [{"relation": "capital", "object": "listed"}])
    assert r.allowed("Spain", "capital") == {"Paris", "Rome"}
    r = ObjectRules.from_graph(graph, [{"relation": "capital", "object": "listed"}], kb_splits=("train", "test"))
    assert r.allowed("Spain", "capital") == {"Madrid"}


def test_token_ids_skip_names_outside_the_vocabulary():
    r = rules(("capital", "range"))
    vocab = {"Paris": 7, "France": 3}
    assert allowed_token_ids(r, ["Italy", "Italy"], ["capital", "borders"], vocab) == [[7], None]
    with pytest.raises(CogenError, match="vocabulary"):
        allowed_token_ids(r, ["Italy"], ["capital"], {"France": 3})


# --- one-line errors ---------------------------------------------------------------------------

def one_line_error(build, *needles: str) -> str:
    with pytest.raises(CogenError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("rule, needles", [
    ({"relation": "captial", "object": "listed"}, ["'captial'", "did you mean 'capital'", "graph.relations"]),
    ({"relation": "capital", "object": "closed_world"}, ["'closed_world'", "range, listed, not_contradicting"]),
    ({"relation": "capital"}, ["no 'object'"]),
    ({"object": "range"}, ["no 'relation'"]),
    ({"relation": "capital", "object": "range", "objet": 1}, ["'objet'"]),
    ({"relation": "currency", "object": "range"}, ["'currency'", "could ever be allowed"]),
    ({"relation": "*", "object": "listed"}, ["'currency'", "one by one"]),
])
def test_a_bad_rule_is_a_one_line_error(rule, needles):
    one_line_error(lambda: ObjectRules(FACTS, [rule], RELATIONS), *needles)


def test_an_empty_allowed_row_or_a_batch_mismatch_is_a_one_line_error():
    one_line_error(lambda: AllowedObjects(3, [[4], []]), "row 1 allows no token")
    processor = AllowedObjects(3, [[4], None, [5]])
    one_line_error(lambda: processor(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 10)), "4 rows", "has 3")
    one_line_error(lambda: processor(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 5)), "token id 5", "5 tokens")
    one_line_error(lambda: processor(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 10)), "prompt_length=3")


# --- the processor on random scores ------------------------------------------------------------

@st.composite
def allowed_rows(draw, vocab_size: int, rows: int, max_size: int | None = None):
    """Per row None (free) or a nonempty set; small sets make a leak likelier to show."""
    row = st.one_of(st.none(), st.sets(st.integers(0, vocab_size - 1), min_size=1, max_size=max_size).map(sorted))
    return draw(st.lists(row, min_size=rows, max_size=rows))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data())
def test_processor_masks_only_the_first_step_and_only_constrained_rows(data):
    vocab, prompts = data.draw(st.integers(2, 30)), data.draw(st.integers(1, 4))
    copies, prompt_length = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6))
    allowed = data.draw(allowed_rows(vocab, prompts))
    processor = AllowedObjects(prompt_length, allowed)
    scores = torch.randn(prompts * copies, vocab, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))))
    later = data.draw(st.integers(prompt_length + 1, prompt_length + 4))
    assert torch.equal(processor(torch.zeros(len(scores), later, dtype=torch.long), scores.clone()), scores)
    out = processor(torch.zeros(len(scores), prompt_length, dtype=torch.long), scores.clone())
    for row in range(len(scores)):
        ids = allowed[row // copies]
        keep = torch.ones(vocab, dtype=torch.bool) if ids is None else torch.isin(torch.arange(vocab), torch.tensor(ids))
        assert torch.equal(out[row][keep], scores[row][keep])
        assert torch.isneginf(out[row][~keep]).all()


# --- a real GPT-2 generating through it --------------------------------------------------------

def tiny_gpt2(vocab: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_layer=1, n_head=2, n_embd=16, n_positions=32,
                        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    return GPT2LMHeadModel(config).eval()


def left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def generate(model, ids, mask, processors=(), **kw) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, logits_processor=LogitsProcessorList(list(processors)),
                              max_new_tokens=3, pad_token_id=PAD, **kw)


MODES = {"greedy": {"do_sample": False}, "sample": {"do_sample": True, "num_return_sequences": 2},
         "beam": {"do_sample": False, "num_beams": 2, "num_return_sequences": 2}}


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.data())
def test_generation_never_emits_a_forbidden_object(data):
    vocab, seed, mode = data.draw(st.integers(5, 40)), data.draw(st.integers(0, 999)), data.draw(st.sampled_from(sorted(MODES)))
    prompts = data.draw(st.lists(st.lists(st.integers(3, vocab - 1), min_size=1, max_size=5), min_size=1, max_size=4))
    allowed = data.draw(allowed_rows(vocab, len(prompts), max_size=3))
    model, (ids, mask) = tiny_gpt2(vocab, seed), left_padded(prompts)
    out = generate(model, ids, mask, [AllowedObjects.for_prompts(ids, allowed)], **MODES[mode])
    copies = MODES[mode].get("num_return_sequences", 1)
    assert out.shape[0] == len(prompts) * copies
    for row, token in enumerate(out[:, ids.shape[1]].tolist()):
        assert allowed[row // copies] is None or token in allowed[row // copies], (row, token, allowed)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.data())
def test_greedy_picks_the_best_allowed_object_and_leaves_later_steps_alone(data):
    vocab, seed = data.draw(st.integers(5, 40)), data.draw(st.integers(0, 999))
    prompts = data.draw(st.lists(st.lists(st.integers(3, vocab - 1), min_size=1, max_size=5), min_size=1, max_size=4))
    model, (ids, mask) = tiny_gpt2(vocab, seed), left_padded(prompts)
    with torch.no_grad():
        free = model.generate(ids, attention_mask=mask, max_new_tokens=3, pad_token_id=PAD, do_sample=False,
                              output_scores=True, return_dict_in_generate=True)
    first_scores, start = free.scores[0], ids.shape[1]
    allowed = data.draw(allowed_rows(vocab, len(prompts)))
    for row, ids_ in enumerate(allowed):   # sometimes allow the model's own choice, to compare whole rows
        if ids_ is not None and data.draw(st.booleans()):
            allowed[row] = sorted({*ids_, int(free.sequences[row, start])})
    out = generate(model, ids, mask, [AllowedObjects.for_prompts(ids, allowed)], do_sample=False)
    width = min(out.shape[1], free.sequences.shape[1])
    for row, ids_ in enumerate(allowed):
        choices = range(vocab) if ids_ is None else ids_
        assert int(out[row, start]) == max(choices, key=lambda t: first_scores[row, t].item())
        if int(out[row, start]) == int(free.sequences[row, start]):
            assert out[row, :width].tolist() == free.sequences[row, :width].tolist()


def test_later_steps_may_leave_the_allowed_set():
    model, (ids, mask) = tiny_gpt2(30, seed=0), left_padded([[5, 6, 7], [8, 9], [10]])
    torch.manual_seed(0)
    out = generate(model, ids, mask, [AllowedObjects.for_prompts(ids, [[4]] * 3)], do_sample=True)
    assert out[:, ids.shape[1]].tolist() == [4, 4, 4]
    assert (out[:, ids.shape[1] + 1:] != 4).any()
