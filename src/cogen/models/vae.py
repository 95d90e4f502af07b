"""The VAE family: one LightningModule for the VAE (Kingma & Welling 2014), the beta-VAE
weighting of its KL term, and the IWAE (Burda, Grosse & Salakhutdinov 2016).

q(z|x) is a diagonal Gaussian from the encoder, p(z) = N(0, I), and p(x|z) is read from
the decoder's output by the likelihood (Bernoulli, or Gaussian). With z_i = mu + sigma * eps_i
(the reparameterisation) and log w_i = log p(x|z_i) + beta * (log p(z_i) - log q(z_i|x)):

- objective="elbo": maximise (1/k) sum_i log p(x|z_i) - beta * KL(q(z|x) || p(z)), the KL in
  closed form (k=1, beta=1 is the VAE of Kingma & Welling);
- objective="iwae": maximise log (1/k) sum_i w_i, the importance-weighted bound (Burda et al.).

Every epoch logs, per image in nats: ELBO, reconstruction error -E_q log p(x|z), KL, and on
the validation and test sets the IWAE estimate of log p(x) with `val_k` / `test_k` samples
(k=5000 is the paper's test protocol), drawn from a fixed seed so a checkpoint scores the same
every time.

With `num_classes` > 0 it is the conditional VAE (Sohn, Lee & Yan 2015): q(z|x,y) and p(x|z,y)
read the one-hot label y, every bound above is of log p(x|y), and `sample(n, labels)` draws
images of the requested classes (collab=prompt_guided sets num_classes from the data).
`complete` fills in the missing pixels of partly observed images (collab=co_creation).
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import nn

from cogen.config import CogenError
from cogen.metrics.elbo import ELBO, IWAELogLikelihood, KLDivergence, ReconstructionError, iwae_bound
from cogen.utils.step_logs import writes_step_logs

OBJECTIVES = ("elbo", "iwae")
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _metrics(with_log_likelihood: bool) -> nn.ModuleDict:
    metrics = {"elbo": ELBO(), "recon": ReconstructionError(), "kl": KLDivergence()}
    if with_log_likelihood:
        metrics["log_likelihood"] = IWAELogLikelihood()
    return nn.ModuleDict(metrics)


class VAE(pl.LightningModule):
    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        latent_dim: int,
        objective: str = "elbo",
        k: int = 1,
        beta: float = 1.0,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-4,
        val_k: int = 100,
        test_k: int = 5000,
        k_chunk: int = 500,
        eval_seed: int = 2333,
        num_classes: int = 0,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise CogenError(f"model.objective={objective!r}: use 'elbo' (the VAE) or 'iwae' (Burda et al. 2016).")
        for name, value in (("k", k), ("val_k", val_k), ("test_k", test_k), ("k_chunk", k_chunk)):
            if value < 1:
                raise CogenError(f"model.{name}={value}: the number of importance samples must be at least 1.")
        self.save_hyperparameters(ignore=["encoder", "decoder", "likelihood"])
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.train_metrics = _metrics(with_log_likelihood=objective == "iwae")
        self.val_metrics = _metrics(with_log_likelihood=True)
        self.test_metrics = _metrics(with_log_likelihood=True)
        self._eval_noise: torch.Generator | None = None

    # -- the model --------------------------------------------------------------------------
    def labels_for(self, y: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """The labels the nets read: None for an unconditional VAE; for a conditional one, `y`,
        or when no class is given the classes in turn (0, 1, ..., K-1, 0, ...)."""
        if not self.num_classes:
            if y is not None:
                raise CogenError("model.num_classes=0: this VAE is unconditional and takes no class labels; "
                                 "compose it with collab=prompt_guided to make it class-conditional.")
            return None
        return torch.arange(n, device=self.device) % self.num_classes if y is None else y

    def _enc(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x) if y is None else self.encoder(x, y)

    def _dec(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(z) if y is None else self.decoder(z, y)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x[,y]), each (B, latent_dim)."""
        return self._enc(x, self.labels_for(y, len(x)))

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, exp(logvar)) || N(0, I)) per example, in closed form."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor, log_prior_ratio: torch.Tensor) -> torch.Tensor:
        """The KL term of the ELBO per example: here in closed form; a model without one (e.g. two
        stochastic layers) overrides it with the sampled -mean(log p(z) - log q(z|x))."""
        return self.kl(mu, logvar)

    def sample_terms(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, k: int,
                     generator: torch.Generator | None = None,
                     y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """k reparameterised draws z_i ~ q(z|x): returns log p(x|z_i) and log p(z_i) - log q(z_i|x), each (k, B)."""
        eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * logvar).exp() * eps
        log_px_z = self.likelihood.log_prob(self._dec(z, self.labels_for(y, len(x))), x)
        log_pz = (-0.5 * z.pow(2) - HALF_LOG_2PI).sum(-1)
        log_qz = (-0.5 * eps.pow(2) - 0.5 * logvar - HALF_LOG_2PI).sum(-1)
        return log_px_z, log_pz - log_qz

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, k: int, chunk: int | None = None,
                    generator: torch.Generator | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i|x) for k draws per example, (k, B); drawn `chunk` at a time."""
        mu, logvar = self.encode(x, y)
        chunk = chunk or self.hparams.k_chunk
        parts = []
        for start in range(0, k, chunk):
            log_px_z, log_prior_ratio = self.sample_terms(x, mu, logvar, min(chunk, k - start), generator, y)
            parts.append(log_px_z + log_prior_ratio)
        return torch.cat(parts)

    def bounds(self, x: torch.Tensor, k: int | None = None, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training objective and its parts, per example (B,), from k draws (with gradients)."""
        k = k or self.hparams.k
        mu, logvar = self.encode(x, y)
        log_px_z, log_prior_ratio = self.sample_terms(x, mu, logvar, k, y=y)
        recon, kl, beta = -log_px_z.mean(0), self.kl_term(mu, logvar, log_prior_ratio), self.hparams.beta
        out = {"recon": recon, "kl": kl, "elbo": -recon - kl}
        if self.hparams.objective == "iwae":
            out["log_weights"] = log_px_z + beta * log_prior_ratio
            out["bound"] = iwae_bound(out["log_weights"], dim=0)
        else:
            out["bound"] = -recon - beta * kl
        return out

    # -- training ---------------------------------------------------------------------------
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas),
                                eps=self.hparams.adam_eps)

    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images, and the labels a conditional VAE reads (None for an unconditional one)."""
        x, labels = batch
        return x, labels if self.num_classes else None

    def training_step(self, batch, batch_idx: int):
        x, y = self._split(batch)
        out = self.bounds(x, y=y)
        loss = -out["bound"].mean()
        metrics = self.train_metrics
        for name in ("elbo", "recon", "kl"):
            metrics[name].update(out[name])
        if "log_likelihood" in metrics:
            metrics["log_likelihood"].update(out["log_weights"])
        if writes_step_logs(self.trainer):
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False)
        return loss

    def refine(self, images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """One optimiser step on images a partner liked (collab=iterative_refinement): the weighted
        mean of the training bound, so weight-1 samples count as training data would."""
        optimizer = self.trainer.optimizers[0]
        optimizer.zero_grad(set_to_none=True)
        bound = self.bounds(images.clamp(0, 1))["bound"]
        loss = -(weights * bound).sum() / weights.sum().clamp_min(1e-8)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        # Logged once an epoch, not every step: Lightning moves every logged Metric each time it is logged.
        self.log_dict({self._name("train", name): m for name, m in self.train_metrics.items()}, on_epoch=True)

    def _name(self, stage: str, metric: str) -> str:
        # In training, the IWAE metric is the k-sample training bound, not a likelihood estimate.
        return f"{stage}/iwae_bound" if (stage, metric) == ("train", "log_likelihood") else f"{stage}/{metric}"

    # -- evaluation -------------------------------------------------------------------------
    def _start_eval(self) -> None:
        self._eval_noise = torch.Generator(device=self.device).manual_seed(self.hparams.eval_seed)

    on_validation_epoch_start = _start_eval
    on_test_epoch_start = _start_eval

    @torch.no_grad()
    def _eval_step(self, batch, metrics: nn.ModuleDict, k: int, stage: str) -> None:
        x, y = self._split(batch)
        mu, logvar = self.encode(x, y)
        log_px_z, log_prior_ratio = self.sample_terms(x, mu, logvar, 1, self._eval_noise, y)
        recon, kl = -log_px_z[0], self.kl_term(mu, logvar, log_prior_ratio)
        metrics["elbo"].update(-recon - kl)
        metrics["recon"].update(recon)
        metrics["kl"].update(kl)
        metrics["log_likelihood"].update(self.log_weights(x, k, generator=self._eval_noise, y=y))
        self.log_dict({f"{stage}/{name}": m for name, m in metrics.items()}, on_step=False, on_epoch=True,
                      batch_size=len(x))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, self.hparams.val_k, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, self.hparams.test_k, "test")

    # -- images -----------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's mean image at the posterior mean of each input."""
        y = self.labels_for(y, len(x))
        return self.likelihood.mean(self._dec(self.encode(x, y)[0], y))

    @torch.no_grad()
    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean images of p(x|z[,y]) for latents z ~ p(z) given by the caller, (n, latent_dim)."""
        return self.likelihood.mean(self._dec(z, self.labels_for(y, len(z))))

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W): mean images of p(x|z,y) at z ~ N(0, I), y = `labels`."""
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return self.generate(z, labels)

    @torch.no_grad()
    def active_dims(self, x: torch.Tensor, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """The n latent dimensions with the largest average KL on x (the ones the model uses)."""
        mu, logvar = self.encode(x, y)
        per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(0)
        return per_dim.argsort(descending=True)[:n]

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, dims: torch.Tensor, values: torch.Tensor,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean images as one latent dimension at a time sweeps `values`, the others held at the
        posterior mean of the single image x (and its class): (len(dims) * len(values), C, H, W), row by row."""
        y = self.labels_for(y, 1)
        y = None if y is None else y[:1]
        mu, _ = self.encode(x[:1], y)
        z = mu.repeat(len(dims) * len(values), 1)
        rows = torch.arange(len(dims), device=z.device).repeat_interleave(len(values))
        z[torch.arange(len(z), device=z.device), dims.to(z.device)[rows]] = values.to(z).repeat(len(dims))
        return self.generate(z, None if y is None else y.expand(len(z)))

    # -- completion (collab=co_creation) -----------------------------------------------------
    @property
    def can_complete(self) -> bool:
        """Whether `complete` is exact for this model: its sampler assumes this class's latents
        (p(z) = N(0, I), one Gaussian q(z|x)); a subclass with others must override `complete` too."""
        same = type(self).sample_terms is VAE.sample_terms and type(self).encode is VAE.encode
        return same or type(self).complete is not VAE.complete

    def _log_weight_at(self, x: torch.Tensor, z: torch.Tensor, params: torch.Tensor, mu: torch.Tensor,
                       logvar: torch.Tensor) -> torch.Tensor:
        """log p(x|z) + log p(z) - log q(z|x) at given latents z (B, latent_dim), params = decoder(z)."""
        log_pz = (-0.5 * z.pow(2) - HALF_LOG_2PI).sum(-1)
        log_qz = (-0.5 * (z - mu).pow(2) / logvar.exp() - 0.5 * logvar - HALF_LOG_2PI).sum(-1)
        return self.likelihood.log_prob(params, x) + log_pz - log_qz

    @torch.no_grad()
    def complete(self, observed: torch.Tensor, mask: torch.Tensor, y: torch.Tensor | None = None, steps: int = 100,
                 burn_in: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill in the pixels where `mask` is False, conditioning on the observed ones (mask True).

        Metropolis-within-Gibbs (Mattei & Frellsen 2018), an exact MCMC sampler of p(z, x_miss | x_obs)
        (the pseudo-Gibbs sampler of Rezende et al. 2014 plus an accept/reject step): propose
        z' ~ q(z|x), accept it with the ratio of importance weights p(x,z')q(z|x) / (p(x,z)q(z'|x)),
        then redraw the missing pixels from p(x_miss|z). The completion is the mean of p(x_miss|z)
        over the steps after `burn_in`, an estimate of E[x_miss | x_obs]. Observed pixels are
        returned bit for bit: the result is where(mask, observed, completion).
        """
        if not self.can_complete:
            raise CogenError(f"{type(self).__name__} cannot complete images: complete() assumes one layer of latents.")
        if not 0 <= burn_in < steps:
            raise ValueError(f"complete(steps={steps}, burn_in={burn_in}): need 0 <= burn_in < steps")
        mask = mask.bool().expand_as(observed)
        y = self.labels_for(y, len(observed))

        def draw_z(mu, logvar):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            return mu + (0.5 * logvar).exp() * eps

        x = torch.where(mask, observed, torch.full_like(observed, 0.5))
        z = draw_z(*self._enc(x, y))
        params, total = self._dec(z, y), torch.zeros_like(observed)
        for step in range(steps):
            mu, logvar = self._enc(x, y)
            proposal = draw_z(mu, logvar)
            proposal_params = self._dec(proposal, y)
            log_ratio = (self._log_weight_at(x, proposal, proposal_params, mu, logvar)
                         - self._log_weight_at(x, z, params, mu, logvar))
            u = torch.rand(log_ratio.shape, generator=generator, device=x.device, dtype=x.dtype)
            accept = u.log() < log_ratio
            z = torch.where(accept[:, None], proposal, z)
            params = torch.where(accept.view(-1, *[1] * (params.dim() - 1)), proposal_params, params)
            x = torch.where(mask, observed, self.likelihood.sample(params, generator))
            if step >= burn_in:
                total += self.likelihood.mean(params)
        completed = torch.where(mask, observed, total / (steps - burn_in))
        if not torch.equal(completed[mask], observed[mask]):
            raise RuntimeError("complete() changed an observed pixel")
        return completed
