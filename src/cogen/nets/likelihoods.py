"""Decoder likelihoods p(x|z) of the VAE family: how a decoder's output is read.

`log_prob(params, x)` sums over the pixel dimensions (the last three) and broadcasts over
leading ones, so x of shape (B, C, H, W) scores params of shape (k, B, C, H, W).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PIXEL_DIMS = (-3, -2, -1)


class Bernoulli(nn.Module):
    """Pixels are Bernoulli with the decoder's outputs as logits (binarised images; grey
    values in [0, 1] give the usual cross-entropy)."""

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, x = torch.broadcast_tensors(params, x)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(PIXEL_DIMS)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


class Gaussian(nn.Module):
    """Pixels are Gaussian with mean sigmoid(decoder output) and one standard deviation for
    all pixels: fixed when `std` is given, else learned (from `init_std`, floored at `min_std`)."""

    def __init__(self, std: float | None = None, init_std: float = 0.1, min_std: float = 1e-3):
        super().__init__()
        self.min_std = min_std
        log_std = torch.tensor(math.log(std if std is not None else init_std))
        if std is None:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)

    @property
    def std(self) -> torch.Tensor:
        return self.log_std.exp().clamp_min(self.min_std)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        std = self.std
        z = (x - torch.sigmoid(params)) / std
        return (-0.5 * z.pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(PIXEL_DIMS)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(params.shape, generator=generator, device=params.device, dtype=params.dtype)
        return torch.sigmoid(params) + self.std * noise
