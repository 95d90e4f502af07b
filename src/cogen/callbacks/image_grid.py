"""PNG grids of a generative image model: samples, and for a VAE also reconstructions (inputs
above their reconstructions) and latent traversals (one row per latent dimension, the most used
first). Written under `dirpath` every `every_n_epochs` validation epochs and at the end of
training, and logged to W&B with `WandbLogger.log_image` when a WandbLogger is present.

Samples come from the model's `sample(n, labels, generator)` (GAN and VAE), or else from
`generate(z)` with z ~ N(0, I) of `latent_dim`; a conditional model (`hparams.num_classes` > 0)
gets labels 0, 1, ... so that each grid column is one class, and reads the reference images'
own labels (`y=`) for reconstructions and traversals. Reconstructions need `reconstruct(x)`,
traversals `active_dims(x, n)` and `traverse(x, dims, values)`; what a model lacks is skipped.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from cogen.utils.modes import eval_mode


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1, min_cell: int = 28) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> an (rows*H', nrow*W'[, 3]) float array; small images are
    enlarged by an integer factor (nearest neighbour) to at least `min_cell` pixels."""
    x = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    scale = max(1, math.ceil(min_cell / max(h, w)))
    x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    h, w = h * scale, w * scale
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    grid = grid.numpy()
    return grid[0] if c == 1 else grid[:3].transpose(1, 2, 0)


def save_grid(images: torch.Tensor, nrow: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(images, nrow)
    plt.imsave(path, grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0)
    return path


class ImageGrid(pl.Callback):
    def __init__(self, dirpath: str, every_n_epochs: int = 1, n_images: int = 64, n_traversal_dims: int = 8,
                 traversal_steps: int = 9, traversal_range: float = 3.0, seed: int = 0):
        self.dirpath, self.every_n_epochs = Path(dirpath), every_n_epochs
        self.n_images, self.n_traversal_dims = n_images, n_traversal_dims
        self.traversal_steps, self.traversal_range, self.seed = traversal_steps, traversal_range, seed

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.every_n_epochs:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.plot(trainer, pl_module, f"epoch{trainer.current_epoch:04d}")

    def on_train_end(self, trainer, pl_module) -> None:
        self.plot(trainer, pl_module, "final")

    def _reference_images(self, trainer) -> tuple[torch.Tensor, torch.Tensor]:
        """The first validation images and their labels, the same every time."""
        dm = trainer.datamodule
        images, labels = dm.splits["val"] if getattr(dm, "splits", None) else next(iter(trainer.val_dataloaders))
        return images[: self.n_images], labels[: self.n_images]

    @rank_zero_only
    def plot(self, trainer, pl_module, name: str) -> None:
        with eval_mode(pl_module):
            images, labels = self._reference_images(trainer)
            paths = self.grids(pl_module, images.to(pl_module.device), name, labels.to(pl_module.device))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for key, path in paths.items():
                    logger.log_image(key=key, images=[str(path)], step=trainer.global_step)

    def grids(self, model, x: torch.Tensor, name: str, y: torch.Tensor | None = None) -> dict[str, Path]:
        nrow = max(1, math.isqrt(len(x)))
        paths = {}
        cond = {"y": y} if y is not None and _num_classes(model) else {}  # a conditional model reads x's labels
        if hasattr(model, "reconstruct"):
            recon = model.reconstruct(x, **cond)
            pairs = torch.stack([x, recon], dim=1)  # each input above its reconstruction
            pairs = torch.cat([pairs[i: i + nrow].transpose(0, 1).flatten(0, 1) for i in range(0, len(x), nrow)])
            paths["reconstructions"] = save_grid(pairs, nrow, self.dirpath / f"reconstructions_{name}.png")
        samples, sample_nrow = self.samples(model, len(x), nrow)
        paths["samples"] = save_grid(samples.to(x), sample_nrow, self.dirpath / f"samples_{name}.png")
        if hasattr(model, "traverse") and self.n_traversal_dims:
            dims = model.active_dims(x, min(self.n_traversal_dims, model.latent_dim))
            values = torch.linspace(-self.traversal_range, self.traversal_range, self.traversal_steps)
            paths["traversals"] = save_grid(model.traverse(x, dims, values, **cond), self.traversal_steps,
                                            self.dirpath / f"traversals_{name}.png")
        return paths

    def samples(self, model, n: int, nrow: int) -> tuple[torch.Tensor, int]:
        """(n samples from the callback's seed, images per grid row); a conditional model's
        grid has one column per class."""
        if not hasattr(model, "sample"):
            z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(self.seed)).to(model.device)
            return model.generate(z), nrow
        seeded = torch.Generator(device=model.device).manual_seed(self.seed)
        classes = _num_classes(model)
        if not classes:
            return model.sample(n, generator=seeded), nrow
        n = max(classes, n - n % classes)
        labels = torch.arange(n, device=model.device) % classes
        return model.sample(n, labels=labels, generator=seeded), classes


def _num_classes(model) -> int:
    return int(getattr(model, "hparams", {}).get("num_classes", 0) or 0)
