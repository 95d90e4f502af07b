"""The MLPs of PacGAN's 2D experiments (Lin et al. 2018, after ALI's code)."""
from __future__ import annotations

import torch
from torch import nn


def gaussian_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """N(0, std) weights and zero biases for every Linear; BatchNorm keeps scale 1, shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class BatchNormMLP(nn.Module):
    """Generator: `depth` hidden layers of Linear(no bias) -> BatchNorm -> ReLU, then a linear output."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 400, depth: int = 4,
                 bn_momentum: float = 0.05, init_std: float = 0.02):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden, momentum=bn_momentum), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = gaussian_init_(nn.Sequential(*layers), init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Maxout(nn.Module):
    """A linear layer whose `pieces` outputs per unit are reduced by max (Goodfellow et al. 2013)."""

    def __init__(self, in_dim: int, out_dim: int, pieces: int):
        super().__init__()
        self.out_dim, self.pieces = out_dim, pieces
        self.linear = nn.Linear(in_dim, out_dim * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(*x.shape[:-1], self.out_dim, self.pieces).amax(-1)


class MaxoutMLP(nn.Module):
    """Discriminator: `depth` maxout layers, then a linear score. No BatchNorm."""

    def __init__(self, in_dim: int, hidden: int = 200, depth: int = 3, pieces: int = 5, init_std: float = 0.02):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers.append(Maxout(width, hidden, pieces))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = gaussian_init_(nn.Sequential(*layers), init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(-1)
