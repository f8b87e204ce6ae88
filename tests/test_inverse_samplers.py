"""DDNM / DDNM+ / DPS as corrected denoisers under diffzoo.sampling.ddim, checked on exact
Gaussian-mixture priors: measurement consistency, exact Gaussian posterior, A = 0 reduction,
batch invariance, and errors."""

import pytest
import torch

from diffzoo.core import Denoiser, linear
from diffzoo.core.analytic import GaussianMixture
from diffzoo.inverse import (
    CompressedSensing,
    DDNMDenoiser,
    DPSDenoiser,
    box_inpainting,
    ddnm_plus_coefficients,
    get_operator,
    measurement_error,
    posterior_sample,
    zero_operator,
)
from diffzoo.sampling import ddim, get_timesteps

SCHED = linear(1000)
SHAPE = (1, 8, 8)


def image_denoiser(gmm: GaussianMixture) -> Denoiser:
    """The exact x0-denoiser of a 64-D mixture, acting on (B, 1, 8, 8) images."""
    inner = gmm.denoiser(SCHED)
    return Denoiser(
        lambda x, t, c=None: inner.net(x.flatten(1), t, c).reshape(x.shape), SCHED, "sample", validate=False
    )


def two_blobs(seed=0, std=0.3):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(2, 64, generator=g, dtype=torch.float64).clamp(-1, 1)
    return GaussianMixture(means, std)


@pytest.mark.parametrize("name", ["cs", "sr", "box_inpaint", "random_inpaint", "cs_gaussian"])
def test_ddnm_noiseless_satisfies_measurement(name):
    gmm = two_blobs()
    den = image_denoiser(gmm)
    op = get_operator(name, SHAPE, ratio=0.1)
    x = gmm.sample(4, torch.Generator().manual_seed(1)).reshape(4, *SHAPE)
    y = op.A(x)
    out = posterior_sample("ddnm", den, op, y, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert float(measurement_error(op, out, y).max()) < 1e-10
    out32 = posterior_sample("ddnm", den, op, y.float(), 10, generator=torch.Generator().manual_seed(2))
    assert float(measurement_error(op, out32, y.float()).max()) < 1e-5 * (1 + float(y.abs().max()))


def test_ddnm_samples_exact_gaussian_posterior():
    """Isotropic Gaussian prior N(mu, s^2 I), noiseless CS: the posterior is A^+y + (I - A^+A)(mu + s z).

    The exact denoiser is linear and commutes with the projector, so DDNM's null-space component
    must follow *exactly* the unconditional DDIM trajectory from the same start, while its range
    component equals A^+y (so the sample inherits the prior sampler's accuracy, nothing worse).
    """
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(1, 64, generator=g, dtype=torch.float64) * 0.5
    s = 0.5
    den = image_denoiser(GaussianMixture(mu, s))
    op = CompressedSensing(SHAPE, 0.25, seed=1)
    x = (mu + s * torch.randn(1, 64, generator=g, dtype=torch.float64)).reshape(1, *SHAPE)
    y = op.A(x).expand(64, -1, -1).contiguous()
    xT = torch.randn(64, *SHAPE, generator=g, dtype=torch.float64)
    out = posterior_sample("ddnm", den, op, y, 20, x_T=xT, eta=0.0, dtype=torch.float64)
    prior = posterior_sample("prior", den, op, y, 20, x_T=xT, dtype=torch.float64)
    p = lambda v: op.pinv(op.A(v))
    assert torch.allclose(p(out), op.pinv(y), atol=1e-10)
    null = (out - p(out)).flatten(1)
    assert torch.allclose(null, (prior - p(prior)).flatten(1), atol=1e-10)


def test_every_sampler_reduces_to_unconditional_when_A_is_zero():
    gmm = two_blobs()
    den = image_denoiser(gmm)
    op = zero_operator(SHAPE)
    y = torch.zeros(3, *op.meas_shape(), dtype=torch.float64)
    ts = get_timesteps(SCHED, 12)
    xT = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = ddim(den, xT, ts)
    assert torch.equal(ddim(DDNMDenoiser(den, op, y), xT, ts), ref)
    gen = lambda: torch.Generator().manual_seed(5)
    ref1 = ddim(den, xT, ts, eta=1.0, generator=gen())
    assert torch.equal(ddim(DPSDenoiser(den, op, y, ts, zeta=3.0), xT, ts, eta=1.0, generator=gen()), ref1)
    # DDNM's own eta under deterministic DDIM with A = 0 and sigma_y = 0: same as mixing the noise by hand
    den_eta = DDNMDenoiser(den, op, y, eta=0.5, timesteps=ts, generator=gen())
    out = ddim(den_eta, xT, ts)
    assert torch.isfinite(out).all() and measurement_error(op, out, y).max() == 0


def test_ddnm_plus_coefficients_and_sigma_y_zero_limit():
    a, s = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    lam, gam = ddnm_plus_coefficients(a, s, 0.5)
    assert lam == 1 and torch.isclose(gam**2 + (a * 0.5) ** 2, s**2)
    lam, gam = ddnm_plus_coefficients(a, s, 1.0)
    assert torch.isclose(lam, s / a) and gam == 0
    gmm = two_blobs()
    den = image_denoiser(gmm)
    op = get_operator("sr", SHAPE)
    x = gmm.sample(2, torch.Generator().manual_seed(1)).reshape(2, *SHAPE)
    y = op.A(x)
    ts = get_timesteps(SCHED, 10)
    xT = torch.randn(2, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    plain = ddim(DDNMDenoiser(den, op, y), xT, ts)
    plus0 = ddim(DDNMDenoiser(den, op, y, sigma_y=0.0, eta=0.0, timesteps=ts), xT, ts)
    assert torch.equal(plain, plus0)


def test_ddnm_plus_beats_ddnm_on_noisy_measurements():
    gmm = two_blobs(std=0.2)
    den = image_denoiser(gmm)
    op = get_operator("sr", SHAPE)
    x = gmm.sample(64, torch.Generator().manual_seed(1)).reshape(64, *SHAPE)
    y = op.measure(x, 0.4, torch.Generator().manual_seed(2))
    kw = dict(generator=None, dtype=torch.float64, eta=0.0)
    xT = torch.randn(64, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    e_plain = ((posterior_sample("ddnm", den, op, y, 20, x_T=xT, **kw) - x) ** 2).mean()
    e_plus = ((posterior_sample("ddnm", den, op, y, 20, x_T=xT, sigma_y=0.4, **kw) - x) ** 2).mean()
    assert e_plus < 0.8 * e_plain


def test_dps_fits_measurement_and_is_batch_invariant():
    gmm = two_blobs()
    den = image_denoiser(gmm)
    op = box_inpainting(SHAPE)
    x = gmm.sample(6, torch.Generator().manual_seed(1)).reshape(6, *SHAPE)
    y = op.A(x)
    gens = lambda idx: [torch.Generator().manual_seed(100 + i) for i in idx]
    xT = torch.randn(6, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    dps = posterior_sample("dps", den, op, y, 30, x_T=xT, zeta=0.5, generator=gens(range(6)), dtype=torch.float64)
    prior = posterior_sample("prior", den, op, y, 30, x_T=xT, dtype=torch.float64)
    assert measurement_error(op, dps, y).mean() < 0.5 * measurement_error(op, prior, y).mean()
    one = posterior_sample("dps", den, op, y[2:3], 30, x_T=xT[2:3], zeta=0.5, generator=gens([2]), dtype=torch.float64)
    assert torch.allclose(one, dps[2:3], atol=1e-10)


def test_dps_handles_nonlinear_operator():
    gmm = two_blobs()
    den = image_denoiser(gmm)
    op = get_operator("saturation", SHAPE, gain=1.5)
    x = gmm.sample(4, torch.Generator().manual_seed(1)).reshape(4, *SHAPE)
    y = op.A(x)
    kw = dict(generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xT = torch.randn(4, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    dps = posterior_sample("dps", den, op, y, 30, x_T=xT, zeta=0.3, **kw)
    prior = posterior_sample("prior", den, op, y, 30, x_T=xT, **kw)
    assert measurement_error(op, dps, y).mean() < 0.5 * measurement_error(op, prior, y).mean()
    with pytest.raises(TypeError, match="op: DDNM needs a linear operator"):
        DDNMDenoiser(den, op, y)


def test_bad_inputs():
    den = image_denoiser(two_blobs())
    op = CompressedSensing(SHAPE, 0.5)
    y = op.A(torch.zeros(2, *SHAPE))
    bad = y.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="y"):
        DDNMDenoiser(den, op, bad)
    with pytest.raises(ValueError, match="y: expected shape"):
        DDNMDenoiser(den, op, y[:, :, :3])
    with pytest.raises(ValueError, match="sigma_y"):
        DDNMDenoiser(den, op, y, sigma_y=-1.0, timesteps=get_timesteps(SCHED, 3))
    with pytest.raises(ValueError, match="timesteps"):
        DDNMDenoiser(den, op, y, sigma_y=0.1)
    with pytest.raises(ValueError, match="x_T: expected shape"):
        posterior_sample("ddnm", den, op, y, 3, x_T=torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="method"):
        posterior_sample("magic", den, op, y, 3)
    with pytest.raises(ValueError, match="zeta"):
        DPSDenoiser(den, op, y, get_timesteps(SCHED, 3), zeta=-1.0)


def test_restore_cli_and_bench_registered(tmp_path):
    """``diffzoo restore`` / ``diffzoo bench inverse`` exist; restore reports bad input as errors."""
    from diffzoo.cli import build_parser, main

    parser = build_parser()
    args = parser.parse_args(["restore", "img.png", "--operator", "sr"])
    assert args.operator == "sr" and args.method == "ddnm"
    assert parser.parse_args(["bench", "inverse", "--quick"]).quick
    assert main(["restore", str(tmp_path / "missing.png")]) == 2
