"""The VAE / IWAE with two stochastic layers of Burda, Grosse & Salakhutdinov (2016), as a
subclass of `cogen.models.vae.VAE`, so that training, evaluation, metrics and checkpoints are
the one-layer model's.

Generative model: p(z2) = N(0, I), p(z1|z2) a diagonal Gaussian (`upper_decoder`), p(x|z1)
read from `decoder` by the likelihood. Recognition model: q(z1|x) (`encoder`), q(z2|z1)
(`upper_encoder`). One draw (z1, z2) ~ q(z1|x) q(z2|z1) has the log weight

    log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1),

and both objectives are built from k such weights: elbo = the mean of the k log weights (the
k-sample average ELBO), iwae = log of the mean of the k weights. The "kl" this model logs is
the sampled estimate -E_q[log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)], averaged over
the same draws (the one-layer model's KL is in closed form; here it has no closed form).

`latent_dim` is the top layer's size (z2): the image callbacks draw z2 ~ p(z2), and
`generate` decodes the mean of p(z1|z2), then the mean image of p(x|z1).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from cogen.config import CogenError
from cogen.models.vae import HALF_LOG_2PI, VAE


def _normal_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)), summed over the last dimension."""
    return (-0.5 * (z - mu).pow(2) * (-logvar).exp() - 0.5 * logvar - HALF_LOG_2PI).sum(-1)


def _draw(mu: torch.Tensor, logvar: torch.Tensor, shape, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A reparameterised draw z = mu + sigma * eps and its log density under N(mu, sigma^2)."""
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + (0.5 * logvar).exp() * eps
    return z, (-0.5 * eps.pow(2) - 0.5 * logvar - HALF_LOG_2PI).sum(-1)


class TwoLayerVAE(VAE):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: nn.Module, latent_dim: int,
                 upper_encoder: nn.Module, upper_decoder: nn.Module, z1_dim: int, **kwargs):
        if kwargs.get("num_classes"):
            raise CogenError(f"model.num_classes={kwargs['num_classes']}: the two-layer VAE is unconditional; "
                             "use model=vae for the class-conditional VAE.")
        with warnings.catch_warnings():   # VAE's save_hyperparameters sees our nets too; they belong in the state dict
            warnings.filterwarnings("ignore", message=r"Attribute 'upper_(en|de)coder' is an instance of `nn.Module`")
            super().__init__(encoder, decoder, likelihood, latent_dim, **kwargs)
        for name in ("upper_encoder", "upper_decoder"):
            self._hparams.pop(name, None)
            self._hparams_initial.pop(name, None)
        dims = {"upper_encoder": (upper_encoder, z1_dim, latent_dim), "upper_decoder": (upper_decoder, latent_dim, z1_dim)}
        for name, (net, d_in, d_out) in dims.items():
            got = (getattr(net, "in_dim", d_in), getattr(net, "out_dim", d_out))
            if got != (d_in, d_out):
                raise CogenError(f"model.{name} maps {got[0]} -> {got[1]} dims, but model.z1_dim={z1_dim} and "
                                 f"model.latent_dim={latent_dim} need {d_in} -> {d_out}; set its in_dim/out_dim to match.")
        self.upper_encoder, self.upper_decoder = upper_encoder, upper_decoder

    # -- the model --------------------------------------------------------------------------
    def sample_terms(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, k: int,
                     generator: torch.Generator | None = None, y: None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """k draws (z1, z2) ~ q(z1|x) q(z2|z1), with (mu, logvar) those of q(z1|x): returns
        log p(x|z1) and log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1), each (k, B).
        `y` is accepted for the VAE's signature; this model has no labels."""
        z1, log_q1 = _draw(mu, logvar, (k, *mu.shape), generator)
        mu2, logvar2 = self.upper_encoder(z1)
        z2, log_q2 = _draw(mu2, logvar2, mu2.shape, generator)
        log_p2 = (-0.5 * z2.pow(2) - HALF_LOG_2PI).sum(-1)
        log_p1 = _normal_log_density(z1, *self.upper_decoder(z2))
        log_px = self.likelihood.log_prob(self.decoder(z1), x)
        return log_px, log_p1 + log_p2 - log_q1 - log_q2

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor, log_prior_ratio: torch.Tensor) -> torch.Tensor:
        """No closed form for two layers: the sampled KL, -mean over draws of the log prior ratio."""
        return -log_prior_ratio.mean(0)

    # -- images: the top layer z2 is the latent the callbacks see ---------------------------
    @torch.no_grad()
    def generate(self, z: torch.Tensor, y: None = None) -> torch.Tensor:
        """Mean images for top latents z2 given by the caller, through the mean of p(z1|z2)."""
        return self.likelihood.mean(self.decoder(self.upper_decoder(z)[0]))

    @torch.no_grad()
    def _top_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z2|z1) at the mean of q(z1|x)."""
        return self.upper_encoder(self.encode(x)[0])

    @torch.no_grad()
    def active_dims(self, x: torch.Tensor, n: int, y: None = None) -> torch.Tensor:
        """The n top-layer dimensions with the largest average KL(q(z2|E[z1|x]) || N(0, 1))."""
        mu, logvar = self._top_posterior(x)
        per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(0)
        return per_dim.argsort(descending=True)[:n]

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, dims: torch.Tensor, values: torch.Tensor, y: None = None) -> torch.Tensor:
        """As `VAE.traverse`, sweeping top-layer dimensions around the posterior mean of z2."""
        mu, _ = self._top_posterior(x[:1])
        z = mu.repeat(len(dims) * len(values), 1)
        rows = torch.arange(len(dims), device=z.device).repeat_interleave(len(values))
        z[torch.arange(len(z), device=z.device), dims.to(z.device)[rows]] = values.to(z).repeat(len(dims))
        return self.generate(z)
