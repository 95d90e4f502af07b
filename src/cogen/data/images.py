"""Real image data sets as LightningDataModules: scikit-learn's digits and IDX files (MNIST,
Fashion-MNIST). Batches are `(images, labels)`: float images of shape (B, C, H, W) in [0, 1]
and int64 labels. Nothing is downloaded.

The train/val/test split is fixed by `split_seed` (the same for every run seed); a data set
with its own test set (the IDX ones) keeps it and takes the validation images from its
training set. With `binarize=True` every pixel becomes a Bernoulli draw with its grey value
as probability (the binarised MNIST of Burda et al. 2016): drawn afresh for every training
batch, and once, from `split_seed`, for the validation and test images, so that every run
is scored on the same binary images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from cogen.config import CogenError
from cogen.data.idx import read_idx
from cogen.data.mixtures import EpochBatchSampler

Arrays = tuple[np.ndarray, np.ndarray]


class ImageBatches(Dataset):
    """Indexed by a whole batch of rows at once; binarises each draw when given a generator."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, binarize: torch.Generator | None = None):
        self.images, self.labels, self.binarize = images, labels, binarize

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        x = self.images[index]
        if self.binarize is not None:
            x = torch.bernoulli(x, generator=self.binarize)
        return x, self.labels[index]


class ImageDataModule(pl.LightningDataModule):
    """Splits, scaling and loaders; a subclass says where the images come from (`load`).

    shape: (channels, height, width), checked against the loaded images (models read it from
    the config). val_size / test_size: a count or a fraction; test_size is used only by a data
    set with no test set of its own. num_samples: keep only this many training images.
    num_classes: how many classes the labels name (0..num_classes-1), for class-conditional models.
    """

    name = "images"

    def __init__(self, shape: list[int], batch_size: int = 100, eval_batch_size: int = 500,
                 val_size: float = 0.1, test_size: float = 0.2, binarize: bool = True,
                 num_samples: int | None = None, seed: int = 0, split_seed: int = 0, num_classes: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.shape = tuple(int(s) for s in shape)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.test_size, self.binarize = val_size, test_size, binarize
        self.num_samples, self.seed, self.split_seed = num_samples, seed, split_seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    # -- what a subclass provides -------------------------------------------------------
    def load(self) -> tuple[Arrays, Arrays | None]:
        """((train images, labels), (test images, labels) or None); images as (N, H, W) or (N, C, H, W)."""
        raise NotImplementedError

    pixel_max: float = 255.0

    # -- splits ---------------------------------------------------------------------------
    @staticmethod
    def _count(size: float, n: int) -> int:
        return int(round(size * n)) if isinstance(size, float) and size < 1 else int(size)

    def _tensor(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(images, dtype=np.float32) / self.pixel_max)
        x = x.unsqueeze(1) if x.dim() == 3 else x
        if tuple(x.shape[1:]) != self.shape:
            raise CogenError(f"data.shape={list(self.shape)}, but the {self.name} images have shape "
                             f"{list(x.shape[1:])}. Set data.shape={list(x.shape[1:])}.")
        return x.clamp_(0.0, 1.0), torch.as_tensor(np.asarray(labels), dtype=torch.int64)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        (train_x, train_y), test = self.load()
        x, y = self._tensor(train_x, train_y)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        x, y = x[order], y[order]
        if test is None:
            n_test = self._count(self.test_size, len(x))
            test_x, test_y = x[:n_test], y[:n_test]
            x, y = x[n_test:], y[n_test:]
        else:
            test_x, test_y = self._tensor(*test)
        n_val = self._count(self.val_size, len(x))
        splits = {"val": (x[:n_val], y[:n_val]), "test": (test_x, test_y), "train": (x[n_val:], y[n_val:])}
        if self.num_samples is not None:
            splits["train"] = tuple(t[: self.num_samples] for t in splits["train"])
        if self.binarize:
            fixed = torch.Generator().manual_seed(self.split_seed + 1)
            for name in ("val", "test"):
                splits[name] = (torch.bernoulli(splits[name][0], generator=fixed), splits[name][1])
        for name, (images, _) in splits.items():
            if len(images) == 0:
                raise CogenError(f"the {self.name} {name} split is empty: check data.val_size, data.test_size "
                                 f"and data.num_samples.")
        top = int(max(labels.max() for _, labels in splits.values()))
        if self.num_classes is not None and top >= self.num_classes:
            raise CogenError(f"data.num_classes={self.num_classes}, but the {self.name} labels go up to {top}. "
                             f"Set data.num_classes={top + 1}.")
        self.splits = splits

    def sizes(self) -> dict[str, int]:
        self.setup()
        return {name: len(x) for name, (x, _) in self.splits.items()}

    # -- loaders --------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        images, labels = self.splits["train"]
        draws = torch.Generator().manual_seed(self.seed) if self.binarize else None
        sampler = EpochBatchSampler(len(images), min(self.batch_size, len(images)), self.seed)
        return DataLoader(ImageBatches(images, labels, draws), sampler=sampler, batch_size=None)

    def _eval_loader(self, split: str) -> DataLoader:
        images, labels = self.splits[split]
        batches = BatchSampler(SequentialSampler(range(len(images))), self.eval_batch_size, drop_last=False)
        return DataLoader(ImageBatches(images, labels), sampler=batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


class DigitsDataModule(ImageDataModule):
    """scikit-learn's `load_digits`: 1,797 real 8x8 handwritten digits, grey levels 0..16.
    It has no test set of its own: `test_size` of it is held out by `split_seed`."""

    name = "digits"
    pixel_max = 16.0

    def load(self) -> tuple[Arrays, None]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.images, digits.target), None


class IdxDataModule(ImageDataModule):
    """Images and labels from IDX files in `root` (MNIST, Fashion-MNIST): `files` names the
    train/test image/label files; each may also be there gzipped (`<name>.gz`)."""

    def __init__(self, root: str, files: dict[str, str], shape: list[int], name: str = "IDX", missing_hint: str = "",
                 batch_size: int = 100, eval_batch_size: int = 500, val_size: float = 10_000, test_size: float = 0.0,
                 binarize: bool = True, num_samples: int | None = None, seed: int = 0, split_seed: int = 0,
                 num_classes: int | None = None):
        super().__init__(shape, batch_size, eval_batch_size, val_size, test_size, binarize, num_samples, seed, split_seed,
                         num_classes)
        self.root, self.name, self.missing_hint = root, name, missing_hint
        self.files = {key: self._find(Path(root).expanduser(), file) for key, file in dict(files).items()}
        missing = [files[key] for key, path in self.files.items() if path is None]
        if missing:
            where = "no such folder" if not Path(root).expanduser().is_dir() else f"missing {', '.join(missing)}"
            raise CogenError(f"data.root={root}: {where}. {name} needs the IDX files {', '.join(dict(files).values())} "
                             f"(each may be .gz) in that folder.{' ' + missing_hint if missing_hint else ''}")

    @staticmethod
    def _find(root: Path, file: str) -> Path | None:
        for candidate in (root / file, root / f"{file}.gz", root / file.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
        return None

    def load(self) -> tuple[Arrays, Arrays]:
        read = {key: read_idx(path) for key, path in self.files.items()}
        for split in ("train", "test"):
            if len(read[f"{split}_images"]) != len(read[f"{split}_labels"]):
                raise CogenError(f"data.root={self.root}: {split} has {len(read[f'{split}_images'])} images but "
                                 f"{len(read[f'{split}_labels'])} labels.")
        return (read["train_images"], read["train_labels"]), (read["test_images"], read["test_labels"])
