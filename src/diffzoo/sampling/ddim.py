"""DDIM (Song et al. 2021) and DDPM ancestral sampling (Ho et al. 2020) as one step.

From model time ``t`` to ``s`` with ``(x0, eps)`` predicted at ``(x_t, t)`` (Song et al. 2021, Eq. 12)::

    x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z,        z ~ N(0, I)
    c   = eta * sigma_s * sqrt(1 - exp(lambda_t - lambda_s))      (Eq. 16, any alpha/sigma)

which for a variance-preserving schedule is ``eta sqrt((1-abar_s)/(1-abar_t)) sqrt(1 - abar_t/abar_s)``.
``eta = 0`` is the deterministic DDIM transfer (first-order solver of the probability-flow ODE);
``eta = 1`` is exactly DDPM's ancestral step with the posterior variance ``beta-tilde`` (Ho et al.
2020, Eqs. 6-7), i.e. sampling ``q(x_s | x_t, x0_hat)``.
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_range
from diffzoo.core.parameterization import ddim_step
from diffzoo.core.random import Generator
from diffzoo.sampling.base import Callback, NoiseSource, check_generator, finish, predict, prepare, report, steps

Tensor = torch.Tensor


def ddim_noise_scale(lam_t: Tensor, lam_s: Tensor, sigma_s: Tensor, eta: float) -> Tensor:
    """``c = eta sigma_s sqrt(1 - exp(lambda_t - lambda_s))`` (Song et al. 2021, Eq. 16), elementwise."""
    return eta * sigma_s * torch.sqrt((-torch.expm1(lam_t - lam_s)).clamp(min=0))


@torch.no_grad()
def ddim(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    *,
    eta: float = 0.0,
    generator: Generator = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """DDIM with stochasticity ``eta`` in [0, 1] (0: deterministic ODE step, 1: DDPM ancestral).

    ``x`` is the state at ``timesteps[0]``; returns the state at ``timesteps[-1]``. Noise comes from
    ``generator`` (one generator, or one per sample for batch-invariant results) and is drawn only on
    steps whose noise scale is non-zero.
    """
    eta = check_range(eta, "eta", 0.0, 1.0)
    g = prepare(denoiser, x, timesteps, name="ddim")
    check_generator(generator, x)
    n = g.num_steps
    if eta == 0:
        direction, c = g.sigma_f[1:], [0.0] * n
    else:
        lam, sig = g.log_snr.to(torch.float64), g.sigma.to(torch.float64)
        cs = ddim_noise_scale(lam[:-1], lam[1:], sig[1:], eta)
        direction = torch.sqrt((sig[1:] ** 2 - cs**2).clamp(min=0)).to(x.dtype).tolist()
        c = cs.to(x.dtype).tolist()  # decided before the loop: no host sync inside it
    alpha = g.alpha_0d
    noise = NoiseSource(x, generator) if any(ci > 0 for ci in c) else None
    for i in steps(n, progress, "ddim" if eta == 0 else f"ddim(eta={eta:g})"):
        x0, eps = predict(denoiser, x, g, i, cond)
        x_new = ddim_step(x0, eps, alpha[i + 1], direction[i])
        if c[i] > 0:
            x_new.add_(noise.draw(), alpha=c[i])  # type: ignore[union-attr]
        x = x_new
        x = report(callback, g, i, x, x0, eps)
    return finish(denoiser, x)


@torch.no_grad()
def ddpm(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2, ``sigma_t^2 = beta-tilde``) on any grid.

    On the full grid ``T-1, ..., 0, -1`` this is Algorithm 2; on a sub-grid it samples the exact
    Gaussian posterior ``q(x_s | x_t, x0_hat)`` between grid points. Identical to ``ddim(eta=1)``.
    """
    return ddim(denoiser, x, timesteps, cond, eta=1.0, generator=generator, callback=callback, progress=progress)
