"""Data: digits split and views; toy2d sampling determinism and exact densities."""

from __future__ import annotations

import math

import pytest
import torch

from diffzoo.data import digits, toy2d


def test_digits_split_sizes_stratified_and_deterministic():
    tr, te, al = digits.load("train"), digits.load("test"), digits.load("all")
    assert (len(tr), len(te), len(al)) == (1497, 300, 1797)
    counts = te.labels.bincount(minlength=10)
    assert int(counts.min()) >= 29 and int(counts.max()) <= 31
    assert torch.equal(digits.load("test").levels, te.levels)
    # train and test are disjoint and cover everything: compare as multisets of (levels, label) rows
    rows = lambda d: sorted(map(tuple, torch.cat([d.levels, d.labels[:, None]], 1).tolist()))
    assert sorted(rows(tr) + rows(te)) == rows(al)


def test_digits_views_are_consistent():
    d = digits.load("train")
    assert d.images.shape == (1497, 1, 8, 8) and d.images.dtype == torch.float32
    assert d.levels.shape == (1497, 64) and d.levels.dtype == torch.int64
    assert float(d.images.min()) == -1.0 and float(d.images.max()) == 1.0
    assert int(d.levels.min()) == 0 and int(d.levels.max()) == 16
    assert torch.equal(digits.images_to_levels(d.images), d.levels)
    assert torch.allclose(d.images.reshape(-1, 64), d.levels / 8.0 - 1)


def test_digits_batch_uses_generator_and_bad_split_is_named():
    d = digits.load("test")
    a = d.batch(8, torch.Generator().manual_seed(1))
    b = d.batch(8, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="split"):
        digits.load("val")


@pytest.mark.parametrize("name", ["ring8", "grid25", "mixture1d", "moons", "checkerboard"])
def test_toy_sampling_is_deterministic_by_generator(name):
    ds = toy2d.get(name)
    x = ds.sample(100, torch.Generator().manual_seed(0))
    assert x.shape == (100, ds.dim) and x.dtype == torch.float64
    assert torch.equal(x, ds.sample(100, torch.Generator().manual_seed(0)))
    assert not torch.equal(x, ds.sample(100, torch.Generator().manual_seed(1)))


def test_mixture_modes_and_log_prob():
    ring = toy2d.ring8(radius=2.0, std=0.1)
    assert torch.allclose(ring.modes.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    # at a mode, the density is dominated by that component: log(1/8) - log(2 pi s^2)
    lp = ring.log_prob(ring.modes[:1])
    assert math.isclose(float(lp), math.log(1 / 8) - math.log(2 * math.pi * 0.01), rel_tol=1e-6)
    grid = toy2d.grid25()
    x = grid.sample(2000, torch.Generator().manual_seed(0))
    assert grid.nearest_mode(x).bincount(minlength=25).min() > 40


def test_checkerboard_density_normalised_and_supported():
    cb = toy2d.Checkerboard(k=4, half=2.0)
    x = cb.sample(5000, torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(cb.log_prob(x)).all())
    u = (torch.rand(200000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.5) * 4
    mass = cb.log_prob(u).exp().mean() * 16  # Monte Carlo integral over [-2, 2]^2
    assert abs(float(mass) - 1.0) < 0.01
    assert float(cb.log_prob(torch.tensor([[-1.5, 1.5]], dtype=torch.float64))) == -math.inf


def test_moons_has_no_density_and_bad_names_are_reported():
    assert not hasattr(toy2d.get("moons"), "log_prob")
    with pytest.raises(ValueError, match="dataset"):
        toy2d.get("spirals")
    with pytest.raises(ValueError, match="k"):
        toy2d.Checkerboard(k=3)
