"""The PacGAN metrics on hand-made samples with known answers."""
import math

import pytest
import torch

from cogen.data.mixtures import GaussianMixture
from cogen.metrics.modes import HighQualityPercent, ModesCaptured, ReverseKL

RING = GaussianMixture("ring", 8, 1.0, 0.01)


def scores(samples: torch.Tensor, mixture=RING) -> tuple[float, float, float]:
    out = []
    for cls in (ModesCaptured, HighQualityPercent, ReverseKL):
        metric = cls(mixture)
        for chunk in samples.split(7):  # several updates, as over batches
            metric.update(chunk)
        out.append(float(metric.compute()))
    return tuple(out)


def test_all_modes_equally_is_perfect():
    samples = RING.means.repeat(10, 1) + 0.005  # 0.5 std off each mean: all high quality
    modes, hq, rkl = scores(samples)
    assert modes == 8 and hq == pytest.approx(100.0) and rkl == pytest.approx(0.0, abs=1e-6)


def test_one_mode_has_reverse_kl_log_k():
    samples = RING.means[3].repeat(50, 1)
    modes, hq, rkl = scores(samples)
    assert modes == 1 and hq == pytest.approx(100.0) and rkl == pytest.approx(math.log(8), rel=1e-6)


def test_off_mode_samples_are_low_quality_and_left_out_of_kl():
    on = RING.means[:2].repeat(5, 1)              # 10 good samples, 5 on each of two modes
    off = torch.zeros(30, 2)                      # the centre is 100 std from every mode
    near = RING.means[:1] + torch.tensor([[0.031, 0.0]])  # just beyond 3 std: low quality
    modes, hq, rkl = scores(torch.cat([on, off, near]))
    assert modes == 2
    assert hq == pytest.approx(100 * 10 / 41)
    assert rkl == pytest.approx(math.log(8) - math.log(2), rel=1e-6)


def test_grid_layout_and_no_good_sample():
    grid = GaussianMixture("grid", 25, 2.0, 0.05)
    assert grid.means.min() == -4 and grid.means.max() == 4 and len(grid.means) == 25
    modes, hq, rkl = scores(torch.full((20, 2), 1.0), grid)
    assert modes == 0 and hq == 0 and math.isnan(rkl)


def test_grid_needs_square_mode_count():
    with pytest.raises(ValueError, match="square"):
        GaussianMixture("grid", 24, 2.0, 0.05)
