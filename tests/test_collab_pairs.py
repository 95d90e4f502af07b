"""Every model family with every collaboration mode, through one real multirun of `cogen-train`:
the pairs that make sense train a few steps and test; the others stop before anything is built,
with a one-line reason in their summary.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import cli

IMAGE_MODELS = ("gan", "dcgan", "vae", "vae2")
MODES = ("autonomous", "prompt_guided", "co_creation", "iterative_refinement", "knowledge_guided")
FEW_STEPS = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
             "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
# (model, mode) -> a phrase of the one-line reason; every pair not listed must complete.
REFUSED = {
    ("gan", "prompt_guided"): "needs class labels",               # the 2D ring has no classes
    ("gan", "co_creation"): "a GAN has no encoder",
    ("gan", "iterative_refinement"): "needs labelled images",     # no domain classifier for 2D points
    ("dcgan", "co_creation"): "a GAN has no encoder",
    **{(m, "knowledge_guided"): "read by the knowledge-fused LM" for m in ("gan", "dcgan", "vae", "vae2", "rl_lm", "lm_pretrain")},
    ("vae2", "prompt_guided"): "no class-conditional version",
    ("vae2", "co_creation"): "built for one stochastic layer",
    ("lm_pretrain", "prompt_guided"): "pre-training reads text only",
    ("lm_pretrain", "co_creation"): "pre-training reads text only",
    ("lm_pretrain", "iterative_refinement"): "pre-training reads text only",
}


def outcomes(sweep: Path) -> dict[tuple[str, str], dict]:
    found = {}
    for path in sweep.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        found[summary["choices"]["model"], summary["choices"]["collab"]] = summary
    return found


@pytest.mark.slow
def test_image_families_with_every_mode(tmp_path):
    cli("cogen.train", "-m", f"model={','.join(IMAGE_MODELS)}", f"collab={','.join(MODES)}", *FEW_STEPS,
        f"hydra.sweep.dir={tmp_path}", timeout=900)
    found = outcomes(tmp_path)
    assert set(found) == {(m, c) for m in IMAGE_MODELS for c in MODES}
    for pair, summary in found.items():
        if pair in REFUSED:
            assert summary["status"] == "failed" and REFUSED[pair] in summary["error"], (pair, summary.get("error"))
            assert "\n" not in summary["error"]
        else:
            assert summary["status"] == "completed", (pair, summary.get("error"))
    metrics = {pair: s["metrics"] for pair, s in found.items()}
    assert 0 <= metrics["vae", "prompt_guided"]["test/prompt_adherence"] <= 1
    assert metrics["vae", "co_creation"]["test/kept_pixel_error"] == 0
    assert metrics["dcgan", "iterative_refinement"]["test/answers"] == 64     # one round of ratings
    assert (tmp_path / "0").exists()


def test_language_models_refuse_the_modes_they_cannot_take_at_compose_time(tmp_path):
    """rl_lm takes prompt_guided, co_creation (tests/test_collab_text.py) and iterative_refinement
    (tests/test_iterative_refinement.py), kg_lm knowledge_guided (tests/test_knowledge_guided.py);
    every other pair stops before anything is built."""
    proc = cli("cogen.train", "-m", "model=lm_pretrain", "collab=prompt_guided,co_creation,iterative_refinement,knowledge_guided",
               "logger=csv", f"hydra.sweep.dir={tmp_path / 'a'}")
    cli("cogen.train", "-m", "model=rl_lm", "collab=knowledge_guided", "logger=csv", f"hydra.sweep.dir={tmp_path / 'b'}")
    found = {**outcomes(tmp_path / "a"), **outcomes(tmp_path / "b")}
    assert len(found) == 5
    for pair, summary in found.items():
        assert summary["status"] == "failed" and REFUSED[pair] in summary["error"], (pair, summary.get("error"))
        assert summary["error"].startswith(f"collab={pair[1]} does not work with model family")
    assert "Traceback" not in proc.stderr
