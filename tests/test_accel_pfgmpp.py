"""PFGM++ kernel: second moment, Beta law of the radius, the D -> inf Gaussian limit, the loss, bad D."""

from __future__ import annotations

import math

import pytest
import torch

from diffzoo.accel import pfgmpp as P
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.schedules import get_schedule
from diffzoo.models.registry import build

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("D", [16.0, 128.0])
def test_second_moment_matches_sigma2_N_D_over_D_minus_2(D):
    n, N, sigma = 20000, 64, 0.7
    e = P.perturbation((n, 1, 8, 8), sigma, D, torch.Generator().manual_seed(0), torch.float64)
    sq = e.flatten(1).pow(2).sum(1)
    se = float(sq.std()) / math.sqrt(n)
    assert abs(float(sq.mean()) - P.expected_sq_norm(sigma, N, D)) < 5 * se


def test_radius_follows_the_beta_law():
    N, D, sigma, n = 64, 16.0, 1.3, 5000
    e = P.perturbation((n, N), sigma, D, torch.Generator().manual_seed(1), torch.float64)
    R2, r2 = e.pow(2).sum(1), (sigma * math.sqrt(D)) ** 2
    B = (R2 / (R2 + r2)).numpy()  # R = r sqrt(B / (1 - B))
    assert stats.kstest(B, stats.beta(N / 2, D / 2).cdf).pvalue > 1e-3


def test_large_D_is_the_gaussian_kernel():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    big = P.perturbation((2000, 64), 2.0, 1e6, g1, torch.float64)
    gauss = P.perturbation((2000, 64), 2.0, math.inf, g2, torch.float64)
    torch.testing.assert_close(big, gauss, rtol=5e-3, atol=1e-6)  # the same g, a radius factor ~ 1 +- 1e-3
    assert stats.kstest((gauss.pow(2).sum(1) / 4).numpy(), stats.chi2(64).cdf).pvalue > 1e-3


def test_gamma_sampler_moments_and_per_sample_generators():
    x = P.sample_gamma((20000,), 3.5, torch.Generator().manual_seed(2))
    assert abs(float(x.mean()) - 3.5) < 5 * math.sqrt(3.5 / 20000)
    gens = [torch.Generator().manual_seed(s) for s in (7, 8)]
    a = P.prior_sample((2, 1, 8, 8), 80.0, 64, gens)
    b = P.prior_sample((1, 1, 8, 8), 80.0, 64, [torch.Generator().manual_seed(8)])
    assert torch.equal(a[1:], b)


def test_bad_D_and_sigma():
    for bad in (2, 1.5, -3, float("nan")):
        with pytest.raises(ValueError, match="D"):
            P.perturbation((2, 4), 1.0, bad)
    with pytest.raises(TypeError, match="D"):
        P.check_D("64")
    with pytest.raises(ValueError, match="sigma_max"):
        P.prior_sample((2, 4), 0.0, 64)


def test_loss_trains_and_infinite_D_is_edms_loss():
    torch.manual_seed(0)
    model = build("edm_digits_unet", ch=8, blocks=1, mults=[1, 2], num_classes=0, time_scale=250.0)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    loss = P.pfgmpp_loss(model, x, 64.0, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    # D = inf: y = x + sigma g, lambda = (s^2 + 0.25) / (0.5 s)^2
    g = torch.Generator().manual_seed(3)
    got = P.pfgmpp_loss(model, x, math.inf, g)
    g = torch.Generator().manual_seed(3)
    s = P.sample_sigma(4, g)
    n = torch.randn((4, 1, 8, 8), generator=g, dtype=torch.float64) * s[:, None, None, None]
    s32 = s.float()
    w = (s32**2 + 0.25) / (0.5 * s32) ** 2
    want = (w * (model(x + n.float(), s32) - x).pow(2).flatten(1).mean(1)).mean()
    torch.testing.assert_close(got, want)
    with torch.no_grad():
        out = P.pfgmpp_sample(Denoiser(model, get_schedule("edm"), "sample"), (3, 1, 8, 8), 64.0, 3, generator=g)
    assert out.shape == (3, 1, 8, 8) and torch.isfinite(out).all()
