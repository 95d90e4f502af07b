"""The feedback store (cogen.collab.store), RecordedPartner, ReplayPartner and the simulated
partner's rate/compare/supply_facts: exact round trips, durability under SIGKILL, the noise rate,
and replay of a recorded run through the real `cogen-train`."""
from __future__ import annotations

import copy
import csv
import inspect
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from cogen.collab.partner import Edit, SimulatedPartner
from cogen.collab.recorded import RecordedPartner
from cogen.collab.replay import ReplayPartner
from cogen.collab.store import COLUMNS, FeedbackStore
from cogen.config import CogenError

from conftest import ROOT, summary, train


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Small nets: one thread each is faster on a busy machine (and the CLI runs stay comparable)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def same(a, b) -> bool:
    """Equal, tensors bit for bit (same dtype, shape and bytes), tuples as tuples and lists as lists."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8)))
    if isinstance(a, Edit):
        return type(b) is Edit and same(a.mask, b.mask) and same(a.observed, b.observed)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def mean_pixel(items: torch.Tensor) -> torch.Tensor:
    """An oracle: the brighter the image, the better."""
    return items.flatten(1).mean(1)


FACTS = [("paris", "capital_of", "france"), ("berlin", "capital_of", "germany"), ("france", "part_of", "europe")]


# -- the store ------------------------------------------------------------------------------
def test_answers_round_trip_bit_for_bit_in_order_and_export_to_csv(tmp_path):
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(16, 1, 8, 8, generator=g)
    labels = torch.randint(10, (16,), generator=g)
    mask = pixels > 0.5
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45, 3.4e38])  # NaN, denormal ...
    answers = [
        ("ask_condition", labels),                                     # int64
        ("edit", Edit(mask, torch.where(mask, pixels, torch.zeros(())))),   # bool mask, float32 pixels
        ("rate", torch.tensor([1, 5, 3])),
        ("pixels", pixels),
        ("special", special),
        ("half", pixels[:2].to(torch.bfloat16)),                       # numpy has no bfloat16
        ("strided", pixels[:, 0, :, 0]),                               # a non-contiguous view
        ("scalar", torch.tensor(7)),
        ("empty", torch.zeros(0, 3, dtype=torch.bool)),
        ("supply_facts", list(FACTS[:2])),                             # a list of (head, relation, tail) tuples
        ("supply_facts", []),
        ("compare", None),                                             # no answer: the budget ran out
        ("misc", {"score": 0.25, "ok": True, "name": "x", "nested": [1, (2, 3)]}),
    ]
    store = FeedbackStore(tmp_path / "feedback.sqlite", session="first")
    seqs = [store.record(q, "simulated", "tester", {"i": i}, a) for i, (q, a) in enumerate(answers)]
    assert seqs == list(range(1, len(answers) + 1))
    store.close()

    again = FeedbackStore.open_existing(tmp_path / "feedback.sqlite")   # a fresh connection reads what is on disk
    records = again.records()
    assert [r.seq for r in records] == seqs and [r.question for r in records] == [q for q, _ in answers]
    assert [r.shown for r in records] == [{"i": i} for i in range(len(answers))]
    for record, (_, answer) in zip(records, answers):
        assert same(record.answer, answer), (record.question, record.answer, answer)
    assert torch.equal(records[0].answer, labels) and records[0].answer.dtype == torch.int64
    assert torch.equal(records[1].answer.mask, mask) and records[1].answer.mask.dtype == torch.bool
    assert torch.equal(records[3].answer, pixels) and records[3].answer.dtype == torch.float32
    assert records[9].answer == [FACTS[0], FACTS[1]] and records[11].answer is None
    assert all(r.session == "first" and r.partner_kind == "simulated" and r.partner_id == "tester" for r in records)
    assert all(r.asked_at <= r.answered_at for r in records)

    csv_path = again.to_csv(tmp_path / "export" / "feedback.csv")
    with csv_path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == list(COLUMNS) and len(rows) == len(answers)
    column = {name: [row[i] for row in rows] for i, name in enumerate(COLUMNS)}
    assert column["seq"] == [str(s) for s in seqs] and column["question"] == [q for q, _ in answers]
    assert column["answer"][0] == json.dumps(labels.tolist())                                # short tensors in full
    assert column["answer"][3] == "tensor(16, 1, 8, 8) float32"                              # long ones summarised
    assert column["answer"][9] == '[("paris", "capital_of", "france"), ("berlin", "capital_of", "germany")]'
    assert column["answer"][11] == "null"
    again.close()


def test_sessions_wandb_table_and_a_value_the_store_cannot_save(tmp_path):
    path = tmp_path / "feedback.sqlite"
    first = FeedbackStore(path, session="run")
    first.record("rate", "simulated", "a", {}, torch.tensor([3]))
    second = FeedbackStore(path, session="resumed")   # e.g. the run resumed: same file, a second session
    second.record("rate", "simulated", "a", {}, torch.tensor([4]))
    first.record("rate", "simulated", "a", {}, torch.tensor([5]))
    assert first.sessions() == ["run", "resumed"]
    assert [r.answer.item() for r in first.records("run")] == [3, 5]
    assert [r.answer.item() for r in first.records("resumed")] == [4]
    assert [r.seq for r in first.records()] == [1, 2, 3]

    table = first.to_wandb_table()
    assert table.columns == list(COLUMNS) and len(table.data) == 3

    with pytest.raises(CogenError, match="cannot save an answer of type object"):
        first.record("rate", "simulated", "a", {}, object())
    assert len(first.records()) == 3                  # nothing half-written
    with pytest.raises(CogenError, match="no feedback store at"):
        FeedbackStore.open_existing(tmp_path / "missing.sqlite")
    first.close()
    second.close()


def killed_answer(i: int):
    """The answer the writer below gives as its i-th; the test recomputes it after the kill."""
    import torch

    from cogen.collab.partner import Edit

    g = torch.Generator().manual_seed(i)
    pixels = torch.rand(16, 1, 8, 8, generator=g)
    return [torch.randint(10, (16,), generator=g), Edit(pixels > 0.5, pixels), [("q", "answer", str(i))]]


WRITER = textwrap.dedent(inspect.getsource(killed_answer)) + textwrap.dedent("""
    import sys
    from cogen.collab.store import FeedbackStore

    store = FeedbackStore(sys.argv[1], session="killed")
    i = 0
    while True:
        seq = store.record("edit", "simulated", "writer", {"i": i}, killed_answer(i))
        print(seq, flush=True)   # acknowledged: record() returned
        i += 1
""")


def test_every_acknowledged_answer_survives_sigkill(tmp_path):
    script, db = tmp_path / "writer.py", tmp_path / "feedback.sqlite"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(120, proc.kill)   # a writer that never acknowledges must not hang the tests
    watchdog.start()
    acked = []
    try:
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) == 50:
                os.kill(proc.pid, signal.SIGKILL)   # while it goes on writing
                break
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=30)
    assert len(acked) == 50, proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL
    assert acked == list(range(1, 51))
    assert db.with_name(db.name + "-wal").exists()     # killed, not closed: the answers rely on WAL recovery

    store = FeedbackStore.open_existing(db)
    assert store.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    records = store.records()
    assert [r.seq for r in records] == list(range(1, len(records) + 1)) and len(records) >= 50
    for record in records:   # the acknowledged ones, and any committed after them: all intact
        assert record.session == "killed" and record.shown == {"i": record.seq - 1}
        assert same(record.answer, killed_answer(record.seq - 1)), record.seq
    store.close()


# -- the recorded and the replaying partner ---------------------------------------------------
def ask_everything(partner, images):
    """One question of each kind, in order, then one past the budget."""
    return [partner.ask_condition(10, 7), partner.edit(images), partner.rate(images),
            partner.compare(images[:3], images[3:]), partner.supply_facts("france"), partner.rate(images)]


def test_recorded_partner_stores_each_answer_and_replay_gives_them_back(tmp_path):
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    simulated = SimulatedPartner(seed=0, noise=0.3, oracle=mean_pixel, facts=FACTS, budget=7 + 6 + 6 + 3 + 1)
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    recorded = RecordedPartner(simulated, store, tmp_path / "feedback")
    given = ask_everything(recorded, images)
    assert given[-1] is None and recorded.answered == recorded.budget == 23   # settings read through
    assert copy.copy(recorded).budget == 23 and not hasattr(recorded, "no_such_setting")

    records = store.records()
    assert [r.question for r in records] == ["ask_condition", "edit", "rate", "compare", "supply_facts", "rate"]
    assert all(same(r.answer, a) for r, a in zip(records, given))
    assert {r.partner_kind for r in records} == {"simulated"} and records[0].partner_id == simulated.id
    edit = records[1]
    assert edit.artifact == "feedback/q00002_edit.png" and (tmp_path / edit.artifact).is_file()
    assert edit.shown == {"n": 6, "sample_ids": [f"2:{i}" for i in range(6)]}
    assert records[3].shown["pairs"] == 3 and records[3].shown["n"] == 6
    assert records[0].artifact is None and records[0].shown == {"num_classes": 10, "n": 7}
    assert records[4].shown == {"query": "france"}

    replay = ReplayPartner(str(store.path))
    assert replay.kind == "replay" and replay.id == f"replay of simulated:{simulated.id}"
    replayed = ask_everything(replay, images)
    assert all(same(a, b) for a, b in zip(replayed, given))
    with pytest.raises(CogenError, match="asked a rate question after all 6 stored answers"):
        replay.rate(images)

    with pytest.raises(CogenError, match=r"replay: question 1 is ask_condition\{'num_classes': 10, 'n': 8\} but the "
                                         r"store recorded ask_condition\{'num_classes': 10, 'n': 7\}"):
        ReplayPartner(str(store.path)).ask_condition(10, 8)
    with pytest.raises(CogenError, match="replay: question 1 is edit"):
        ReplayPartner(str(store.path)).edit(images)


def test_replay_partner_says_what_is_wrong_with_its_store(tmp_path):
    with pytest.raises(CogenError, match="needs the store to replay: add collab.partner.store="):
        ReplayPartner("")
    with pytest.raises(CogenError, match="no feedback store at"):
        ReplayPartner(str(tmp_path / "missing.sqlite"))
    FeedbackStore(tmp_path / "empty.sqlite").close()
    with pytest.raises(CogenError, match="holds no answers"):
        ReplayPartner(str(tmp_path / "empty.sqlite"))
    store = FeedbackStore(tmp_path / "one.sqlite", session="abc")
    store.record("ask_condition", "simulated", "x", {"num_classes": 10, "n": 1}, torch.tensor([3]))
    with pytest.raises(CogenError, match="collab.partner.session='nope' is not in .* it holds abc"):
        ReplayPartner(str(store.path), session="nope")
    assert ReplayPartner(str(store.path), session="abc").ask_condition(10, 1).tolist() == [3]


# -- the simulated partner's rate and compare -------------------------------------------------
def test_rate_and_compare_follow_the_oracle_and_are_deterministic_under_the_seed():
    scores = torch.tensor([0, 0.1, 0.2, 0.25, 0.5, 0.6, 0.75, 0.9, 1.0])
    shades = scores.view(9, 1, 1, 1).expand(9, 1, 4, 4)                       # images of those mean pixels
    exact = SimulatedPartner(seed=0, oracle=mean_pixel)
    assert exact.rate(shades).tolist() == [1, 1, 2, 2, 3, 3, 4, 5, 5]          # 1 + round(4 * score)
    assert exact.rate(shades).dtype == torch.int64
    assert exact.compare(shades, shades.flip(0)).tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]   # the tie: a coin (0 for seed 0)
    texts = SimulatedPartner(oracle=lambda t: torch.tensor([len(s) / 4 for s in t]))
    assert texts.rate(["", "ab", "abcd"]).tolist() == [1, 3, 5]                 # texts are items too
    assert texts.compare(["a", "abc"], ["ab", "b"]).tolist() == [1, 0]

    images = torch.rand(200, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def answers(seed):
        partner = SimulatedPartner(seed=seed, noise=0.5, oracle=mean_pixel, facts=FACTS)
        return [partner.rate(images), partner.compare(images[:100], images[100:]),
                [partner.supply_facts("france") for _ in range(20)]]

    first, again, other = answers(0), answers(0), answers(1)
    assert all(same(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1]) and first[2] != other[2]

    with pytest.raises(CogenError, match="no oracle to rate or compare with"):
        SimulatedPartner().rate(images)


@pytest.mark.parametrize("noise", [0.0, 0.3, 1.0])
def test_share_of_random_answers_matches_the_noise(noise):
    """A random rating equals the intended one by chance 1 time in 5, a random choice 1 time in 2:
    the share of answers off the intent is noise * 4/5 for rate, noise * 1/2 for compare."""
    n = 4000
    g = torch.Generator().manual_seed(1)
    images, others = torch.rand(n, 1, 4, 4, generator=g), torch.rand(n, 1, 4, 4, generator=g)
    intended_rating = SimulatedPartner(oracle=mean_pixel).rate(images)
    intended_choice = SimulatedPartner(oracle=mean_pixel).compare(images, others)
    partner = SimulatedPartner(seed=0, noise=noise, oracle=mean_pixel)
    ratings, choices = partner.rate(images), partner.compare(images, others)

    for answers, intended, chance in ((ratings, intended_rating, 1 / 5), (choices, intended_choice, 1 / 2)):
        off = (answers != intended).float().mean().item()
        expected = noise * (1 - chance)
        assert off == pytest.approx(expected, abs=4 * math.sqrt(max(expected * (1 - expected), 1e-9) / n))
        estimated_noise = off / (1 - chance)
        assert estimated_noise == pytest.approx(noise, abs=0.05)
    assert set(ratings.tolist()) <= {1, 2, 3, 4, 5} and set(choices.tolist()) <= {0, 1}
    if noise == 1.0:   # random answers are uniform over the scale, whatever the intent
        shares = torch.bincount(ratings, minlength=6)[1:].float() / n
        assert torch.allclose(shares, torch.full((5,), 0.2), atol=4 * math.sqrt(0.16 / n))


def test_supply_facts_gives_known_facts_and_noise_a_wrong_one():
    assert SimulatedPartner(facts=FACTS).supply_facts("france") == [FACTS[0], FACTS[2]]
    assert SimulatedPartner(facts=FACTS).supply_facts("tokyo") == []
    assert SimulatedPartner().supply_facts("france") == []
    wrong = SimulatedPartner(seed=0, noise=1.0, facts=FACTS)
    assert all(wrong.supply_facts("france") == [FACTS[1]] for _ in range(20))   # the one not about france


def test_budget_gives_a_partial_answer_then_none():
    images = torch.rand(6, 1, 4, 4)
    partner = SimulatedPartner(seed=0, budget=10, oracle=mean_pixel, facts=FACTS)
    assert len(partner.rate(images)) == 6
    assert len(partner.compare(images, images.flip(0))) == 4          # what is left of the budget
    assert partner.answered == 10
    assert partner.rate(images) is None and partner.compare(images, images) is None
    assert partner.supply_facts("france") is None and partner.ask_condition(10, 3) is None
    assert partner.edit(images) is None and partner.answered == 10
    assert SimulatedPartner(budget=0, facts=FACTS).supply_facts("france") is None


# -- the real CLI ---------------------------------------------------------------------------
# collab=prompt_guided, cVAE on digits, 2 short epochs: the partner's class requests (200 per question,
# 30% of them random) decide what the test judges. About 10-15 s per run on an idle core.
RUN = ["model=vae", "data=digits", "data.num_samples=null", "model.val_k=20", "model.test_k=100",
       "collab=prompt_guided", "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("recorded") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        train(run_dir, *RUN, "collab.n_samples=200", "collab.partner.noise=0.3")
    return run_dir


def stored(run_dir):
    store = FeedbackStore.open_existing(run_dir / "feedback.sqlite")
    try:
        return store.records()
    finally:
        store.close()


def csv_rows(run_dir):
    with (run_dir / "feedback.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_replay_reproduces_the_recorded_run_bit_for_bit(recorded_run, tmp_path):
    original = stored(recorded_run)
    assert original and {r.question for r in original} == {"ask_condition"}
    assert {r.partner_kind for r in original} == {"simulated"}
    assert all(r.shown == {"num_classes": 10, "n": 200} for r in original)
    assert torch.bincount(original[0].answer, minlength=10).tolist() != [20] * 10   # noisy: not every class in turn

    replayed = tmp_path / "replay"
    train(replayed, *RUN, "collab.n_samples=200", "collab/partner=replay",
          f"collab.partner.store={recorded_run / 'feedback.sqlite'}")
    before, after = summary(recorded_run)["metrics"], summary(replayed)["metrics"]
    assert after["test/prompt_adherence"] == before["test/prompt_adherence"]
    assert after["val/prompt_adherence"] == before["val/prompt_adherence"]
    assert summary(replayed)["choices"]["collab/partner"] == "replay"

    again = stored(replayed)
    assert len(again) == len(original)
    for old, new in zip(original, again):
        assert torch.equal(new.answer, old.answer) and new.answer.dtype == old.answer.dtype
        assert new.question == old.question and new.shown == old.shown
        assert new.partner_kind == "replay" and new.partner_id == f"replay of simulated:{old.partner_id}"
    for run_dir in (recorded_run, replayed):
        rows = csv_rows(run_dir)
        assert [r["seq"] for r in rows] == [str(r.seq) for r in original] and rows[0]["answer"] == "tensor(200,) int64"
    assert {r["partner_kind"] for r in csv_rows(replayed)} == {"replay"}


def one_line_error(proc, message: str) -> None:
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "cogen error" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_replay_of_another_question_stops_with_one_line(recorded_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = train(run_dir, *RUN, "collab.n_samples=100", "trainer.limit_train_batches=2", "collab/partner=replay",
                 f"collab.partner.store={recorded_run / 'feedback.sqlite'}", check=False)
    one_line_error(proc, "replay: question 1 is ask_condition{'num_classes': 10, 'n': 100} but the store recorded "
                         "ask_condition{'num_classes': 10, 'n': 200}; replay needs the recorded run's config and seed.")
    assert summary(run_dir)["status"] == "failed"


@pytest.mark.parametrize("overrides,message", [
    (["collab/partner=replay"],
     "missing required value(s): collab.partner.store. Pass them on the command line, e.g. collab.partner.store=<value>."),
    (["collab/partner=replay", "collab.partner.store=/nowhere/feedback.sqlite"],
     "no feedback store at /nowhere/feedback.sqlite: give the feedback.sqlite of an earlier run"),
    # a dot sets the value of collab.partner to the string 'replay' (Hydra accepts it); a slash picks the group option
    (["collab.partner=replay"],
     "collab.partner=replay sets a value, not the partner: choose the partner with collab/partner=replay"),
], ids=["no-store", "missing-file", "dot-not-slash"])
def test_replay_without_a_store_fails_before_training_with_one_line(run_dir, overrides, message):
    proc = train(run_dir, *RUN, *overrides, check=False)
    one_line_error(proc, message)
    assert summary(run_dir)["status"] == "failed" and not (run_dir / "checkpoints").exists()


def test_the_dot_spelling_with_a_store_is_refused_by_hydra(run_dir):
    """`collab.partner=replay collab.partner.store=...` (the dot): the group option stays simulated, whose
    node has no `store`, so Hydra refuses the override before cogen runs; the slash picks the option."""
    proc = train(run_dir, *RUN, "collab.partner=replay", "collab.partner.store=/nowhere/feedback.sqlite", check=False)
    assert proc.returncode != 0
    assert "Could not override 'collab.partner.store'" in proc.stderr and "Key 'store' is not in struct" in proc.stderr
    assert not (run_dir / "summary.json").exists()
