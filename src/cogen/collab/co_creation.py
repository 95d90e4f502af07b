"""collab=co_creation: the partner draws part of an image, the model completes the rest.

At test time the partner edits each held-out image (it keeps, say, the top half); the model
completes the missing pixels by conditioning on the kept ones (`pl_module.complete`, the VAE's
Metropolis-within-Gibbs sampler). The completion keeps the partner's pixels exactly. Logged:
- test/completion_mse, test/completion_bce: error per missing pixel against the true image;
- test/baseline_mse, test/baseline_bce: the same for filling in the training set's mean image,
  the bar the model must clear to help at all;
- test/kept_pixel_error: the largest change to a kept pixel (0 by construction);
- test/completed_images: how many images the partner edited (a spent budget leaves the rest out).
samples/co_creation_test.png (and W&B) shows three rows: the partner's pixels (grey where missing),
the completions, the true images.

A GAN has no encoder to condition on the kept pixels, so this mode refuses it before training, as it
does any model whose `can_complete` is not true.

With the RL-tuned LM (model=rl_lm) the artifact is a text. For each test prompt the partner is
shown a text the frozen reference wrote (the pre-trained LM: what a person of the corpus might
write) and answers with its own draft, the start of the response; the simulated partner keeps the
first half of the words. The policy writes the rest: response_length tokens in all, at least one
after the longest draft of the batch. The draft is kept exactly. Each test prompt is shown
`texts_per_prompt` times (a prompt file may hold a single prompt). Logged:
- test/completion_reward: model.reward of the co-written texts (draft + the policy's completion);
- test/baseline_reward: the same drafts completed by the reference, the untuned model;
- test/completed_texts: how many drafts the partner wrote.
samples/co_creation_test.json holds the first `n_grid` of them.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric

from cogen.callbacks.image_grid import save_grid
from cogen.collab import log_png, text
from cogen.collab.partner import Partner
from cogen.config import CogenError
from cogen.metrics.completion import CompletionError, KeptPixelError


class CoCreation(pl.Callback):
    """partner: who draws the kept part. steps, burn_in: of the completion sampler.
    max_images: complete at most this many test images, or texts (None: all). n_grid: images in the
    PNG, texts in the JSON. texts_per_prompt: the RL-tuned LM's texts co-written per test prompt."""

    def __init__(self, partner: Partner, steps: int = 100, burn_in: int = 20, max_images: int | None = None,
                 n_grid: int = 16, dirpath: str = "samples", seed: int = 0, texts_per_prompt: int = 64):
        if not 0 <= burn_in < steps:
            raise CogenError(f"collab.steps={steps}, collab.burn_in={burn_in}: the sampler needs 0 <= burn_in < steps.")
        if texts_per_prompt < 1:
            raise CogenError(f"collab.texts_per_prompt={texts_per_prompt}: at least 1 text per test prompt.")
        self.partner, self.steps, self.burn_in, self.max_images = partner, steps, burn_in, max_images
        self.n_grid, self.dirpath, self.seed, self.texts_per_prompt = n_grid, Path(dirpath), seed, texts_per_prompt
        self.texts = False   # the RL-tuned LM: the partner drafts texts (set in setup)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.texts = text.is_text_model(pl_module)
        if not self.texts and not getattr(pl_module, "can_complete", False):
            raise CogenError("collab=co_creation needs a model with an encoder to condition on the observed pixels "
                             f"(model=vae or vae_conv); the {type(pl_module).__name__} cannot complete images.")

    @staticmethod
    def mean_image(trainer: pl.Trainer) -> torch.Tensor:
        splits = getattr(trainer.datamodule, "splits", None)
        if not splits or "train" not in splits:
            raise CogenError("collab=co_creation needs an image data set with a training split "
                             "(data=digits, mnist or fashion_mnist).")
        return splits["train"][0].mean(0)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self.completed, self.shown = 0, []
        if self.texts:
            self.model_reward, self.baseline_reward = MeanMetric().to(device), MeanMetric().to(device)
            return
        self.model_error, self.baseline_error = CompletionError().to(device), CompletionError().to(device)
        self.kept_error = KeptPixelError().to(device)
        self.fill = self.mean_image(trainer).to(device)

    @torch.no_grad()
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.texts:
            prompts = [row for row in text.batch_rows(batch) for _ in range(self.texts_per_prompt)]
            self.complete_texts(pl_module, prompts)
            return
        x, labels = batch
        if self.max_images is not None:
            x, labels = x[: self.max_images - self.completed], labels[: self.max_images - self.completed]
        edit = self.partner.edit(x) if len(x) else None
        if edit is None:
            return
        x, labels = x[: len(edit)], labels[: len(edit)]
        y = labels if getattr(pl_module, "num_classes", 0) else None
        completed = pl_module.complete(edit.observed, edit.mask, y=y, steps=self.steps, burn_in=self.burn_in,
                                       generator=self.generator)
        baseline = torch.where(edit.mask, edit.observed, self.fill.expand_as(x))
        self.model_error.update(completed, x, ~edit.mask)
        self.baseline_error.update(baseline, x, ~edit.mask)
        self.kept_error.update(completed, edit.observed, edit.mask)
        self.completed += len(x)
        if sum(len(s[0]) for s in self.shown) < self.n_grid:
            partner_view = torch.where(edit.mask, edit.observed, torch.full_like(x, 0.5))
            self.shown.append((partner_view, completed, x))

    def complete_texts(self, pl_module: pl.LightningModule, prompts: list[list[int]]) -> None:
        """Show the partner the reference's texts, take its drafts, and let the policy and the
        reference each complete them, from the same random draws."""
        if self.max_images is not None:
            prompts = prompts[: self.max_images - self.completed]
        if not prompts:
            return
        tokenizer, length = pl_module.tokenizer, pl_module.hparams.response_length
        examples = text.continue_rows(pl_module, pl_module.reference, prompts, length, self.generator)
        drafts = self.partner.edit([tokenizer.decode(e) for e in examples])
        if not drafts:
            return
        prompts = prompts[: len(drafts)]
        draft_ids = [tokenizer.encode(d) if d else [] for d in drafts]
        rest = max(1, length - max(map(len, draft_ids)))
        seed = int(torch.randint(2**62, (1,), generator=self.generator, device=self.generator.device))
        written = {}
        for name, model in (("policy", pl_module.policy), ("reference", pl_module.reference)):
            same_draws = torch.Generator(device=pl_module.device).manual_seed(seed)
            endings = text.continue_rows(pl_module, model, [p + d for p, d in zip(prompts, draft_ids)], rest, same_draws)
            written[name] = [d + e for d, e in zip(draft_ids, endings)]
        model_reward = text.rewards(pl_module, prompts, written["policy"])
        baseline_reward = text.rewards(pl_module, prompts, written["reference"])
        self.model_reward.update(model_reward)
        self.baseline_reward.update(baseline_reward)
        self.completed += len(drafts)
        for i in range(min(len(drafts), self.n_grid - len(self.shown))):
            self.shown.append({"prompt": tokenizer.decode(prompts[i]), "draft": drafts[i],
                               "completion": tokenizer.decode(written["policy"][i][len(draft_ids[i]):]),
                               "reward": float(model_reward[i]),
                               "baseline_completion": tokenizer.decode(written["reference"][i][len(draft_ids[i]):]),
                               "baseline_reward": float(baseline_reward[i])})

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.texts:
            pl_module.log_dict({"test/completion_reward": self.model_reward.compute(),
                                "test/baseline_reward": self.baseline_reward.compute(),
                                "test/completed_texts": torch.tensor(float(self.completed))})
            if trainer.is_global_zero:
                self.dirpath.mkdir(parents=True, exist_ok=True)
                (self.dirpath / "co_creation_test.json").write_text(json.dumps(self.shown, indent=1))
            return
        model, baseline = self.model_error.compute(), self.baseline_error.compute()
        pl_module.log_dict({
            "test/completion_mse": model["mse"], "test/completion_bce": model["bce"],
            "test/baseline_mse": baseline["mse"], "test/baseline_bce": baseline["bce"],
            "test/kept_pixel_error": self.kept_error.compute(),
            "test/completed_images": torch.tensor(float(self.completed)),
        })
        if trainer.is_global_zero and self.shown:
            rows = [torch.cat([s[i] for s in self.shown])[: self.n_grid] for i in range(3)]
            path = save_grid(torch.cat(rows), len(rows[0]), self.dirpath / "co_creation_test.png")
            log_png(trainer, "co_creation_test", path)
