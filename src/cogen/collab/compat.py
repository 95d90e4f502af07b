"""Which collaboration mode works with which model family, checked right after composition.

A pair that cannot work (e.g. co_creation with a GAN, which has no encoder to condition on the
partner's pixels) stops before anything is built or trained, with the reason in one line.
Models of classes not listed here (a user's own) are left to the mode's own checks at setup.
"""
from __future__ import annotations

from omegaconf import DictConfig

from cogen.config import CogenError

FAMILIES = {
    "cogen.models.gan.GAN": "gan",
    "cogen.models.vae.VAE": "vae",
    "cogen.models.two_layer_vae.TwoLayerVAE": "vae2",
    "cogen.models.rl_lm.RLLM": "rl_lm",
    "cogen.models.lm.LMPretrain": "lm_pretrain",
    "cogen.models.reward_model.RewardModel": "reward_model",
    "cogen.models.knowledge_lm.KnowledgeLM": "kg_lm",
    "cogen.models.kge.KGEmbedding": "kge",
}
MODES = {
    "cogen.collab.prompt_guided.PromptGuided": "prompt_guided",
    "cogen.collab.co_creation.CoCreation": "co_creation",
    "cogen.collab.iterative_refinement.IterativeRefinement": "iterative_refinement",
    "cogen.collab.knowledge_guided.KnowledgeGuided": "knowledge_guided",
}
FACTS_READER = "the partner's facts are read by the knowledge-fused LM: use model=kg_lm"
# The reward model's partner labels its data set (data.partner), not a collaboration mode.
PREFERENCES = "its partner compares the pairs of its data set: set collab/partner@data.partner=..., with collab=autonomous"
KGE = "KG embeddings learn from the graph's triples alone; a partner takes part through model=kg_lm"
# mode -> family -> why the pair cannot work (families not listed work with the mode).
UNSUPPORTED = {
    "prompt_guided": {
        "vae2": "the two-layer VAE has no class-conditional version; use model=vae or vae_conv",
        "lm_pretrain": "pre-training reads text only; a partner takes part in model=rl_lm",
        "reward_model": PREFERENCES,
        "kg_lm": "its prompts are the graph's questions; the partner supplies facts (collab=knowledge_guided) and rules (model/fusion)",
        "kge": KGE,
    },
    "co_creation": {
        "gan": "a GAN has no encoder to condition on the partner's pixels; use model=vae or vae_conv",
        "vae2": "completion is built for one stochastic layer; use model=vae or vae_conv",
        "lm_pretrain": "pre-training reads text only; a partner takes part in model=rl_lm",
        "reward_model": PREFERENCES,
        "kg_lm": "its answer is one entity, with no part for a partner to draft; the partner supplies facts (collab=knowledge_guided) and rules (model/fusion)",
        "kge": KGE,
    },
    "iterative_refinement": {
        "lm_pretrain": "pre-training reads text only; a partner takes part in model=rl_lm",
        "reward_model": PREFERENCES,
        "kg_lm": "the knowledge-fused LM learns from the graph's facts; the partner supplies facts (collab=knowledge_guided) and rules (model/fusion)",
        "kge": KGE,
    },
    "knowledge_guided": {**{family: FACTS_READER for family in ("gan", "vae", "vae2", "rl_lm", "lm_pretrain", "kge")},
                         "reward_model": PREFERENCES},
}


def family_of(model: DictConfig) -> str | None:
    return FAMILIES.get(str(model.get("_target_", "")))


def mode_of(collab: DictConfig | None) -> str:
    if not collab or "_target_" not in collab:
        return "autonomous"
    return MODES.get(str(collab._target_), str(collab._target_))


def check_pair(model: DictConfig, collab: DictConfig | None) -> None:
    """Raise a one-line CogenError when `collab` cannot work with `model`'s family."""
    family, mode = family_of(model), mode_of(collab)
    reason = UNSUPPORTED.get(mode, {}).get(family or "")
    if reason:
        raise CogenError(f"collab={mode} does not work with model family {family}: {reason}.")
