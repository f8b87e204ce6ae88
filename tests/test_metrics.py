"""Metrics: known values of SWD, MMD^2, Frechet distance, NLL, PSNR and SSIM."""

from __future__ import annotations

import math

import pytest
import torch

from diffzoo.data import toy2d
from diffzoo.metrics import frechet_distance, mmd, nll, psnr, sliced_wasserstein, ssim


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_swd_identity_and_exact_1d_shift():
    x = torch.randn(300, 3, generator=g(0))
    assert float(sliced_wasserstein(x, x, generator=g(1))) == 0.0
    y = torch.randn(300, 1, generator=g(2), dtype=torch.float64)
    assert math.isclose(float(sliced_wasserstein(y, y + 0.7, generator=g(3))), 0.7, rel_tol=1e-9)
    # unequal sample sizes go through quantiles; still ~|shift|
    assert abs(float(sliced_wasserstein(y, y[:200] + 0.7, generator=g(3))) - 0.7) < 0.15


def test_mmd_unbiased_near_zero_for_same_law_and_positive_otherwise():
    vals = [
        float(mmd(torch.randn(200, 2, generator=g(s)), torch.randn(200, 2, generator=g(100 + s)))) for s in range(5)
    ]
    assert abs(sum(vals) / 5) < 0.01 and min(vals) < 0  # unbiased estimator: can go negative
    far = float(mmd(torch.randn(200, 2, generator=g(0)), torch.randn(200, 2, generator=g(1)) + 2))
    assert far > 0.3
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(torch.randn(5, 2), torch.randn(5, 2), bandwidths=[0.0])


def test_frechet_distance_closed_form():
    x = torch.randn(400, 4, generator=g(0))
    assert abs(float(frechet_distance(x, x))) < 1e-9
    d, m = 4, torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    # N(0, I) vs N(m, 4 I): |m|^2 + tr(I + 4I - 2 * 2I) = |m|^2 + d
    fd = frechet_distance((torch.zeros(d, dtype=torch.float64), eye), (m, 4 * eye))
    assert math.isclose(float(fd), 5.0 + d, rel_tol=1e-12)
    with pytest.raises(ValueError, match="y"):
        frechet_distance(x, torch.randn(400, 3))


def test_nll_under_true_density():
    ds = toy2d.grid25()
    x = ds.sample(4000, g(0))
    # the exact NLL of samples is a Monte Carlo estimate of the entropy: lower than for spread-out points
    assert float(nll(x, ds)) < float(nll(x + 0.3, ds))
    with pytest.raises(ValueError, match="log_prob"):
        nll(x, toy2d.get("moons"))


def test_psnr_known_value_and_ssim_properties():
    x = torch.rand(2, 3, 16, 16, generator=g(0), dtype=torch.float64)
    assert math.isclose(float(psnr(x, x + 0.1, data_range=1.0)), 20.0, rel_tol=1e-9)
    assert math.isclose(float(psnr(x, x + 0.1)), 10 * math.log10(4 / 0.01), rel_tol=1e-9)
    assert float(psnr(x, x)) == math.inf
    assert torch.allclose(ssim(x, x, data_range=1.0), torch.tensor(1.0, dtype=torch.float64))
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g(1))).clamp(0, 1)
    less = (x + 0.05 * torch.randn(x.shape, generator=g(1))).clamp(0, 1)
    s_noisy, s_less = float(ssim(x, noisy, data_range=1.0)), float(ssim(x, less, data_range=1.0))
    assert s_noisy < s_less < 1.0
    assert math.isclose(s_noisy, float(ssim(noisy, x, data_range=1.0)), rel_tol=1e-12)
    assert ssim(x, noisy, reduction="none").shape == (2,)
    assert float(ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))) < 0.9  # small images: window shrinks
    with pytest.raises(ValueError, match="y"):
        ssim(x, x[:, :2])


def test_ssim_matches_scikit_image_style_reference():
    """Against an independent float64 computation of Wang et al.'s formula with the same window."""
    from diffzoo.metrics.image import gaussian_window

    x = torch.rand(1, 1, 11, 11, generator=g(3), dtype=torch.float64)
    y = torch.rand(1, 1, 11, 11, generator=g(4), dtype=torch.float64)
    w = gaussian_window(11, 1.5)
    mx, my = (w * x[0, 0]).sum(), (w * y[0, 0]).sum()
    vx, vy = (w * (x[0, 0] - mx) ** 2).sum(), (w * (y[0, 0] - my) ** 2).sum()
    cxy = (w * (x[0, 0] - mx) * (y[0, 0] - my)).sum()
    c1, c2 = 0.01**2, 0.03**2
    ref = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert math.isclose(float(ssim(x, y, data_range=1.0)), float(ref), rel_tol=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_formula():
    import numpy as np
    from scipy import linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    ours = float(frechet_distance(torch.from_numpy(a), torch.from_numpy(b)))
    assert math.isclose(ours, ref, rel_tol=1e-8)
