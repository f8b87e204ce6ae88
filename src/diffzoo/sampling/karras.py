"""Euler and Heun samplers of the probability-flow ODE (Karras et al., *EDM*, 2022, Alg. 1-2).

k-diffusion integrates in the variance-exploding frame ``z = x / alpha`` with noise level
``sigma = sigma_t / alpha_t`` (:meth:`NoiseSchedule.ve_sigma`), where the ODE is
``dz/dsigma = (z - D(z, sigma)) / sigma = eps``. One Euler step ``z_s = z_t + (sigma_s - sigma_t) (z_t - D) / sigma_t``
mapped back by ``x_s = alpha_s z_s`` is exactly the DDIM transfer along the data estimate ``D``
(:attr:`diffzoo.sampling.base.Grid.x0_transfer`; exact also from ``alpha_t = 0``, zero terminal SNR). Heun's
step averages the slopes at both ends, ``eps' = (eps(x_t, t) + eps(x_s^Euler, s)) / 2``, and moves
along ``eps'`` (:attr:`diffzoo.sampling.base.Grid.eps_transfer`). As in k-diffusion's ``sample_heun`` (EDM
Alg. 1, line 8), a step whose end has zero noise is a plain Euler step (the slope there is undefined):
on a grid ending at ``sigma = 0`` Heun costs ``2N - 1`` evaluations, on a grid ending above 0 (e.g. a
Karras grid stopped at ``sigma_min``) ``2N``. The discrete end marker ``t = -1`` is not a time the
network was trained at, so a grid ending there always ends with an Euler step. No churn (``S_churn = 0``).
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.random import Generator
from diffzoo.core.schedules import NoiseSchedule
from diffzoo.sampling.base import (
    Callback,
    finish,
    pair_from_eps,
    pair_from_x0,
    predict_eps,
    predict_x0,
    prepare,
    report,
    steps,
    transfer,
)

Tensor = torch.Tensor


def heun_final_correction(schedule: NoiseSchedule, timesteps: Tensor) -> bool:
    """Whether Heun's last step on ``timesteps`` is a full Heun step (2 NFE): the grid ends above zero
    noise at a time the network was trained at (``t_end >= schedule.t_min``); otherwise it is an Euler step."""
    t_last = float(timesteps[-1])
    if not schedule.t_min <= t_last <= schedule.t_max:
        return False
    return bool(schedule.alpha_sigma(torch.tensor(t_last, dtype=torch.float64), check=False)[1] > 0)


@torch.no_grad()
def euler(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """Euler in the VE frame (k-diffusion's ``sample_euler`` without churn; NFE = N). Deterministic."""
    g = prepare(denoiser, x, timesteps, name="euler")
    tr = g.x0_transfer
    for i in steps(g.num_steps, progress, "euler"):
        x0 = predict_x0(denoiser, x, g, i, cond)
        x_new = transfer(x, x0, tr[i])
        if callback is not None:
            x_new = report(callback, g, i, x_new, x0, pair_from_x0(x, x0, g, i))
        x = x_new
    return finish(denoiser, x)


@torch.no_grad()
def heun(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """Heun's 2nd-order method in the VE frame (EDM Alg. 1; NFE = 2N - 1 on a grid ending at zero noise,
    2N on one ending above it: :func:`heun_final_correction`). Deterministic."""
    last_heun = (
        isinstance(denoiser, Denoiser)
        and torch.is_tensor(timesteps)
        and timesteps.ndim == 1
        and timesteps.numel() >= 2
        and heun_final_correction(denoiser.schedule, timesteps)
    )
    g = prepare(denoiser, x, timesteps, moves_along_eps=True, evaluate_end=last_heun, name="heun")
    n = g.num_steps
    tr = g.eps_transfer
    for i in steps(n, progress, "heun"):
        eps = predict_eps(denoiser, x, g, i, cond)
        if i < n - 1 or last_heun:
            eps_s = predict_eps(denoiser, transfer(x, eps, tr[i]), g, i + 1, cond)
            eps = torch.lerp(eps, eps_s, 0.5)
        x_new = transfer(x, eps, tr[i])
        if callback is not None:
            x_new = report(callback, g, i, x_new, pair_from_eps(x, eps, g, i), eps)
        x = x_new
    return finish(denoiser, x)
