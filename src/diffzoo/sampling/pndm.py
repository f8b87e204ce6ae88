"""Pseudo numerical methods (Liu et al., *PNDM*, ICLR 2022): PLMS and F-PNDM.

Both integrate the probability-flow ODE on the data manifold by combining noise estimates and moving
with the transfer ``phi(x, eps', t, s)`` (Eq. 9), which equals the DDIM step with ``eps'``
(:func:`diffzoo.sampling.base.transfer_eps`). The 4th-order linear multistep combination (Eq. 12) is::

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

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.random import Generator
from diffzoo.sampling.base import Callback, Grid, predict, prepare, report, steps, transfer_eps

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
    out = coeffs[0] * recent[0]
    for c, e in zip(coeffs[1:], recent[1:]):
        out = out + c * e
    return out


def _step(g: Grid, i: int, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    return transfer_eps(x, eps, g.alpha[i], g.sigma[i], g.alpha[i + 1], g.sigma[i + 1])


@torch.no_grad()
def plms(denoiser: Denoiser, x: Tensor, timesteps: Tensor, cond: Any = None, *, generator: Generator = None,
         callback: Callback | None = None, progress: bool = False) -> Tensor:
    """PLMS: pseudo linear multistep with diffusers' ``skip_prk_steps`` warm start (NFE = N + 1).

    Deterministic (``generator`` is accepted for a uniform signature and unused).
    """
    g = prepare(denoiser, x, timesteps)
    n = g.num_steps
    history: list[Tensor] = []
    for i in steps(n, progress, "plms"):
        _, e = predict(denoiser, x, g.t[i], cond)
        if i == 0 and n > 1:  # pseudo improved Euler: predictor to t_1, average the two estimates
            x_pred, _ = _step(g, 0, x, e)
            _, e_pred = predict(denoiser, x_pred, g.t[1], cond)
            eps = (e + e_pred) / 2
        else:
            eps = linear_multistep(history + [e])
        history = (history + [e])[-4:]
        x, x0 = _step(g, i, x, eps)
        report(callback, g, i, x, x0, eps)
    return x


def _runge_kutta(denoiser: Denoiser, g: Grid, i: int, x: Tensor, cond: Any) -> tuple[Tensor, Tensor, Tensor]:
    """One pseudo Runge-Kutta step (Liu et al. 2022, Eq. 13): returns ``(x_s, eps', e1)``."""
    t, s = g.t[i], g.t[i + 1]
    tm = (t + s) / 2
    am, sm = denoiser.schedule.alpha_sigma(tm)
    am, sm = am.to(x.dtype), sm.to(x.dtype)
    at, st, as_, ss = g.alpha[i], g.sigma[i], g.alpha[i + 1], g.sigma[i + 1]
    _, e1 = predict(denoiser, x, t, cond)
    x2, _ = transfer_eps(x, e1, at, st, am, sm)
    _, e2 = predict(denoiser, x2, tm, cond)
    x3, _ = transfer_eps(x, e2, at, st, am, sm)
    _, e3 = predict(denoiser, x3, tm, cond)
    x4, _ = transfer_eps(x, e3, at, st, as_, ss)
    _, e4 = predict(denoiser, x4, s, cond)
    eps = (e1 + 2 * e2 + 2 * e3 + e4) / 6
    x_s, _ = transfer_eps(x, eps, at, st, as_, ss)
    return x_s, eps, e1


@torch.no_grad()
def pndm(denoiser: Denoiser, x: Tensor, timesteps: Tensor, cond: Any = None, *, generator: Generator = None,
         callback: Callback | None = None, progress: bool = False) -> Tensor:
    """F-PNDM: three pseudo Runge-Kutta steps, then 4th-order PLMS (NFE = N + 9, needs N >= 4).

    Deterministic (``generator`` is accepted for a uniform signature and unused).
    """
    g = prepare(denoiser, x, timesteps)
    n = g.num_steps
    if n < 4:
        raise ValueError(f"timesteps: F-PNDM needs at least 4 steps (its Runge-Kutta warm start evaluates "
                         f"the model at t_3), got {n}")
    history: list[Tensor] = []
    for i in steps(n, progress, "pndm"):
        if i < 3:
            x_new, eps, e1 = _runge_kutta(denoiser, g, i, x, cond)
            history.append(e1)
            x0 = (x - g.sigma[i] * eps) / g.alpha[i]
        else:
            _, e = predict(denoiser, x, g.t[i], cond)
            history = (history + [e])[-4:]
            eps = linear_multistep(history)
            x_new, x0 = _step(g, i, x, eps)
        x = x_new
        report(callback, g, i, x, x0, eps)
    return x
