"""collab=prompt_guided: the partner asks for classes, a class-conditional model draws them.

At the test, the mode asks its partner for `n_samples` classes, draws one image per request with
`pl_module.sample(n, labels=..., generator=...)` (from a fixed seed, so that checkpoints compare),
and logs `test/prompt_adherence`: the share of the images that the frozen domain classifier
assigns to the requested class. Validation epochs measure the same on the mode's own requests
(every class in turn): watching training costs the partner nothing. It writes
samples/prompt_guided_<stage>.png, one row per requested class.

A partner that stops answering (a spent budget) leaves the choice to the mode: it requests the
missing classes itself, every class in turn, and says so once.

With a `target` (the class the partner wants, as in collab=iterative_refinement), it also logs
`test/goal`, the share of the images judged `target`, and `test/answers`, the requests the partner made.

With the RL-tuned LM (model=rl_lm) the conditions are the data's prompts (data.prompts or the
lines of data.path): the partner chooses which prompt, by its index, each of the `n_samples`
responses answers. The policy writes one response per request, and `<stage>/prompt_reward` is
model.reward's mean over them; samples/prompt_guided_<stage>.json holds the first of them. With a
reward that reads the prompt (model/reward=echo), this measures how well the policy follows the
prompts the partner picks.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn

from cogen.callbacks.image_grid import save_grid
from cogen.collab import log_png, text
from cogen.collab.partner import Partner
from cogen.config import CogenError
from cogen.metrics.adherence import PromptAdherence
from cogen.utils.modes import eval_mode

log = logging.getLogger(__name__)


class PromptGuided(pl.Callback):
    """partner: who asks for classes (or prompts). classifier: builds the domain classifier (the
    judge of images). num_classes: the data set's (None: it has no labels). n_samples: requests per
    evaluation. per_class: images per row of the PNG grid."""

    def __init__(self, partner: Partner, classifier: Callable[[], nn.Module], num_classes: int | None = None,
                 n_samples: int = 1000, per_class: int = 10, dirpath: str = "samples", seed: int = 0,
                 target: int | None = None):
        if n_samples < 1:
            raise CogenError(f"collab.n_samples={n_samples}: the number of requests to judge must be at least 1.")
        self.partner, self.classifier, self.num_classes, self.n_samples = partner, classifier, num_classes, n_samples
        self.per_class, self.dirpath, self.seed, self.target = per_class, Path(dirpath), seed, target
        self.answers, self.adherence, self.prompt_data = 0, None, None   # prompt_data: model=rl_lm's datamodule
        self._told = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if text.is_text_model(pl_module):
            self._setup_text(trainer)
            return
        if not self.num_classes:
            raise CogenError("collab=prompt_guided needs class labels, but this data set has no data.num_classes "
                             "(e.g. data=ring8): use data=digits, mnist or fashion_mnist.")
        if self.target is not None and not 0 <= self.target < self.num_classes:
            raise CogenError(f"collab.target={self.target}: not a class of this data set (0..{self.num_classes - 1}).")
        if self.adherence is None:
            with torch.random.fork_rng(devices=[]):   # building (or training) the judge leaves the run's draws alone
                self.adherence = PromptAdherence(self.classifier())
        classes = getattr(pl_module, "num_classes", None)
        if classes != self.num_classes or not callable(getattr(pl_module, "sample", None)):
            raise CogenError(f"collab=prompt_guided needs a class-conditional model with {self.num_classes} classes, "
                             f"but this {type(pl_module).__name__} has num_classes={classes}: leave model.num_classes "
                             f"unset (it follows the data) and use model=vae, vae_conv or a GAN that takes num_classes.")

    def _setup_text(self, trainer: pl.Trainer) -> None:
        if self.target is not None:
            raise CogenError("collab.target is a class of an image data set; the RL-tuned LM's partner chooses among "
                             "the data's prompts (collab.partner.bias: the index of the one it always asks for).")
        data = trainer.datamodule
        if not (hasattr(data, "texts") and hasattr(data, "ids")):
            raise CogenError("collab=prompt_guided with model=rl_lm chooses among the data's prompts: use "
                             "data=markov_prompts (data.prompts=[...] or data.path=<one prompt per line>).")
        self.prompt_data, self.num_classes = data, len(data.texts)   # a prompt's index is its class

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.evaluate(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module, "test")

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> float:
        if self.prompt_data is not None:
            return self.prompt_text(trainer, pl_module, stage)
        return self.prompt(trainer, pl_module, stage)

    def requests(self, ask_partner: bool = True) -> torch.Tensor:
        """The partner's classes, topped up by the mode (every class in turn) where it gave none."""
        answers = self.partner.ask_condition(self.num_classes, self.n_samples) if ask_partner else None
        got = 0 if answers is None else len(answers)
        self.answers += got
        if ask_partner and got < self.n_samples and not self._told:
            log.info("the partner answered %d of %d class requests (budget spent): prompt_guided requests the "
                     "rest itself, every class in turn", got, self.n_samples)
            self._told = True
        own = torch.arange(got, self.n_samples) % self.num_classes
        return own if answers is None else torch.cat([answers.long().cpu(), own])

    @torch.no_grad()
    def prompt(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> float:
        requested = self.requests(ask_partner=stage == "test").to(pl_module.device)
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        with eval_mode(pl_module):
            images = pl_module.sample(len(requested), labels=requested, generator=generator)
        self.adherence.to(pl_module.device).reset()
        self.adherence.update(images, requested)
        adherence = self.adherence.compute()
        pl_module.log(f"{stage}/prompt_adherence", adherence)
        if self.target is not None and stage == "test":
            self.adherence.reset()
            self.adherence.update(images, torch.full_like(requested, self.target))
            pl_module.log_dict({"test/goal": self.adherence.compute(), "test/answers": float(self.answers)})
        if trainer.is_global_zero:
            path = save_grid(self.rows(images, requested), self.per_class, self.dirpath / f"prompt_guided_{stage}.png")
            log_png(trainer, f"prompt_guided_{stage}", path)
        return float(adherence)

    @torch.no_grad()
    def prompt_text(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> float:
        """One response of the policy to each requested prompt, scored by model.reward."""
        requested = self.requests(ask_partner=stage == "test").tolist()
        prompts = [self.prompt_data.ids[i] for i in requested]
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        with eval_mode(pl_module):
            responses = text.continue_rows(pl_module, pl_module.policy, prompts, pl_module.hparams.response_length,
                                           generator)
        rewards = text.rewards(pl_module, prompts, responses)
        pl_module.log(f"{stage}/prompt_reward", rewards.mean())
        if stage == "test":
            pl_module.log("test/answers", float(self.answers))
        if trainer.is_global_zero:
            decode = pl_module.tokenizer.decode
            rows = [{"prompt": self.prompt_data.texts[i], "response": decode(r), "reward": float(v)}
                    for i, r, v in list(zip(requested, responses, rewards.tolist()))[: self.per_class * self.num_classes]]
            self.dirpath.mkdir(parents=True, exist_ok=True)
            (self.dirpath / f"prompt_guided_{stage}.json").write_text(json.dumps(rows, indent=1))
        return float(rewards.mean())

    def rows(self, images: torch.Tensor, requested: torch.Tensor) -> torch.Tensor:
        """Up to `per_class` images of each requested class, one class per row (blank cells pad a row)."""
        rows = []
        for c in requested.unique().tolist():
            row = images[requested == c][: self.per_class]
            blank = torch.ones(self.per_class - len(row), *images.shape[1:], device=images.device)
            rows.append(torch.cat([row, blank]))
        return torch.cat(rows)
