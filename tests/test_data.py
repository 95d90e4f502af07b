"""The 2D mixture data: the paper's layouts, fixed seeded packs, user point files."""
import numpy as np
import pytest
import torch

from cogen.config import CogenError
from cogen.data.mixtures import GaussianMixture, MixtureDataModule, packs_from_file


def test_ring_means_and_sample_spread():
    ring = GaussianMixture("ring", 8, 1.0, 0.01)
    assert torch.allclose(ring.means.norm(dim=1), torch.ones(8))
    x = ring.sample(8000, torch.Generator().manual_seed(0))
    nearest = torch.cdist(x, ring.means).min(dim=1).values
    assert nearest.mean() == pytest.approx(0.01 * np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh mean


def test_packs_are_fixed_by_seed_and_epochs_reshuffle():
    dm = MixtureDataModule(GaussianMixture("ring", 8, 1.0, 0.01), num_samples=500, batch_size=50, pack=3, seed=4)
    dm.setup("fit")
    again = MixtureDataModule(GaussianMixture("ring", 8, 1.0, 0.01), num_samples=500, batch_size=50, pack=3, seed=4)
    again.setup("fit")
    assert dm.train_rows.shape == (500, 6) and torch.equal(dm.train_rows, again.train_rows)
    loader = dm.train_dataloader()
    first = next(iter(loader))
    loader.sampler.set_epoch(1)
    assert first.shape == (50, 6) and not torch.equal(first, next(iter(loader)))
    assert len(loader) == 10


def test_points_from_a_user_file(tmp_path):
    points = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.save(tmp_path / "p.npy", points)
    packs = packs_from_file(str(tmp_path / "p.npy"), 100, 2, 2, torch.Generator().manual_seed(0))
    assert packs.shape == (100, 4)
    assert set(map(tuple, packs.view(-1, 2).tolist())) == {(1.0, 0.0), (0.0, 1.0)}
    np.savetxt(tmp_path / "bad.csv", np.ones((3, 3)), delimiter=",")
    with pytest.raises(CogenError, match=r"expected an array of shape \(n, 2\)"):
        packs_from_file(str(tmp_path / "bad.csv"), 10, 1, 2, torch.Generator())
    with pytest.raises(CogenError, match="no such file"):
        packs_from_file(str(tmp_path / "missing.npy"), 10, 1, 2, torch.Generator())
