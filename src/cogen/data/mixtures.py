"""2D mixtures of Gaussians (PacGAN's ring and grid) as a LightningDataModule.

The training set is a fixed set of packs drawn once from the seed, as in the paper's code:
every epoch is `num_samples / batch_size` iterations, whatever the packing degree m.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class GaussianMixture:
    """Equal-weight isotropic Gaussians on a ring (`n_modes` means at radius `scale`) or a
    square grid (`n_modes` must be a square; spacing `scale`, centred on 0)."""

    def __init__(self, layout: str, n_modes: int, scale: float, std: float):
        if layout == "ring":
            angles = torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes
            means = scale * torch.stack([angles.cos(), angles.sin()], dim=1)
        elif layout == "grid":
            side = math.isqrt(n_modes)
            if side * side != n_modes:
                raise ValueError(f"grid layout needs a square number of modes, got n_modes={n_modes}")
            ticks = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * scale
            means = torch.cartesian_prod(ticks, ticks)
        else:
            raise ValueError(f"unknown mixture layout {layout!r}: use 'ring' or 'grid'")
        self.means = means.float()
        self.std = float(std)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        modes = torch.randint(len(self.means), (n,), generator=generator)
        noise = torch.randn(n, self.dim, generator=generator)
        return self.means[modes] + self.std * noise


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffling order of one epoch. Shared by the Lightning path and the vectorised
    ensemble so that both see the same batches for the same seed."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class EpochBatchSampler(DistributedSampler):
    """Yields index tensors of whole batches; `set_epoch` (called by Lightning) reshuffles.

    Under DDP every rank draws the same global batch and keeps its own slice, so a run on
    `world_size` processes sees the batches of a one-process run (being a DistributedSampler,
    Lightning leaves it in place). `skip` drops the first batches of one epoch: what a
    mid-epoch checkpoint had already trained on.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 skip: tuple[int, int] | None = None):
        if batch_size % world_size:
            raise ValueError(f"data.batch_size={batch_size} must be divisible by the {world_size} DDP processes")
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        self.n, self.batch_size, self.world_size, self.skip = n, batch_size, world_size, skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self):
        order = epoch_permutation(self.n, self.seed, self.epoch)
        batches = order[: len(self) * self.batch_size].view(len(self), self.world_size, -1)[:, self.rank]
        start = 0
        if self.skip is not None and self.skip[0] == self.epoch:
            start, self.skip = self.skip[1], None
        yield from batches[start:]


class TensorRows(Dataset):
    """Indexes a tensor by a whole batch of rows at once: no per-item collation."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


class MixtureDataModule(pl.LightningDataModule):
    """Train: `num_samples` packs of `pack` points, drawn from `mixture`, or from the points
    stored at `path` (a .npy or .csv of shape (n, 2), e.g. the paper's own sample dump). Val/test: `eval_samples` real points,
    used only as the reference drawn under sample plots; the metrics score generated points."""

    def __init__(self, mixture: GaussianMixture, num_samples: int = 100_000, batch_size: int = 100,
                 pack: int = 1, eval_samples: int = 2500, seed: int = 0, path: str | None = None):
        super().__init__()
        self.mixture, self.path = mixture, path
        self.num_samples, self.batch_size, self.pack = num_samples, batch_size, pack
        self.eval_samples, self.seed = eval_samples, seed
        self.train_rows: torch.Tensor | None = None
        self._resume_at: tuple[int, int] | None = None

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows is None:
            g = torch.Generator().manual_seed(self.seed)
            if self.path is None:
                self.train_rows = make_packs(self.mixture, self.num_samples, self.pack, g)
            else:
                self.train_rows = packs_from_file(self.path, self.num_samples, self.pack, self.dim, g)
            self.eval_rows = self.mixture.sample(self.eval_samples, torch.Generator().manual_seed(self.seed + 1))

    def train_dataloader(self) -> DataLoader:
        """`batch_size` is the global batch: each DDP rank takes its slice."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = EpochBatchSampler(self.num_samples, self.batch_size, self.seed, rank, world, self._resume_at)
        self._resume_at = None
        return DataLoader(TensorRows(self.train_rows), sampler=sampler, batch_size=None)

    def state_dict(self) -> dict:
        """Where in the epoch a checkpoint was taken, so that a resumed run skips what it already trained on."""
        if self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": self.trainer.current_epoch, "batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._resume_at = (state["epoch"], state["batches_done"])

    def _eval_loader(self) -> DataLoader:
        return DataLoader(TensorRows(self.eval_rows.unsqueeze(0)), batch_size=None)

    val_dataloader = _eval_loader
    test_dataloader = _eval_loader


def make_packs(mixture: GaussianMixture, num_packs: int, pack: int, generator: torch.Generator) -> torch.Tensor:
    """(num_packs, pack * dim): each row holds `pack` independent points side by side."""
    return mixture.sample(num_packs * pack, generator).view(num_packs, pack * mixture.dim)


def packs_from_file(path: str, num_packs: int, pack: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """`num_packs` packs drawn with replacement from the points stored in a .npy or .csv file."""
    import numpy as np

    from cogen.config import CogenError

    file = Path(path).expanduser()
    if not file.is_file():
        raise CogenError(f"data.path={path}: no such file. Give a .npy or .csv of {dim}-d points, or drop "
                         f"data.path to sample the mixture.")
    points = np.load(file) if file.suffix == ".npy" else np.loadtxt(file, delimiter=",", ndmin=2)
    if points.ndim != 2 or points.shape[1] != dim:
        raise CogenError(f"data.path={path}: expected an array of shape (n, {dim}), got {points.shape}.")
    points = torch.as_tensor(points, dtype=torch.float32)
    index = torch.randint(len(points), (num_packs * pack,), generator=generator)
    return points[index].view(num_packs, pack * dim)
