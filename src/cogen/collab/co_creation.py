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
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from cogen.callbacks.image_grid import save_grid
from cogen.collab import log_png
from cogen.collab.partner import Partner
from cogen.config import CogenError
from cogen.metrics.completion import CompletionError, KeptPixelError


class CoCreation(pl.Callback):
    """partner: who draws the kept part. steps, burn_in: of the completion sampler.
    max_images: complete at most this many test images (None: all). n_grid: images in the PNG."""

    def __init__(self, partner: Partner, steps: int = 100, burn_in: int = 20, max_images: int | None = None,
                 n_grid: int = 16, dirpath: str = "samples", seed: int = 0):
        if not 0 <= burn_in < steps:
            raise CogenError(f"collab.steps={steps}, collab.burn_in={burn_in}: the sampler needs 0 <= burn_in < steps.")
        self.partner, self.steps, self.burn_in, self.max_images = partner, steps, burn_in, max_images
        self.n_grid, self.dirpath, self.seed = n_grid, Path(dirpath), seed

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not getattr(pl_module, "can_complete", False):
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
        self.model_error, self.baseline_error = CompletionError().to(device), CompletionError().to(device)
        self.kept_error = KeptPixelError().to(device)
        self.fill = self.mean_image(trainer).to(device)
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self.completed, self.shown = 0, []

    @torch.no_grad()
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
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

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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
