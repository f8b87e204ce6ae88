"""The one classifier-free-guidance batcher (core ``cfg_denoiser`` / ``guided_x0_eps``), as used by
sampling, inversion and InfEdit's DDCM: one batched call, per-sample scales, NFE counted once."""

from __future__ import annotations

import pytest
import torch

from diffzoo.core import Denoiser, linear
from diffzoo.core.guidance import cfg_combine, cfg_denoiser, guided_x0_eps


def _denoiser(calls: list[int]) -> Denoiser:
    def net(x, t, cond):
        calls.append(x.shape[0])
        return torch.tanh(x * cond[:, None] + t[:, None] / 1000)

    return Denoiser(net, linear(), "epsilon")


def test_guided_x0_eps_per_sample_scales():
    calls: list[int] = []
    den = _denoiser(calls)
    x = torch.randn(3, 5, dtype=torch.float64)
    cond = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    uncond = torch.zeros(1, dtype=torch.float64)
    t = torch.tensor(400.0, dtype=torch.float64)
    w = torch.tensor([1.0, 3.0, 7.5], dtype=torch.float64)
    x0, eps = guided_x0_eps(den, x, t, cond, uncond, w)
    assert calls == [6] and den.nfe == 1  # [cond; uncond] as one batch of 2B, counted on the denoiser
    eps_c, eps_u = den.eps(x, t, cond), den.eps(x, t, torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(eps, cfg_combine(eps_u, eps_c, w[:, None]), atol=1e-14)
    a, s = den.schedule.alpha_sigma(t)
    assert torch.allclose(a * x0 + s * eps, x, atol=1e-12)  # a consistent pair
    # the same scale for every row equals the float scale of cfg_denoiser (sampling's form)
    g = cfg_denoiser(den, 3.0, uncond)
    ref = g.x0_eps(x, t, cond)
    got = guided_x0_eps(den, x, t, cond, uncond, torch.full((3,), 3.0, dtype=torch.float64))
    assert all(torch.allclose(p, q, atol=1e-14) for p, q in zip(ref, got))


def test_scale_one_runs_the_conditional_pass_alone():
    calls: list[int] = []
    den = _denoiser(calls)
    x = torch.randn(2, 4, dtype=torch.float64)
    cond = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x0, eps = guided_x0_eps(den, x, 10.0, cond, None, 1.0)
    assert calls == [2] and torch.equal(eps, den.eps(x, 10.0, cond))
    guided_x0_eps(den, x, 10.0, cond, None, torch.ones(2, dtype=torch.float64))
    assert calls[-1] == 2


def test_bad_scales():
    den = _denoiser([])
    x, cond, uncond = torch.randn(2, 4), torch.ones(2), torch.zeros(1)
    with pytest.raises(TypeError, match="uncond"):
        guided_x0_eps(den, x, 10.0, cond, None, 3.0)
    with pytest.raises(ValueError, match="scale"):
        cfg_denoiser(den, float("nan"), uncond)
    with pytest.raises(ValueError, match="scale"):
        guided_x0_eps(den, x, 10.0, cond, uncond, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="scale"):
        cfg_denoiser(den, torch.tensor([1.0, float("inf")]), uncond)
