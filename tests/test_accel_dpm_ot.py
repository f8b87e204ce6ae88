"""DPM-OT's semi-discrete OT: equal cell masses, T(z) in Y, optimality against POT's exact emd2, bad input."""

from __future__ import annotations

import pytest
import torch

from diffzoo.accel import dpm_ot as O

pytest.importorskip("ot")


def test_fitted_map_balances_cells_and_maps_into_the_targets():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(12, 2, generator=g, dtype=torch.float64)
    ot = O.fit_semi_discrete_ot(y, tol=2e-2, max_iter=1500, generator=g)
    assert ot.converged
    masses = ot.cell_masses(100_000, g)
    assert bool((masses > 0).all()) and float((masses - 1 / 12).abs().max()) < 0.02
    assert abs(float(ot.h.mean())) < 1e-12  # mean-centred
    z = O.source_sample(50, 2, "uniform", g)
    idx = ot.cells(z)
    assert torch.equal(ot(z), y[idx])
    shifted = O.SemiDiscreteOT(y, ot.h + 3.0)  # h is defined up to a constant
    assert torch.equal(shifted.cells(z), idx)


def test_one_dimensional_map_is_monotone():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(8, 1, generator=g, dtype=torch.float64)
    # argmax_i y_i z + h_i is monotone in z for ANY potentials h, so a short fit suffices
    ot = O.fit_semi_discrete_ot(y, tol=2e-2, max_iter=100, generator=g)
    z = torch.linspace(0, 1, 200, dtype=torch.float64)[:, None]
    tz = ot(z)[:, 0]
    assert bool((tz[1:] >= tz[:-1]).all())


def test_transport_cost_matches_exact_discrete_ot():
    """E|z - T(z)|^2 of the fitted map ~ W2^2 of a large source sample to Y by POT's exact emd2."""
    g = torch.Generator().manual_seed(2)
    y = torch.rand(6, 2, generator=g, dtype=torch.float64) * 2 - 0.5
    ot = O.fit_semi_discrete_ot(y, tol=1e-2, max_iter=600, max_batch=40_000, generator=g)
    z = O.source_sample(1200, 2, "uniform", g)
    semi = float((z - ot(z)).pow(2).sum(1).mean())
    exact = O.w2_exact(z, y) ** 2  # uniform weights on z and on y: the same measures
    assert semi == pytest.approx(exact, rel=0.05)
    assert O.w2_exact(y, y) == pytest.approx(0.0, abs=1e-9)
    assert O.w2_exact(y, y + torch.tensor([0.3, 0.4], dtype=torch.float64)) == pytest.approx(0.5, rel=1e-6)


def test_bad_targets():
    with pytest.raises(ValueError, match="targets"):
        O.fit_semi_discrete_ot(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="targets"):
        O.fit_semi_discrete_ot(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="targets"):
        O.fit_semi_discrete_ot(torch.zeros(5))
    ot = O.SemiDiscreteOT(torch.randn(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="z"):
        ot.cells(torch.randn(5, 2))
    with pytest.raises(ValueError, match="y"):
        O.w2_exact(torch.randn(3, 2), torch.randn(3, 3))
    with pytest.raises(ValueError, match="source"):
        O.source_sample(3, 2, "cauchy")
