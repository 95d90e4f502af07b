"""Encoders and decoders of the VAE family, as plain nn.Modules.

An encoder maps images (B, C, H, W) to the mean and log-variance of a diagonal Gaussian
q(z|x), each (B, latent_dim). A decoder maps latents (..., latent_dim), with any leading
dimensions (e.g. k importance samples), to the parameters of p(x|z), (..., C, H, W), which
the likelihood in `cogen.nets.likelihoods` interprets (Bernoulli logits, Gaussian means).

- MLPEncoder / MLPDecoder: the MLP of Kingma & Welling (2014) and Burda et al. (2016):
  deterministic tanh layers (Burda et al.'s one-stochastic-layer MNIST model: 784-200-200-50).
- ConvEncoder / ConvDecoder: a small conv net of stride-2 4x4 convolutions (8x8 and 28x28 alike).

With `num_classes` > 0 they are the conditional VAE's nets, q(z|x,y) and p(x|z,y) (Sohn et al.
2015): `forward` also takes int labels (B,), read as a one-hot vector appended to the flattened
image (MLP), as `num_classes` constant extra channels (conv encoder), or appended to the latent
(decoders). With num_classes=0 (the default) they are exactly the unconditional nets.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Activation = Callable[[], nn.Module]


def one_hot(labels: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """(B, num_classes) one-hot rows in `like`'s dtype; a conditional net needs its labels."""
    if labels is None:
        raise ValueError(f"this net is class-conditional (num_classes={num_classes}): pass labels")
    return F.one_hot(labels.long(), num_classes).to(like)


def with_label(z: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Latents (..., B, latent_dim) with each example's one-hot label appended (broadcast over `...`)."""
    if not num_classes:
        return z
    y = one_hot(labels, num_classes, z).expand(*z.shape[:-1], num_classes)
    return torch.cat([z, y], dim=-1)


def _mlp(sizes: Sequence[int], activation: Activation) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, in_shape: list[int], latent_dim: int, hidden: list[int] = (200, 200), activation: Activation = nn.Tanh,
                 num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        sizes = [math.prod(in_shape) + num_classes, *hidden]
        self.body = _mlp(sizes, activation)
        self.head = nn.Linear(sizes[-1], 2 * latent_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.flatten(1)
        if self.num_classes:
            h = torch.cat([h, one_hot(labels, self.num_classes, h)], dim=-1)
        mu, logvar = self.head(self.body(h)).chunk(2, dim=-1)
        return mu, logvar


class MLPDecoder(nn.Module):
    def __init__(self, latent_dim: int, out_shape: list[int], hidden: list[int] = (200, 200), activation: Activation = nn.Tanh,
                 num_classes: int = 0):
        super().__init__()
        self.out_shape, self.num_classes = tuple(out_shape), num_classes
        sizes = [latent_dim + num_classes, *hidden]
        self.body = _mlp(sizes, activation)
        self.head = nn.Linear(sizes[-1], math.prod(out_shape))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.body(with_label(z, labels, self.num_classes))).view(*z.shape[:-1], *self.out_shape)


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions (each halves the height and width), then a linear head."""

    def __init__(self, in_shape: list[int], latent_dim: int, channels: list[int] = (32, 64), activation: Activation = nn.ReLU,
                 num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        width = in_shape[0] + num_classes
        for c in channels:
            layers += [nn.Conv2d(width, c, kernel_size=4, stride=2, padding=1), activation()]
            width = c
        self.body = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            features = self.body(torch.zeros(1, in_shape[0] + num_classes, *in_shape[1:])).shape[1]
        self.head = nn.Linear(features, 2 * latent_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_classes:
            maps = one_hot(labels, self.num_classes, x)[..., None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, maps], dim=1)
        mu, logvar = self.head(self.body(x)).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """A linear layer to a (channels[0], H/2^n, W/2^n) map, then stride-2 4x4 transposed
    convolutions that double it back; the output is cropped to `out_shape`."""

    def __init__(self, latent_dim: int, out_shape: list[int], channels: list[int] = (64, 32), activation: Activation = nn.ReLU,
                 num_classes: int = 0):
        super().__init__()
        self.out_shape, self.num_classes = tuple(out_shape), num_classes
        n = len(channels)
        self.start = (channels[0], math.ceil(out_shape[1] / 2 ** n), math.ceil(out_shape[2] / 2 ** n))
        self.head = nn.Sequential(nn.Linear(latent_dim + num_classes, math.prod(self.start)), activation())
        layers: list[nn.Module] = []
        for i, c in enumerate(channels):
            last = i == n - 1
            out = out_shape[0] if last else channels[i + 1]
            layers.append(nn.ConvTranspose2d(c, out, kernel_size=4, stride=2, padding=1))
            if not last:
                layers.append(activation())
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        lead = z.shape[:-1]
        z = with_label(z, labels, self.num_classes)
        h = self.head(z.reshape(-1, z.shape[-1])).view(-1, *self.start)
        x = self.body(h)[..., : self.out_shape[1], : self.out_shape[2]]
        return x.reshape(*lead, *self.out_shape)
