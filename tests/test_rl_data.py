"""The Markov grammar and its tokenizer, prompts, model loading and reward rules, with the short
errors a user gets for a bad input."""
from __future__ import annotations

import pytest
import torch

from cogen.config import CogenError
from cogen.data.markov import MarkovDataModule, MarkovGrammar, MarkovTokenizer
from cogen.data.prompts import PromptDataModule
from cogen.nets.lm import causal_lm
from cogen.rl.rewards import Responses, RuleReward


def one_line(e: pytest.ExceptionInfo, folder=None) -> str:
    """The error's message: one line, short once the (test-dependent) `folder` in it is left out."""
    message = str(e.value)
    assert "\n" not in message and len(message.replace(str(folder), "") if folder else message) < 300, message
    return message


def test_grammar_samples_follow_its_own_probabilities():
    grammar = MarkovGrammar(vocab_size=4, concentration=0.5, grammar_seed=3)
    torch.testing.assert_close(grammar.transition.sum(1), torch.ones(4, dtype=torch.float64))
    words = grammar.sample(40000, 2, torch.Generator().manual_seed(0))
    freq = torch.bincount(words[:, 0] * 4 + words[:, 1], minlength=16).double() / len(words)
    pairs = torch.cartesian_prod(torch.arange(4), torch.arange(4))
    assert 0.5 * float((freq - grammar.log_prob(pairs).exp()).abs().sum()) < 0.02


def test_markov_data_and_tokenizer():
    tok = MarkovTokenizer(16)
    assert tok.decode(tok.encode("a p c")) == "a p c" and len(tok) == 17 and tok.never_sample == [16]
    with pytest.raises(CogenError) as e:
        tok.encode("a zebra")
    assert "zebra" in one_line(e)
    dm = MarkovDataModule(tok, seq_len=5, num_samples=256, val_samples=64, test_samples=64, batch_size=32)
    dm.setup()
    (ids,) = next(iter(dm.train_dataloader()))
    assert ids.shape == (32, 6) and (ids[:, 0] == 16).all() and (ids[:, 1:] < 16).all()
    ids, logp = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(logp, dm.grammar.log_prob(ids[:, 1:]).float())


def test_prompts_from_a_file_are_left_padded(tmp_path):
    file = tmp_path / "prompts.txt"
    file.write_text("a b c\n\n  d \n")
    dm = PromptDataModule(MarkovTokenizer(4), path=str(file), batch_size=2, steps_per_epoch=3)
    assert dm.texts == ["a b c", "d"]
    batch = dm.collate([0, 1])
    assert batch["input_ids"].tolist() == [[4, 0, 1, 2], [4, 4, 4, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert len(list(dm.train_dataloader())) == 3 and len(list(dm.val_dataloader())) == 1


def test_bad_prompt_inputs_get_one_line_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(CogenError) as e:
        PromptDataModule(MarkovTokenizer(4), path=str(empty))
    assert "holds no prompts" in one_line(e)
    with pytest.raises(CogenError) as e:
        PromptDataModule(MarkovTokenizer(4), path=str(tmp_path / "missing.txt"))
    assert "no such prompt file" in one_line(e)
    with pytest.raises(CogenError) as e:
        PromptDataModule(MarkovTokenizer(4), prompts=[])
    assert "no prompts" in one_line(e)


def test_model_paths(tmp_path):
    with pytest.raises(CogenError) as e:
        causal_lm(path=str(tmp_path / "nowhere"))
    assert "does not exist" in one_line(e, tmp_path) and "model=lm_pretrain" in str(e.value)
    (tmp_path / "junk").mkdir()
    with pytest.raises(CogenError) as e:
        causal_lm(path=str(tmp_path / "junk"))
    assert "no loadable" in one_line(e, tmp_path)
    tok = MarkovTokenizer(4)
    model = causal_lm(config={"n_layer": 1, "n_embd": 16, "n_head": 2}, tokenizer=tok)
    model.save_pretrained(str(tmp_path / "saved"))
    again = causal_lm(path=str(tmp_path / "saved"))
    ids = torch.tensor([[4, 0, 1]])
    torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)


def test_gpt2_gets_the_fused_gelu_with_the_same_outputs(tmp_path):
    """cogen swaps GPT-2's six-op gelu_new for PyTorch's one-kernel tanh GELU (the same function):
    a model saved with gelu_new by plain transformers loads with the fused one and the same logits."""
    import transformers
    from transformers.activations import GELUTanh, NewGELUActivation

    torch.manual_seed(0)
    plain = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=11, n_layer=2, n_embd=32, n_head=2,
                                                                 activation_function="gelu_new")).eval()
    plain.save_pretrained(str(tmp_path / "plain"))
    loaded = causal_lm(path=str(tmp_path / "plain")).eval()
    kinds = {type(m) for m in loaded.modules()}
    assert GELUTanh in kinds and NewGELUActivation not in kinds
    assert loaded.config.activation_function == "gelu_pytorch_tanh"
    ids = torch.randint(0, 11, (4, 9))
    torch.testing.assert_close(loaded(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-5, rtol=0)


def responses(texts: list[str], lengths: list[int]) -> Responses:
    mask = torch.tensor([[1.0] * n + [0.0] * (4 - n) for n in lengths])
    return Responses(torch.zeros(len(texts), 1, dtype=torch.long), torch.zeros(len(texts), 4, dtype=torch.long), mask,
                     texts=texts)


def shout(batch: Responses, bonus: float = 1.0) -> torch.Tensor:
    """A user's own rule, reached by its dotted path."""
    return torch.tensor([bonus * t.count("!") for t in batch.texts])


def test_reward_rules():
    batch = responses(["a b a", "Good day, good!", "c"], [3, 4, 1])
    assert RuleReward("keyword", words=["a", "good"])(batch).tolist() == [2.0, 2.0, 0.0]
    assert RuleReward("lexicon", scores={"a": 1.0, "b": -0.5})(batch).tolist() == [1.5, 0.0, 0.0]
    length = RuleReward("length")
    assert not length.needs_text and length(batch).tolist() == [3.0, 4.0, 1.0]
    assert RuleReward("length", unit="words", target=2)(batch).tolist() == [-1.0, -1.0, -1.0]
    assert RuleReward("test_rl_data.shout", bonus=2.0)(batch).tolist() == [0.0, 2.0, 0.0]


def test_an_unknown_reward_rule_is_a_one_line_error_listing_the_rules():
    with pytest.raises(CogenError) as e:
        RuleReward("sentiment_of_the_moon")
    message = one_line(e)
    assert "sentiment_of_the_moon" in message and "keyword, lexicon, length" in message
