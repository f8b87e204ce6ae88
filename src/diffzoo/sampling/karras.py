"""Euler and Heun samplers of the probability-flow ODE (Karras et al., *EDM*, 2022, Alg. 1-2).

k-diffusion integrates in the variance-exploding frame ``z = x / alpha`` with noise level
``sigma = sigma_t / alpha_t`` (:meth:`NoiseSchedule.ve_sigma`), where the ODE is
``dz/dsigma = (z - D(z, sigma)) / sigma = eps``. One Euler step ``z_s = z_t + (sigma_s - sigma_t) eps``
mapped back by ``x_s = alpha_s z_s`` is exactly the DDIM transfer, and Heun's step averages the slopes
at both ends, ``eps' = (eps(x_t, t) + eps(x_s^Euler, s)) / 2`` -- both are
:func:`diffzoo.sampling.base.transfer_eps`. Heun's last step is an Euler step (Alg. 2, line 8: the
slope at sigma = 0 is undefined). No churn (``S_churn = 0``).
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.random import Generator
from diffzoo.sampling.base import Callback, predict, prepare, report, steps, transfer_eps

Tensor = torch.Tensor


@torch.no_grad()
def euler(denoiser: Denoiser, x: Tensor, timesteps: Tensor, cond: Any = None, *, generator: Generator = None,
          callback: Callback | None = None, progress: bool = False) -> Tensor:
    """Euler in the VE frame (k-diffusion's ``sample_euler`` without churn; NFE = N). Deterministic."""
    g = prepare(denoiser, x, timesteps)
    for i in steps(g.num_steps, progress, "euler"):
        _, eps = predict(denoiser, x, g.t[i], cond)
        x, x0 = transfer_eps(x, eps, g.alpha[i], g.sigma[i], g.alpha[i + 1], g.sigma[i + 1])
        report(callback, g, i, x, x0, eps)
    return x


@torch.no_grad()
def heun(denoiser: Denoiser, x: Tensor, timesteps: Tensor, cond: Any = None, *, generator: Generator = None,
         callback: Callback | None = None, progress: bool = False) -> Tensor:
    """Heun's 2nd-order method in the VE frame (EDM Alg. 1; NFE = 2N - 1). Deterministic."""
    g = prepare(denoiser, x, timesteps)
    n = g.num_steps
    for i in steps(n, progress, "heun"):
        a_t, s_t, a_s, s_s = g.alpha[i], g.sigma[i], g.alpha[i + 1], g.sigma[i + 1]
        _, eps = predict(denoiser, x, g.t[i], cond)
        if i < n - 1:
            x_euler, _ = transfer_eps(x, eps, a_t, s_t, a_s, s_s)
            _, eps_s = predict(denoiser, x_euler, g.t[i + 1], cond)
            eps = (eps + eps_s) / 2
        x, x0 = transfer_eps(x, eps, a_t, s_t, a_s, s_s)
        report(callback, g, i, x, x0, eps)
    return x
