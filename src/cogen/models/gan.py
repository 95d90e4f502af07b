"""The GAN family: one LightningModule for the standard GAN and PacGAN (Lin et al. 2018),
on 2D mixtures and on images, unconditional or class-conditional (cGAN, Mirza & Osindero 2014).

PacGAN's discriminator judges `pack` samples at once, concatenated along the first feature
dimension (channels, for images); pack=1 is the standard GAN. Both players are updated
simultaneously from one forward pass with the non-saturating loss, as in the paper's code
(ALI's `ali_algorithm`).

Batches: a 2D mixture batch is a tensor of `data.batch_size` packs, already packed by the data
module. An image batch is `(images, labels)` of `data.batch_size` images; the module packs
consecutive images itself (batch_size / pack packs a step, so batch_size must be a multiple of
pack). With `num_classes` > 0 the fakes of a step are drawn for the real batch's labels and
both players see the labels. Image models are scored by FID/KID (`cogen.metrics.domain`): real
val/test images against fakes from the fixed noise with the same labels; 2D models by the
mixture metrics, on generated points only.
"""
from __future__ import annotations

from typing import Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torchmetrics import Metric, MetricCollection

from cogen.config import CogenError
from cogen.nets.global_bn import use_global_batchnorm
from cogen.utils.modes import eval_mode
from cogen.utils.step_logs import writes_step_logs


class GAN(pl.LightningModule):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        noise_dim: int,
        pack: int = 1,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.8, 0.999),
        metrics: Mapping[str, Metric] | None = None,
        seed: int = 0,
        eval_samples: int = 2500,
        val_noise_seed: int = 2333,
        test_noise_seed: int = 2334,
        num_classes: int = 0,
    ):
        super().__init__()
        _check_nets(generator, discriminator, pack, num_classes)
        self.save_hyperparameters(ignore=["generator", "discriminator", "metrics"])
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.noise_dim, self.pack, self.num_classes = noise_dim, pack, num_classes
        self._eval_rows_used = 0  # fixed noise rows this rank has scored in the current val/test epoch
        collection = MetricCollection(dict(metrics or {}))
        self.val_metrics = collection.clone(prefix="val/")
        self.test_metrics = collection.clone(prefix="test/")
        self.register_buffer("val_noise", self._fixed_noise(eval_samples, val_noise_seed), persistent=False)
        self.register_buffer("test_noise", self._fixed_noise(eval_samples, test_noise_seed), persistent=False)
        self._noise = torch.Generator().manual_seed(seed)

    def _fixed_noise(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, self.noise_dim, generator=torch.Generator().manual_seed(seed))

    def setup(self, stage: str) -> None:
        """Under DDP the players' BatchNorm uses the statistics of the global batch, as alone."""
        if self.trainer.world_size > 1:
            use_global_batchnorm(self.generator)
            use_global_batchnorm(self.discriminator)

    def _rank_slice(self, x: torch.Tensor) -> torch.Tensor:
        """This DDP rank's contiguous share of a tensor every rank holds whole (all of it alone)."""
        world = self.trainer.world_size if self._trainer is not None else 1
        return x if world == 1 else x.tensor_split(world)[self.trainer.global_rank]

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        return (torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas),
                torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas))

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """(B*pack, d0, ...) -> (B, pack*d0, ...): what the discriminator judges jointly."""
        return x.reshape(-1, self.pack * x.shape[1], *x.shape[2:])

    def losses(self, real_packs: torch.Tensor, noise: torch.Tensor,
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-saturating losses (d_loss, g_loss) from one generator pass; `labels` (one per
        sample) condition both players of a cGAN, the fakes drawn for the reals' labels.

        d_loss reaches only the discriminator's parameters and g_loss only the generator's
        (it sees the discriminator through detached weights), so one backward of their sum
        gives both players' simultaneous gradients; DDP needs exactly one backward per step.
        """
        cond = () if labels is None else (labels,)
        fake_packs = self.packed(self.generator(noise, *cond))
        d_real, d_fake = self.discriminator(real_packs, *cond), self.discriminator(fake_packs.detach(), *cond)
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        d_fake_for_g = functional_call(self.discriminator, frozen, (fake_packs, *cond))
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        g_loss = F.softplus(-d_fake_for_g).mean()
        return d_loss, g_loss

    def _training_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """(real packs, labels of a cGAN or None, samples in the batch) of a 2D or an image batch."""
        if not isinstance(batch, (tuple, list)):
            return batch, None, batch.shape[0] * self.pack
        images, labels = batch
        if len(images) % self.pack:
            raise CogenError(f"data.batch_size={len(images)} images cannot be packed by model.pack={self.pack}: "
                             f"set data.batch_size to a multiple of {self.pack}.")
        return self.packed(images), (labels if self.num_classes else None), len(images)

    def training_step(self, batch, batch_idx: int):
        opt_d, opt_g = self.optimizers()
        real_packs, labels, samples = self._training_batch(batch)
        # Every rank draws the global batch's noise from one shared stream and keeps its slice:
        # DDP on N processes then trains on the noise of a one-process run (and resumes it).
        world = self.trainer.world_size
        noise = torch.randn(world * samples, self.noise_dim, generator=self._noise)
        noise = self._rank_slice(noise).to(real_packs)
        d_loss, g_loss = self.losses(real_packs, noise, labels)
        opt_d.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        # Simultaneous updates: each player's gradient is taken before either moves.
        self.manual_backward(d_loss + g_loss)
        opt_d.step()
        opt_g.step()
        d_loss, g_loss = d_loss.detach(), g_loss.detach()
        if writes_step_logs(self.trainer):
            self.log_dict({"train/d_loss": d_loss, "train/g_loss": g_loss}, sync_dist=True)  # mean over ranks
        return {"d_loss": d_loss, "g_loss": g_loss}

    def refine(self, images: torch.Tensor, weights: torch.Tensor) -> None:
        """One simultaneous update with samples a partner liked standing in for the real data
        (collab=iterative_refinement, update=filtered; a GAN takes no per-sample weights)."""
        if len(images) % self.pack:
            images = images[: len(images) - len(images) % self.pack]
        opt_d, opt_g = self.optimizers()
        samples = len(images) // self.pack
        noise = torch.randn(samples * self.pack, self.noise_dim, generator=self._noise).to(images)
        d_loss, g_loss = self.losses(self.packed(images), noise, None)
        opt_d.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(d_loss + g_loss)
        opt_d.step()
        opt_g.step()

    @torch.no_grad()
    def generate(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Samples in eval mode (BatchNorm uses its running statistics); labels for a cGAN."""
        with eval_mode(self.generator):
            return self.generator(noise) if labels is None else self.generator(noise, labels)

    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples (images, or 2D points) from fresh noise drawn with `generator`; a
        conditional model (num_classes > 0) needs one label per sample."""
        if self.num_classes and labels is None:
            raise CogenError(f"this GAN is conditional (model.num_classes={self.num_classes}): "
                             f"call sample(n, labels=...) with one class label per sample.")
        if labels is not None:
            if not self.num_classes:
                raise CogenError("this GAN is unconditional (model.num_classes=0): call sample(n) without labels, "
                                 "or train a conditional one (model.num_classes>0, e.g. collab=prompt_guided).")
            labels = torch.as_tensor(labels, device=self.device).long()
            if labels.shape != (n,) or (n and not 0 <= labels.min() <= labels.max() < self.num_classes):
                raise CogenError(f"sample(n={n}, labels=...): give {n} labels in 0..{self.num_classes - 1}, "
                                 f"got shape {list(labels.shape)}.")
        device = generator.device if generator is not None else self.device
        noise = torch.randn(n, self.noise_dim, generator=generator, device=device).to(self.device)
        return self.generate(noise, labels)

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm running statistics before sampling in eval mode."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for buffer in self.generator.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def on_validation_epoch_start(self) -> None:
        self._sync_buffers()
        self._eval_rows_used = 0

    def on_test_epoch_start(self) -> None:
        self._sync_buffers()
        self._eval_rows_used = 0

    # Each rank scores its share of the fixed noise; the metric states are summed across ranks.
    def validation_step(self, batch, batch_idx: int) -> None:
        if isinstance(batch, (tuple, list)):
            return self._score_images(batch, self.val_metrics, self.val_noise, "val")
        self.val_metrics.update(self.generate(self._rank_slice(self.val_noise)))

    def on_validation_epoch_end(self) -> None:
        self.log_dict(_scalars(self.val_metrics.compute()), sync_dist=True)  # already global: silences Lightning's hint
        self.val_metrics.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        if isinstance(batch, (tuple, list)):
            return self._score_images(batch, self.test_metrics, self.test_noise, "test")
        self.test_metrics.update(self.generate(self._rank_slice(self.test_noise)))

    def on_test_epoch_end(self) -> None:
        self.log_dict(_scalars(self.test_metrics.compute()), sync_dist=True)  # already global: silences Lightning's hint
        self.test_metrics.reset()

    def _score_images(self, batch, metrics: MetricCollection, fixed_noise: torch.Tensor, stage: str) -> None:
        """Real images on the real side; as many fakes, from the next rows of this rank's share of
        the fixed noise (and, for a cGAN, the real images' labels), on the fake side."""
        images, labels = batch
        rows = self._rank_slice(fixed_noise)[self._eval_rows_used: self._eval_rows_used + len(images)]
        if len(rows) < len(images):
            raise CogenError(f"model.eval_samples={len(fixed_noise)} fixed noise vectors are fewer than the {stage} "
                             f"images: set model.eval_samples to at least the size of the {stage} split.")
        self._eval_rows_used += len(images)
        fakes = self.generate(rows, labels if self.num_classes else None)
        metrics.update(images, real=True)
        metrics.update(fakes, real=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["noise_rng_state"] = self._noise.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "noise_rng_state" in checkpoint:
            self._noise.set_state(checkpoint["noise_rng_state"])


def _scalars(results: dict) -> dict:
    """Metric results as scalars to log: a (mean, std) pair, such as KID's, becomes `<name>` and `<name>_std`."""
    out = {}
    for name, value in results.items():
        if isinstance(value, (tuple, list)):
            out[name], out[f"{name}_std"] = value
        else:
            out[name] = value
    return out


def _check_nets(generator: nn.Module, discriminator: nn.Module, pack: int, num_classes: int) -> None:
    """Both nets must take the labels of a cGAN (num_classes > 0), and only then; the
    discriminator, when it says, must judge packs of `pack`."""
    if num_classes < 0:
        raise CogenError(f"model.num_classes={num_classes}: use 0 (unconditional) or the number of classes.")
    for name, net in (("generator", generator), ("discriminator", discriminator)):
        takes = getattr(net, "num_classes", 0)
        if takes != num_classes:
            fix = (f"set model.{name}.num_classes=${{model.num_classes}}" if hasattr(net, "num_classes") else
                   "use nets that take labels (model=dcgan), or model.num_classes=0")
            raise CogenError(f"model.num_classes={num_classes}, but model.{name} ({type(net).__name__}) takes "
                             f"{takes} classes: {fix}.")
    if getattr(discriminator, "pack", pack) != pack:
        raise CogenError(f"model.pack={pack}, but model.discriminator judges packs of {discriminator.pack}: "
                         f"set model.discriminator.pack=${{model.pack}}.")
