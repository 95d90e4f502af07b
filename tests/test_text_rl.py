"""The RL-tuned LM on real text: the VADER movie-review snippets (fetched by make install), the
BPE learnt from them, pre-training on them, and RL toward VADER's positive sentiment."""
from __future__ import annotations

import csv

import pytest

from cogen.config import CogenError
from cogen.data import vader
from cogen.data.text import END, TextDataModule, bpe_tokenizer
from cogen.rl.rewards import Responses
from cogen.rl.sentiment import SentimentReward
from conftest import ROOT, cli, summary

SNIPPETS = ROOT / "data" / "vader" / vader.FILE
QUIET = ["logger=csv", "trainer.enable_progress_bar=false"]


def test_the_snippets_and_their_fixed_split():
    snippets = vader.read_snippets(str(SNIPPETS))
    assert len(snippets) == 10_605 and sum(s.rating > 0 for s in snippets) == 5_242   # as Hutto & Gilbert list
    assert snippets[2] == vader.Snippet(-0.6, "Effective but too tepid biopic")
    parts = {p: vader.split(snippets, p) for p in ("train", "val", "test")}
    assert [len(parts[p]) for p in parts] == [9_545, 530, 530]
    ids = {p: {id(s) for s in rows} for p, rows in parts.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    prompts = vader.prompts(str(SNIPPETS), "val", words=4, n=256)
    assert len(prompts) == 256 and all(len(p.split()) == 4 for p in prompts)
    val_texts = vader.texts(str(SNIPPETS), "val")
    assert all(any(t.startswith(p) for t in val_texts) for p in prompts[:20])


def test_a_missing_or_malformed_snippet_file_is_a_one_line_error(tmp_path):
    with pytest.raises(CogenError, match=r"missing\. Fetch them once with `python -m cogen.data.vader"):
        vader.read_snippets(str(tmp_path / vader.FILE))
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t2.0\tfine\n2 no tabs here\n")
    with pytest.raises(CogenError, match=r"bad.txt:2: expected id<TAB>rating<TAB>text"):
        vader.read_snippets(str(bad))


def test_the_bpe_round_trips_text_and_its_cache_gives_the_same_ids(tmp_path):
    corpus = vader.texts(str(SNIPPETS), "train")[:2000]
    tok = bpe_tokenizer(corpus, vocab_size=512, cache_dir=str(tmp_path / "bpe"))
    assert len(tok) == 512 and tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == tok.convert_tokens_to_ids(END)
    assert tok.never_sample == [tok.eos_token_id]   # RL responses run their full length
    held_out = vader.texts(str(SNIPPETS), "test")[:50]
    assert all(tok.decode(tok.encode(t)) == t for t in held_out)
    per_char = sum(len(tok.encode(t)) for t in held_out) / sum(len(t.encode()) for t in held_out)
    assert per_char < 0.6, per_char   # merges learnt: far fewer tokens than bytes (about 0.5 with 256 merges)
    again = bpe_tokenizer(lambda: pytest.fail("the cache should be read"), cache_dir=str(tmp_path / "bpe"))
    assert [again.encode(t) for t in held_out] == [tok.encode(t) for t in held_out]
    assert bpe_tokenizer(corpus, vocab_size=512, responses_fixed=False).never_sample == []


def test_text_blocks_start_each_text_with_the_end_token():
    tok = bpe_tokenizer(["a good film", "a bad film"] * 20, vocab_size=300)
    texts = {"train": ["a good film"] * 12, "val": ["a bad film"] * 12, "test": ["a good film"] * 12}
    data = TextDataModule(tok, lambda part: texts[part], seq_len=7)
    data.setup()
    block = data.splits["val"].tensors[0]
    assert block.shape[1] == 8 and (block[:, 0] == tok.eos_token_id).all()
    assert tok.decode(block[0]) == f"{END}a bad film{END}a bad film"
    with pytest.raises(CogenError, match="fewer than one block"):
        TextDataModule(tok, lambda part: ["a"], seq_len=64).setup()


def test_sentiment_reward_is_vaders_compound_score():
    reward = SentimentReward()
    batch = Responses(None, None, None, prompts=["The film", "The film"] * 2,
                      texts=[" is a wonderful, moving triumph", " is a dull, awful mess", " is long", ""])
    score = reward(batch)
    assert score[0] > 0.7 and score[1] < -0.6 and score[2] == 0 and score[3] == 0
    assert SentimentReward(scale=2.0)(batch)[0] == pytest.approx(2 * score[0].item())


def rows(run_dir, key: str) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


@pytest.mark.slow
def test_pretrain_on_reviews_then_rl_raises_vader_sentiment(tmp_path):
    """The whole sentiment task, small: a 2-layer GPT-2 pre-trained on the snippets for 120 steps,
    then 30 RLOO rollouts (64 responses of 24 tokens each) toward VADER's compound score."""
    artifacts = tmp_path / "artifacts"
    cli("cogen.train", "experiment=pretrain_reviews", *QUIET, "model.policy.config.n_layer=2",
        "model.policy.config.n_embd=64", "trainer.max_epochs=1", "trainer.limit_train_batches=120",
        f"paths.artifacts_dir={artifacts}", f"hydra.run.dir={tmp_path / 'pre'}")
    pre = summary(tmp_path / "pre")["metrics"]
    # Uniform over the BPE is 7.62 nats a token, the training text's unigram frequencies 6.46 (measured):
    # below 5.9 the model uses the context (5.55 measured at seed 0).
    assert pre["test/nll"] < 5.9
    assert (artifacts / "lm" / "tiny_gpt2_reviews" / "tokenizer.json").is_file()
    run = tmp_path / "rl"
    cli("cogen.train", "experiment=sentiment_rl", *QUIET, "data.steps_per_epoch=30", "trainer.max_epochs=1", "data.prompts.n=32",
        "trainer.log_every_n_steps=1", "model.lr=1e-3", "model.kl.beta=0.02", f"paths.artifacts_dir={artifacts}",
        f"hydra.run.dir={run}")
    first = sum(rows(run, "train/reward")[:3]) / 3     # the first rollouts: about the reference's own
    tuned = summary(run)["metrics"]
    # Measured at seed 0: 0.149 -> 0.893, at a KL of 15 nats (beta 0.02).
    assert tuned["test/reward"] > first + 0.25, (first, tuned["test/reward"])
    assert tuned["test/response_length"] == 24
