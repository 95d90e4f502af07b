"""The image data modules: digits, IDX sets (MNIST / Fashion-MNIST layout), seeded splits."""
from pathlib import Path

import numpy as np
import pytest
import torch

from cogen.config import CogenError
from cogen.data.idx import write_idx
from cogen.data.images import DigitsDataModule, IdxDataModule

FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
FASHION = Path("/usr/share/datasets/fashion-mnist")


def fake_mnist(root: Path, n_train: int = 300, n_test: int = 50, gz: bool = True) -> Path:
    rng = np.random.default_rng(1)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n, dtype=np.uint8))
    return root


def test_digits_split_is_fixed_disjoint_and_scaled():
    dm = DigitsDataModule(shape=[1, 8, 8], batch_size=50, binarize=False, seed=3)
    assert dm.sizes() == {"val": 144, "test": 359, "train": 1294}
    other = DigitsDataModule(shape=[1, 8, 8], binarize=False, seed=7)  # another run seed: the same split
    other.setup()
    for split in ("train", "val", "test"):
        assert torch.equal(dm.splits[split][0], other.splits[split][0])
    rows = {split: {tuple(x.flatten().tolist()) for x in dm.splits[split][0]} for split in ("train", "test")}
    assert len(rows["train"] & rows["test"]) < 5  # load_digits has a few duplicate images, no shared rows otherwise
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (50, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() == 1.0 and len(torch.unique(x)) > 2


def test_binarised_val_test_fixed_and_train_redrawn():
    dm = DigitsDataModule(shape=[1, 8, 8], batch_size=100, binarize=True, seed=0)
    dm.setup()
    val = torch.cat([x for x, _ in dm.val_dataloader()])
    assert set(val.unique().tolist()) <= {0.0, 1.0} and len(val) == 144
    again = DigitsDataModule(shape=[1, 8, 8], binarize=True, seed=5)
    again.setup()
    assert torch.equal(again.splits["test"][0], dm.splits["test"][0])
    loader = dm.train_dataloader()
    first = next(iter(loader))[0]
    loader.sampler.set_epoch(0)
    assert not torch.equal(first, next(iter(loader))[0])  # same images, a fresh binarisation


def test_idx_data_module_reads_the_mnist_layout(tmp_path):
    dm = IdxDataModule(root=str(fake_mnist(tmp_path, gz=False)), files=FILES, shape=[1, 28, 28], name="MNIST",
                       val_size=100, binarize=False, num_samples=150, eval_batch_size=40)
    assert dm.sizes() == {"val": 100, "test": 50, "train": 150}
    batches = list(dm.test_dataloader())
    assert [len(x) for x, _ in batches] == [40, 10]
    assert batches[0][0].shape == (40, 1, 28, 28) and 0 <= batches[0][0].min() and batches[0][0].max() <= 1


def test_missing_files_name_what_is_expected_and_where(tmp_path):
    with pytest.raises(CogenError, match=r"data.root=/nope: no such folder\. MNIST needs the IDX files train-images-idx3-ubyte"):
        IdxDataModule(root="/nope", files=FILES, shape=[1, 28, 28], name="MNIST")
    fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(CogenError, match="missing t10k-labels-idx1-ubyte"):
        IdxDataModule(root=str(tmp_path), files=FILES, shape=[1, 28, 28], name="MNIST")


def test_wrong_shape_is_a_short_error(tmp_path):
    dm = IdxDataModule(root=str(fake_mnist(tmp_path)), files=FILES, shape=[1, 8, 8], name="MNIST", val_size=10)
    with pytest.raises(CogenError, match=r"Set data.shape=\[1, 28, 28\]"):
        dm.setup()


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist (make install does)")
def test_real_fashion_mnist():
    files = {k: f"{v}.gz" for k, v in FILES.items()}
    dm = IdxDataModule(root=str(FASHION), files=files, shape=[1, 28, 28], name="Fashion-MNIST", binarize=False)
    assert dm.sizes() == {"val": 10_000, "test": 10_000, "train": 50_000}
    labels = torch.cat([dm.splits["train"][1], dm.splits["val"][1]])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(dm.splits["test"][1]), torch.full((10,), 1000))
