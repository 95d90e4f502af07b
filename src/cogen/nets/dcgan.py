"""DCGAN-style nets (Radford et al. 2016) for small grey images: 28x28 (MNIST, Fashion-MNIST)
and 8x8 (scikit-learn's digits), the shape read from `data.shape` ([C, H, W]).

Both nets take `num_classes`: when > 0 they are the conditional GAN's (Mirza & Osindero 2014)
players: the generator reads noise concatenated with a one-hot label, and the discriminator
reads each image with its one-hot label as `num_classes` constant extra channels. The label
maps join each image *before* PacGAN packing, so a pack is `pack` (image, label maps) blocks
stacked along channels, the layout `GAN.packed` gives unconditional images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dcgan_init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """DCGAN's initialisation: N(0, std) conv and linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class ChannelBatchNorm(nn.Module):
    """BatchNorm2d computed by a BatchNorm1d over (pixels, channels) rows: the same statistics,
    but `use_global_batchnorm` can make it global under DDP (it switches BatchNorm1d only)."""

    def __init__(self, channels: int, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(channels, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.movedim(1, -1)
        return self.bn(rows.reshape(-1, x.shape[1])).view(rows.shape).movedim(-1, 1)


def one_hot(labels: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).to(like)


class DCGANGenerator(nn.Module):
    """Noise (+ one-hot label) -> linear to a (channels[0], ceil(H/4), ceil(W/4)) map, BN+ReLU,
    two stride-2 4x4 transposed convolutions (BN+ReLU between), crop to H x W, sigmoid: [0, 1]."""

    def __init__(self, noise_dim: int, shape: list[int], channels: list[int] = (128, 64), num_classes: int = 0,
                 bn_momentum: float = 0.1, init_std: float = 0.02):
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"channels={list(channels)}: the DCGAN generator has two layers before the output")
        self.shape, self.num_classes = tuple(int(s) for s in shape), num_classes
        c, h, w = self.shape
        self.start = (channels[0], math.ceil(h / 4), math.ceil(w / 4))
        self.project = nn.Linear(noise_dim + num_classes, math.prod(self.start), bias=False)
        self.body = nn.Sequential(
            ChannelBatchNorm(channels[0], bn_momentum), nn.ReLU(),
            nn.ConvTranspose2d(channels[0], channels[1], 4, stride=2, padding=1, bias=False),
            ChannelBatchNorm(channels[1], bn_momentum), nn.ReLU(),
            nn.ConvTranspose2d(channels[1], c, 4, stride=2, padding=1),
        )
        dcgan_init_(self, init_std)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, one_hot(labels, self.num_classes, z)], dim=1)
        x = self.body(self.project(z).view(-1, *self.start))
        return torch.sigmoid(x[..., : self.shape[1], : self.shape[2]])


class DCGANDiscriminator(nn.Module):
    """Stride-2 4x4 convolutions with LeakyReLU(0.2), BatchNorm after all but the first (as in
    DCGAN), then a linear layer to one logit per pack; it judges packs (B, pack*C, H, W).

    BatchNorm normalises each pass (real packs, fake packs) by its own batch's statistics, so
    the discriminator sees how diverse a batch is. On digits that is what keeps the unconditional
    GAN from collapsing onto one image (measured without it: identical samples, FID stuck near
    the untrained generator's). The statistics are over a batch of packs; under DDP `GAN.setup`
    makes them global, so N processes normalise as one does.
    """

    def __init__(self, shape: list[int], pack: int = 1, channels: list[int] = (64, 128), num_classes: int = 0,
                 batch_norm: bool = True, init_std: float = 0.02):
        super().__init__()
        self.shape, self.pack, self.num_classes = tuple(int(s) for s in shape), pack, num_classes
        c, h, w = self.shape
        layers: list[nn.Module] = []
        width = pack * (c + num_classes)
        for i, out in enumerate(channels):
            layers.append(nn.Conv2d(width, out, 4, stride=2, padding=1, bias=not (batch_norm and i)))
            layers += [ChannelBatchNorm(out)] if batch_norm and i else []
            layers.append(nn.LeakyReLU(0.2))
            width = out
        self.body = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            features = self.body(torch.zeros(1, pack * (c + num_classes), h, w)).shape[1]
        self.head = nn.Linear(features, 1)
        dcgan_init_(self, init_std)

    def with_label_maps(self, packs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, pack*C, H, W) and labels (B, pack) or (B*pack,) -> (B, pack*(C+K), H, W)."""
        b, _, h, w = packs.shape
        images = packs.view(b, self.pack, self.shape[0], h, w)
        maps = one_hot(labels.reshape(b, self.pack), self.num_classes, packs)[..., None, None].expand(-1, -1, -1, h, w)
        return torch.cat([images, maps], dim=2).view(b, -1, h, w)

    def forward(self, packs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            packs = self.with_label_maps(packs, labels)
        return self.head(self.body(packs)).squeeze(-1)
