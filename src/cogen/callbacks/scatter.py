"""Scatter plots of generated 2D samples over the real modes: a PNG in the run dir every
`every_n_steps` training steps and at the end, and the same image in W&B when it is logging."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only


def scatter_png(samples, means, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.3, c="black", label="generated")
    ax.scatter(means[:, 0], means[:, 1], s=30, marker="x", c="red", label="modes")
    span = float(abs(means).max()) * 1.5 + 0.5
    ax.set(xlim=(-span, span), ylim=(-span, span), aspect="equal", title=title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


class SampleScatter(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 1000):
        self.dirpath, self.every_n_steps = Path(dirpath), every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.fit_loop.total_batch_idx + 1
        if self.every_n_steps and step % self.every_n_steps == 0:
            self.plot(trainer, pl_module, f"step{step:07d}")

    def on_train_end(self, trainer, pl_module) -> None:
        self.plot(trainer, pl_module, "final")

    @rank_zero_only
    def plot(self, trainer, pl_module, name: str) -> None:
        samples = pl_module.generate(pl_module.val_noise).cpu().numpy()
        means = trainer.datamodule.mixture.means.numpy()
        path = scatter_png(samples, means, self.dirpath / f"{name}.png",
                           title=f"{type(pl_module).__name__} pack={pl_module.pack} {name}")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="samples", images=[str(path)], step=trainer.global_step)
