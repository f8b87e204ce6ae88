"""Pseudo numerical methods (Liu et al., *PNDM*, ICLR 2022): PLMS and F-PNDM.

Both integrate the probability-flow ODE on the data manifold by combining noise estimates and moving
with the transfer ``phi(x, eps', t, s)`` (Eq. 9), which equals the DDIM step with ``eps'``
(:attr:`diffzoo.sampling.base.Grid.eps_transfer`). The 4th-order linear multistep combination (Eq. 12) is::

    eps' = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24

* :func:`plms` warms up as diffusers' ``PNDMScheduler(skip_prk_steps=True)`` does: a pseudo
  improved-Euler first step (``eps' = (e(x_0, t_0) + e(x_1^pred, t_1)) / 2``), then Adams-Bashforth
  of order 2 and 3 until four estimates exist. NFE = N + 1.
* :func:`pndm` (F-PNDM) warms up with three pseudo Runge-Kutta steps (Eq. 13; 4 NFE each, midpoint
  ``(t + s) / 2``), of which only the first estimate of each enters the history. NFE = N + 9.
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser, PreparedTimes
from diffzoo.core.random import Generator
from diffzoo.sampling.base import (
    Callback,
    Coefficients,
    Grid,
    constant,
    finish,
    pair_from_eps,
    predict_eps,
    prepare,
    report,
    steps,
    transfer,
    transfer_coefficients,
)

Tensor = torch.Tensor

# Adams-Bashforth coefficients by number of available estimates (newest first); each row sums to 1.
AB_COEFFS: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def linear_multistep(history: list[Tensor]) -> Tensor:
    """The Adams-Bashforth combination of the last (up to four) noise estimates, newest last."""
    recent = history[-4:][::-1]
    coeffs = AB_COEFFS[len(recent)]
    if len(recent) == 1:
        return recent[0]
    out = torch.mul(recent[0], constant(coeffs[0], recent[0]))
    for c, e in zip(coeffs[1:], recent[1:]):
        out.add_(e, alpha=c)
    return out


@torch.no_grad()
def plms(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """PLMS: pseudo linear multistep with diffusers' ``skip_prk_steps`` warm start (NFE = N + 1).

    Deterministic (``generator`` is accepted for a uniform signature and unused).
    """
    g = prepare(denoiser, x, timesteps, moves_along_eps=True, name="plms")
    n = g.num_steps
    history: list[Tensor] = []
    tr = g.eps_transfer
    for i in steps(n, progress, "plms"):
        e = predict_eps(denoiser, x, g, i, cond)
        if i == 0 and n > 1:  # pseudo improved Euler: predictor to t_1, average the two estimates
            e_pred = predict_eps(denoiser, transfer(x, e, tr[0]), g, 1, cond)
            eps = torch.lerp(e, e_pred, 0.5)
        else:
            eps = linear_multistep(history + [e])
        history = (history + [e])[-4:]
        x_new = transfer(x, eps, tr[i])
        if callback is not None:
            x_new = report(callback, g, i, x_new, pair_from_eps(x, eps, g, i), eps)
        x = x_new
    return finish(denoiser, x)


def _runge_kutta(
    denoiser: Denoiser, g: Grid, mid: PreparedTimes, to_mid: Coefficients, i: int, x: Tensor, cond: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """One pseudo Runge-Kutta step (Liu et al. 2022, Eq. 13) with midpoint ``(t + s) / 2`` (``mid``: its
    denoiser table; ``to_mid``: the transfer from ``t`` to it): returns ``(x_s, eps', e1)``."""
    to_s = g.eps_transfer[i]
    e1 = predict_eps(denoiser, x, g, i, cond)
    e2 = denoiser.eps_at(transfer(x, e1, to_mid), mid, i, cond)
    e3 = denoiser.eps_at(transfer(x, e2, to_mid), mid, i, cond)
    e4 = predict_eps(denoiser, transfer(x, e3, to_s), g, i + 1, cond)
    eps = torch.add(e1, e4).add_(e2, alpha=2).add_(e3, alpha=2).mul_(constant(1 / 6, e1))  # (e1+2e2+2e3+e4)/6
    return transfer(x, eps, to_s), eps, e1


@torch.no_grad()
def pndm(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """F-PNDM: three pseudo Runge-Kutta steps, then 4th-order PLMS (NFE = N + 9, needs N >= 4).

    Deterministic (``generator`` is accepted for a uniform signature and unused).
    """
    if torch.is_tensor(timesteps) and timesteps.ndim == 1 and 2 <= timesteps.numel() < 5:
        raise ValueError(
            f"timesteps: F-PNDM needs at least 4 steps (its Runge-Kutta warm start evaluates "
            f"the model at t_3), got {timesteps.numel() - 1}"
        )
    ok = torch.is_tensor(timesteps) and timesteps.ndim == 1 and timesteps.numel() >= 5
    tm = (timesteps[:3] + timesteps[1:4]).detach().to(torch.float64) / 2 if ok else None  # RK midpoints
    g = prepare(denoiser, x, timesteps, moves_along_eps=True, extra_times=tm, name="F-PNDM")
    n, mid = g.num_steps, g.extra
    a, s = g.times.alpha, g.times.sigma
    to_mid = transfer_coefficients(a[:3], s[:3], mid.alpha, mid.sigma, "eps", x.dtype)
    history: list[Tensor] = []
    for i in steps(n, progress, "pndm"):
        if i < 3:
            x_new, eps, e1 = _runge_kutta(denoiser, g, mid, to_mid[i], i, x, cond)
            history.append(e1)
        else:
            e = predict_eps(denoiser, x, g, i, cond)
            history = (history + [e])[-4:]
            eps = linear_multistep(history)
            x_new = transfer(x, eps, g.eps_transfer[i])
        if callback is not None:
            x_new = report(callback, g, i, x_new, pair_from_eps(x, eps, g, i), eps)
        x = x_new
    return finish(denoiser, x)
