"""Encoders and decoders of the VAE family, as plain nn.Modules.

An encoder maps images (B, C, H, W) to the mean and log-variance of a diagonal Gaussian
q(z|x), each (B, latent_dim). A decoder maps latents (..., latent_dim), with any leading
dimensions (e.g. k importance samples), to the parameters of p(x|z), (..., C, H, W), which
the likelihood in `cogen.nets.likelihoods` interprets (Bernoulli logits, Gaussian means).

- MLPEncoder / MLPDecoder: the MLP of Kingma & Welling (2014) and Burda et al. (2016):
  deterministic tanh layers (Burda et al.'s one-stochastic-layer MNIST model: 784-200-200-50).
- ConvEncoder / ConvDecoder: a small conv net of stride-2 4x4 convolutions (8x8 and 28x28 alike).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

Activation = Callable[[], nn.Module]


def _mlp(sizes: Sequence[int], activation: Activation) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, in_shape: list[int], latent_dim: int, hidden: list[int] = (200, 200), activation: Activation = nn.Tanh):
        super().__init__()
        self.body = _mlp([math.prod(in_shape), *hidden], activation)
        self.head = nn.Linear(([math.prod(in_shape), *hidden])[-1], 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x.flatten(1))).chunk(2, dim=-1)
        return mu, logvar


class MLPDecoder(nn.Module):
    def __init__(self, latent_dim: int, out_shape: list[int], hidden: list[int] = (200, 200), activation: Activation = nn.Tanh):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.body = _mlp([latent_dim, *hidden], activation)
        self.head = nn.Linear(([latent_dim, *hidden])[-1], math.prod(out_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z)).view(*z.shape[:-1], *self.out_shape)


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions (each halves the height and width), then a linear head."""

    def __init__(self, in_shape: list[int], latent_dim: int, channels: list[int] = (32, 64), activation: Activation = nn.ReLU):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_shape[0]
        for c in channels:
            layers += [nn.Conv2d(width, c, kernel_size=4, stride=2, padding=1), activation()]
            width = c
        self.body = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            features = self.body(torch.zeros(1, *in_shape)).shape[1]
        self.head = nn.Linear(features, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """A linear layer to a (channels[0], H/2^n, W/2^n) map, then stride-2 4x4 transposed
    convolutions that double it back; the output is cropped to `out_shape`."""

    def __init__(self, latent_dim: int, out_shape: list[int], channels: list[int] = (64, 32), activation: Activation = nn.ReLU):
        super().__init__()
        self.out_shape = tuple(out_shape)
        n = len(channels)
        self.start = (channels[0], math.ceil(out_shape[1] / 2 ** n), math.ceil(out_shape[2] / 2 ** n))
        self.head = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start)), activation())
        layers: list[nn.Module] = []
        for i, c in enumerate(channels):
            last = i == n - 1
            out = out_shape[0] if last else channels[i + 1]
            layers.append(nn.ConvTranspose2d(c, out, kernel_size=4, stride=2, padding=1))
            if not last:
                layers.append(activation())
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).view(-1, *self.start)
        x = self.body(h)[..., : self.out_shape[1], : self.out_shape[2]]
        return x.reshape(*lead, *self.out_shape)
