"""A Gaussian layer between latents: an MLP from a vector to the mean and log-variance of a
diagonal Gaussian over another vector. The two-stochastic-layer VAE of Burda et al. (2016) uses
it both ways: q(z2|z1) (100 -> 50-50 tanh -> 50) and p(z1|z2) (50 -> 50-50 tanh -> 100).

Unlike `vae_nets.MLPEncoder`, which flattens an image batch, it keeps any leading dimensions
(k importance samples, then the batch): (..., in_dim) -> two (..., out_dim) tensors.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


class GaussianMLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (50, 50),
                 activation: Callable[[], nn.Module] = nn.Tanh):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        sizes = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), activation()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], 2 * out_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(h)).chunk(2, dim=-1)
        return mu, logvar
