"""The GAN family: one LightningModule for the standard GAN and PacGAN (Lin et al. 2018).

PacGAN's discriminator judges `pack` samples at once, concatenated along the first feature
dimension; pack=1 is the standard GAN. Both players are updated simultaneously from one
forward pass with the non-saturating loss, as in the paper's code (ALI's `ali_algorithm`).
"""
from __future__ import annotations

from typing import Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torchmetrics import Metric, MetricCollection

from cogen.nets.global_bn import use_global_batchnorm


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
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator", "metrics"])
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.noise_dim, self.pack = noise_dim, pack
        collection = MetricCollection(dict(metrics or {}))
        self.val_metrics = collection.clone(prefix="val/")
        self.test_metrics = collection.clone(prefix="test/")
        self.register_buffer("val_noise", self._fixed_noise(eval_samples, val_noise_seed), persistent=False)
        self.register_buffer("test_noise", self._fixed_noise(eval_samples, test_noise_seed), persistent=False)
        self._noise = torch.Generator().manual_seed(seed)

    def _fixed_noise(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, self.noise_dim, generator=torch.Generator().manual_seed(seed))

    def setup(self, stage: str) -> None:
        """Under DDP the generator's BatchNorm uses the statistics of the global batch, as alone."""
        if self.trainer.world_size > 1:
            use_global_batchnorm(self.generator)

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

    def losses(self, real_packs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-saturating losses (d_loss, g_loss) from one generator pass.

        d_loss reaches only the discriminator's parameters and g_loss only the generator's
        (it sees the discriminator through detached weights), so one backward of their sum
        gives both players' simultaneous gradients; DDP needs exactly one backward per step.
        """
        fake_packs = self.packed(self.generator(noise))
        d_real, d_fake = self.discriminator(real_packs), self.discriminator(fake_packs.detach())
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        d_fake_for_g = functional_call(self.discriminator, frozen, (fake_packs,))
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        g_loss = F.softplus(-d_fake_for_g).mean()
        return d_loss, g_loss

    def training_step(self, real_packs: torch.Tensor, batch_idx: int):
        opt_d, opt_g = self.optimizers()
        # Every rank draws the global batch's noise from one shared stream and keeps its slice:
        # DDP on N processes then trains on the noise of a one-process run (and resumes it).
        world = self.trainer.world_size
        noise = torch.randn(world * real_packs.shape[0] * self.pack, self.noise_dim, generator=self._noise)
        noise = self._rank_slice(noise).to(real_packs)
        d_loss, g_loss = self.losses(real_packs, noise)
        opt_d.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        # Simultaneous updates: each player's gradient is taken before either moves.
        self.manual_backward(d_loss + g_loss)
        opt_d.step()
        opt_g.step()
        d_loss, g_loss = d_loss.detach(), g_loss.detach()
        if self._logs_this_step():
            self.log_dict({"train/d_loss": d_loss, "train/g_loss": g_loss}, sync_dist=True)  # mean over ranks
        return {"d_loss": d_loss, "g_loss": g_loss}

    def _logs_this_step(self) -> bool:
        """Lightning writes step logs only every `log_every_n_steps`; `self.log` on the other
        steps costs about 1 ms/step for nothing (half of the framework's overhead on CPU)."""
        n = self.trainer.log_every_n_steps
        return bool(n) and ((self.trainer.fit_loop.total_batch_idx + 1) % n == 0 or self.trainer.should_stop)

    @torch.no_grad()
    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        """Samples in eval mode (BatchNorm uses its running statistics)."""
        was_training = self.generator.training
        self.generator.eval()
        samples = self.generator(noise)
        self.generator.train(was_training)
        return samples

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm running statistics before sampling in eval mode."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for buffer in self.generator.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def on_validation_epoch_start(self) -> None:
        self._sync_buffers()

    def on_test_epoch_start(self) -> None:
        self._sync_buffers()

    # Each rank scores its share of the fixed noise; the metric states are summed across ranks.
    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_metrics.update(self.generate(self._rank_slice(self.val_noise)))

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), sync_dist=True)  # already global: silences Lightning's hint
        self.val_metrics.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        self.test_metrics.update(self.generate(self._rank_slice(self.test_noise)))

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)  # already global: silences Lightning's hint
        self.test_metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["noise_rng_state"] = self._noise.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "noise_rng_state" in checkpoint:
            self._noise.set_state(checkpoint["noise_rng_state"])
