"""Tests of the existing core: schedules vs diffusers, exact prediction conversions, CFG, per-sample
randomness, the VE view, and the Gaussian-mixture oracle (Tweedie)."""

from __future__ import annotations

import itertools

import pytest
import torch

from diffzoo.core import (
    PREDICTION_TYPES,
    Denoiser,
    cfg_combine,
    cfg_denoiser,
    convert,
    cosine,
    from_diffusers_config,
    from_x0_eps,
    generators_from_seeds,
    get_schedule,
    linear,
    randn,
    scaled_linear,
    to_x0_eps,
)
from diffzoo.core.analytic import GaussianMixture


@pytest.mark.parametrize(
    "ours,kind", [(linear, "linear"), (scaled_linear, "scaled_linear"), (cosine, "squaredcos_cap_v2")]
)
def test_schedules_match_diffusers_alphas_cumprod(ours, kind):
    diffusers = pytest.importorskip("diffusers")
    betas = {"beta_start": 0.00085, "beta_end": 0.012} if kind == "scaled_linear" else {}
    ref = diffusers.DDPMScheduler(beta_schedule=kind, **betas).alphas_cumprod.double()
    sch = ours()
    assert torch.allclose(sch.alphas_cumprod, ref, rtol=2e-6, atol=1e-7)
    cfg = from_diffusers_config({"beta_schedule": kind, "num_train_timesteps": 1000, **betas})
    assert torch.allclose(cfg.alphas_cumprod, sch.alphas_cumprod, rtol=0, atol=0)
    a, s = sch.alpha_sigma(torch.arange(1000, dtype=torch.float64))
    assert torch.allclose(a * a, ref, rtol=2e-6, atol=1e-7) and torch.allclose(a * a + s * s, torch.ones(1000).double())


def test_from_diffusers_config_final_alpha():
    diffusers = pytest.importorskip("diffusers")
    one = from_diffusers_config(diffusers.DDIMScheduler(set_alpha_to_one=True))
    zero = from_diffusers_config(diffusers.DDIMScheduler(set_alpha_to_one=False))
    assert one.final_alpha_cumprod == 1.0
    assert zero.final_alpha_cumprod == pytest.approx(float(zero.alphas_cumprod[0]))
    assert float(zero.alpha(torch.tensor(-1.0)) ** 2) == pytest.approx(float(zero.alphas_cumprod[0]))
    with pytest.raises(ValueError, match="beta_schedule"):
        from_diffusers_config({"beta_schedule": "sigmoid"})


def _random_pair(seed: int):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, generator=g, dtype=torch.float64)
    alpha = torch.rand(6, generator=g, dtype=torch.float64) * 0.95 + 0.05  # not variance preserving
    sigma = torch.rand(6, generator=g, dtype=torch.float64) * 1.95 + 0.05
    da = -torch.rand(6, generator=g, dtype=torch.float64) - 0.1
    ds = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    return x0, eps, alpha, sigma, da, ds


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_prediction_round_trip_exact(kind):
    x0, eps, a, s, da, ds = _random_pair(0)
    xt = a[:, None] * x0 + s[:, None] * eps
    pred = from_x0_eps(x0, eps, kind, a, s, da, ds)
    x0b, epsb = to_x0_eps(pred, kind, xt, a, s, da, ds)
    assert torch.allclose(x0b, x0, atol=1e-12) and torch.allclose(epsb, eps, atol=1e-12)


def test_convert_between_all_types():
    x0, eps, a, s, da, ds = _random_pair(1)
    xt = a[:, None] * x0 + s[:, None] * eps
    for src, dst in itertools.permutations(PREDICTION_TYPES, 2):
        p = from_x0_eps(x0, eps, src, a, s, da, ds)
        q = convert(p, src, dst, xt, a, s, da, ds)
        assert torch.allclose(q, from_x0_eps(x0, eps, dst, a, s, da, ds), atol=1e-11), (src, dst)
    v = from_x0_eps(x0, eps, "v", a, s)
    assert torch.allclose(v, a[:, None] * eps - s[:, None] * x0)
    with pytest.raises(ValueError, match="d_alpha"):
        to_x0_eps(v, "velocity", xt, a, s)
    with pytest.raises(ValueError, match="prediction_type"):
        to_x0_eps(v, "noise", xt, a, s)


@pytest.mark.parametrize("name", ["vp_cosine", "vp_linear", "rectified_flow", "edm"])
def test_continuous_derivatives_and_ve_inverse(name):
    sch = get_schedule(name)
    lo, hi = sch.t_min, sch.t_max
    t = torch.linspace(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo), 7, dtype=torch.float64)
    da, ds = sch.d_alpha_sigma(t)
    h = 1e-6 * (hi - lo)
    (a1, s1), (a0, s0) = sch.alpha_sigma(t + h), sch.alpha_sigma(t - h)
    assert torch.allclose(da, (a1 - a0) / (2 * h), rtol=1e-5, atol=1e-7)
    assert torch.allclose(ds, (s1 - s0) / (2 * h), rtol=1e-5, atol=1e-7)
    assert torch.allclose(sch.t_from_ve_sigma(sch.ve_sigma(t)), t, rtol=1e-9, atol=1e-9)


def test_discrete_fractional_times_and_end():
    sch = linear()
    t = torch.tensor([0.0, 17.0, 999.0], dtype=torch.float64)
    assert torch.allclose(sch.alpha(t) ** 2, sch.alphas_cumprod[[0, 17, 999]], rtol=1e-12)
    tf = torch.tensor([3.25, 500.5, 998.9], dtype=torch.float64)
    assert torch.allclose(sch.t_from_ve_sigma(sch.ve_sigma(tf)), tf, atol=1e-8)
    assert bool((sch.ve_sigma(tf) > sch.ve_sigma(tf.floor())).all())
    assert float(sch.alpha(torch.tensor(-1.0))) == 1.0 and float(sch.sigma(torch.tensor(-1.0))) == 0.0
    with pytest.raises(ValueError, match="t"):
        sch.alpha(torch.tensor(1000.0))


def test_cfg_combines_one_batched_call():
    calls = []

    def net(x, t, cond):
        calls.append(x.shape[0])
        return x * cond[:, None] + t[:, None] / 1000

    den = Denoiser(net, linear(), "epsilon")
    x = torch.randn(4, 3, dtype=torch.float64)
    cond = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    uncond = torch.zeros(1, dtype=torch.float64)
    g = cfg_denoiser(den, 3.0, uncond)
    out = g(x, torch.tensor(10.0), cond)
    pu, pc = net(x, torch.full((4,), 10.0), torch.zeros(4)), net(x, torch.full((4,), 10.0), cond)
    assert torch.allclose(out, pu + 3.0 * (pc - pu)) and torch.allclose(out, cfg_combine(pu, pc, 3.0))
    assert calls[0] == 8 and g.nfe == 1
    assert torch.allclose(cfg_denoiser(den, 1.0, uncond)(x, torch.tensor(10.0), cond), pc)


def test_randn_per_sample_generators_are_batch_invariant():
    seeds = [3, 1, 4, 1, 5]
    full = randn((5, 2, 3), generators_from_seeds(seeds), torch.float64)
    for i, s in enumerate(seeds):
        assert torch.equal(full[i], torch.randn(2, 3, generator=torch.Generator().manual_seed(s), dtype=torch.float64))
    assert torch.equal(randn((2, 2, 3), generators_from_seeds(seeds[3:]), torch.float64), full[3:])
    with pytest.raises(ValueError, match="generator"):
        randn((4, 2), generators_from_seeds(seeds))


def test_gmm_denoiser_is_tweedie():
    """E[x0|x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha for the exact noisy marginal."""
    gm = GaussianMixture([[0.0, 1.0], [2.0, -1.0]], [0.5, 0.3], [0.4, 0.6])
    sch = linear()
    den = gm.denoiser(sch)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    t = torch.tensor(400.0, dtype=torch.float64)
    a, s = sch.alpha_sigma(t)
    score = torch.autograd.grad(gm.log_prob(x, a, s).sum(), x)[0]
    x0, eps = den.x0_eps(x.detach(), t)
    assert torch.allclose(x0, (x.detach() + s**2 * score) / a, atol=1e-10)
    assert torch.allclose(eps, -s * score, atol=1e-10)


def test_denoiser_dtype_and_validation():
    net = torch.nn.Linear(3, 3)
    den = Denoiser(lambda x, t, c: net(x), linear(), "epsilon", dtype=torch.float32)
    x = torch.randn(2, 3, dtype=torch.float64)
    assert den(x, torch.tensor(5.0)).dtype == torch.float64
    with pytest.raises(ValueError, match="t"):
        den(x, torch.tensor(2000.0))
    bad = Denoiser(lambda x, t, c: x * float("nan"), linear(), "epsilon")
    with pytest.raises(FloatingPointError, match="model output"):
        bad(x, torch.tensor(5.0))


def test_ddim_transfer_coefficients_substitute_the_pair():
    from diffzoo.core.parameterization import ddim_step, ddim_transfer_coefficients

    x0, eps, a, s, _, _ = _random_pair(2)
    a2, s2 = a.flip(0), s.flip(0)
    xt = a[:, None] * x0 + s[:, None] * eps
    want = ddim_step(x0, eps, a2, s2)
    cx, ce = ddim_transfer_coefficients(a, s, a2, s2, "eps")
    assert torch.allclose(cx[:, None] * xt + ce[:, None] * eps, want, atol=1e-12)
    cx, ce = ddim_transfer_coefficients(a, s, a2, s2, "x0")
    assert torch.allclose(cx[:, None] * xt + ce[:, None] * x0, want, atol=1e-12)
    with pytest.raises(ValueError, match="along"):
        ddim_transfer_coefficients(a, s, a2, s2, "v")


def test_denoiser_options_survive_with_net_and_per_sample_times():
    from diffzoo.core.parameterization import ClipX0

    den = Denoiser(lambda x, t, c: 4 * x, linear(), "epsilon", x0_correction=ClipX0(0.5), recompute_eps=False)
    g = den.with_net(lambda x, t, c: 4 * x)
    assert g.x0_correction == ClipX0(0.5) and g.recompute_eps is False
    x = torch.randn(3, 2, dtype=torch.float64)
    per_sample = den.x0_eps(x, torch.tensor([10.0, 500.0, 900.0], dtype=torch.float64))
    for i, t in enumerate((10.0, 500.0, 900.0)):
        one = den.x0_eps(x[i : i + 1], torch.tensor(t, dtype=torch.float64))
        assert torch.allclose(per_sample[0][i], one[0][0], atol=1e-14) and torch.equal(per_sample[1][i], one[1][0])
