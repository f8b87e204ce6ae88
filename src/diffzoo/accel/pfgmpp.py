"""PFGM++: the perturbation kernel of augmentation dimension ``D``, its prior, and the EDM-style loss.

Xu, Liu, Tian, Tong, Tegmark, Jaakkola, *PFGM++: Unlocking the Potential of Physics-Inspired Generative
Models*, ICML 2023, arXiv 2302.04265 (official code ``Newbeeer/pfgmpp``: ``training/loss.py``,
``generate.py``).

With ``N`` the data dimension and the alignment ``r = sigma sqrt(D)`` (Sec. 4), the perturbation of a data
point is ``y = x + R u``: ``u`` uniform on the unit sphere of R^N, ``R = r sqrt(B / (1 - B))`` with
``B ~ Beta(N/2, D/2)``. We draw it as ``R u = sigma g / sqrt(chi2_D / D)`` with ``g ~ N(0, I_N)`` and
``chi2_D = 2 Gamma(D/2)``: ``g / |g|`` is uniform on the sphere and independent of ``|g|^2 / 2 ~
Gamma(N/2)``, so ``|g|^2 / chi2_D = G_N / G_D = B / (1 - B)`` -- the same law (a multivariate Student-t of
``D`` degrees of freedom scaled by ``sigma``), with ``E|R u|^2 = sigma^2 N D / (D - 2)`` for ``D > 2``
and the Gaussian kernel ``sigma g`` as ``D -> inf`` (the same ``g`` from the same generator: the two
kernels converge sample by sample). Gamma draws use Marsaglia & Tsang's method on the given generator
(float64), so every draw is reproducible.

Training is EDM's (Karras et al. 2022) with only the kernel changed: ``ln sigma ~ N(-1.2, 1.2^2)``,
loss ``lambda(sigma) |D_theta(y, sigma) - x|^2``, ``lambda = (sigma^2 + sigma_data^2) / (sigma
sigma_data)^2``. Sampling is EDM's Heun sampler unchanged (the ODE in ``sigma`` is the same once ``r =
sigma sqrt(D)``); only the prior changes: :func:`prior_sample` at ``sigma_max``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_range, check_tensor
from diffzoo.core.random import Generator, generator_list, randn
from diffzoo.sampling import get_timesteps, sample

Tensor = torch.Tensor

#: ``D`` at or above which the kernel is the Gaussian one (``float('inf')`` is accepted too).
GAUSSIAN_D = math.inf


def check_D(D: float, arg: str = "D") -> float:
    """``D`` as a float, or ``ValueError`` naming ``arg`` unless ``D > 2`` (``inf`` = diffusion / EDM)."""
    if isinstance(D, bool) or not isinstance(D, (int, float)):
        raise TypeError(f"{arg}: expected a number > 2 (or inf), got {type(D).__name__}")
    D = float(D)
    if math.isnan(D) or D <= 2:
        raise ValueError(f"{arg}: PFGM++ needs D > 2 (finite second moment), got {D:g}")
    return D


def _gamma_one(shape: tuple[int, ...], a: float, gen: torch.Generator | None) -> Tensor:
    """Gamma(a, 1) draws (float64) for ``a >= 1`` by Marsaglia & Tsang (2000), on one generator."""
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(shape, dtype=torch.float64).reshape(-1)
    todo = torch.arange(out.numel())
    while todo.numel():
        k = todo.numel()
        z = torch.randn(k, generator=gen, dtype=torch.float64)
        u = torch.rand(k, generator=gen, dtype=torch.float64)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (u.clamp_min(1e-300).log() < 0.5 * z * z + d - d * v + d * v.clamp_min(1e-300).log())
        out[todo[ok]] = (d * v)[ok]
        todo = todo[~ok]
    return out.reshape(shape)


def sample_gamma(shape: tuple[int, ...], a: float, generator: Generator = None) -> Tensor:
    """Gamma(``a``, 1) draws in float64; ``generator`` one generator or one per row (``shape[0]`` rows)."""
    check_range(a, "a", 1.0, math.inf, hi_open=True)
    if generator is None or isinstance(generator, torch.Generator):
        return _gamma_one(tuple(shape), float(a), generator)
    gens = generator_list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"generator: got {len(gens)} generators for {shape[0]} rows")
    return torch.stack([_gamma_one(tuple(shape[1:]), float(a), g) for g in gens])


def radius_scale(batch: int, D: float, generator: Generator = None) -> Tensor:
    """``sqrt(D / chi2_D)`` per sample (float64, shape ``(batch,)``): the factor that turns the Gaussian
    kernel ``sigma g`` into PFGM++'s ``R u``; exactly 1 for ``D = inf``."""
    D = check_D(D)
    if math.isinf(D):
        return torch.ones(batch, dtype=torch.float64)
    chi2 = 2.0 * sample_gamma((batch,), D / 2.0, generator)
    return (D / chi2).sqrt()


def perturbation(
    shape: tuple[int, ...],
    sigma: Tensor | float,
    D: float,
    generator: Generator = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The PFGM++ perturbation ``R u`` (shape ``shape``, batch first) at per-sample or scalar ``sigma``.

    ``g ~ N(0, I_N)`` is drawn first, then the chi-square factor, from the same generator(s); ``D = inf``
    returns ``sigma g`` (EDM's kernel) with the same ``g``.
    """
    D = check_D(D)
    b = int(shape[0])
    g = randn(shape, generator, torch.float64)
    s = torch.as_tensor(sigma, dtype=torch.float64)
    s = s.expand(b) if s.ndim == 0 else s.to(torch.float64)
    if s.shape != (b,):
        raise ValueError(f"sigma: expected a scalar or shape ({b},), got {tuple(s.shape)}")
    scale = s * radius_scale(b, D, generator)
    return (g * scale.reshape(-1, *([1] * (len(shape) - 1)))).to(dtype)


def prior_sample(
    shape: tuple[int, ...], sigma_max: float, D: float, generator: Generator = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The PFGM++ prior at ``r_max = sigma_max sqrt(D)``: ``x_T = R u`` (heavy-tailed for small ``D``)."""
    check_range(sigma_max, "sigma_max", 0.0, math.inf, lo_open=True, hi_open=True)
    return perturbation(shape, float(sigma_max), D, generator, dtype)


def expected_sq_norm(sigma: float, N: int, D: float) -> float:
    """``E |R u|^2 = sigma^2 N D / (D - 2)`` (``sigma^2 N`` for ``D = inf``)."""
    D = check_D(D)
    return sigma * sigma * N * (1.0 if math.isinf(D) else D / (D - 2.0))


def sample_sigma(batch: int, generator: Generator = None, p_mean: float = -1.2, p_std: float = 1.2) -> Tensor:
    """EDM's training noise levels ``ln sigma ~ N(p_mean, p_std^2)`` (float64, shape ``(batch,)``)."""
    return (randn((batch,), generator, torch.float64) * p_std + p_mean).exp()


def pfgmpp_loss(
    model: Callable[..., Tensor],
    x: Tensor,
    D: float,
    generator: Generator = None,
    cond: Any = None,
    *,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:
    """EDM's weighted denoising loss with PFGM++'s kernel (``D = inf``: EDM's loss exactly).

    ``model(y, sigma, cond) -> D_theta(y; sigma)`` is an EDM-preconditioned x0-predictor (e.g. the
    ``edm_digits_unet`` architecture). Returns the batch mean of ``lambda(sigma) |D_theta - x|^2 / N``.
    """
    check_tensor(x, "x", floating=True)
    b = x.shape[0]
    sigma = sample_sigma(b, generator, p_mean, p_std)
    n = perturbation(tuple(x.shape), sigma, D, generator, x.dtype).to(x.device)
    s = sigma.to(device=x.device, dtype=x.dtype)
    weight = (s * s + sigma_data**2) / (s * sigma_data) ** 2
    out = model(x + n, s, cond)
    err = (out - x).pow(2).flatten(1).mean(1)
    return (weight * err).mean()


@torch.no_grad()
def pfgmpp_sample(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    D: float,
    num_steps: int = 18,
    cond: Any = None,
    *,
    generator: Generator = None,
    sampler: str = "heun",
    rho: float = 7.0,
    callback: Callable[[dict], Any] | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    """PFGM++ sampling: the prior :func:`prior_sample` at the grid's first ``sigma``, then ``sampler``
    (EDM's Heun by default: ``2 num_steps - 1`` NFE) on the Karras grid of ``denoiser``'s VE/EDM schedule.

    ``x_init`` replaces the prior draw (e.g. the same noise for several models). ``callback`` is the
    sampler's (it may return the state to continue from: noise injection ``x += alpha t z``).
    """
    ts = get_timesteps(denoiser.schedule, num_steps, "karras", rho=rho)
    if x_init is None:
        x_init = prior_sample(shape, float(denoiser.schedule.ve_sigma(ts[:1])[0]), D, generator)
    return sample(sampler, denoiser, x_init, ts, cond, callback=callback)


__all__ = [
    "pfgmpp_sample",
    "GAUSSIAN_D",
    "check_D",
    "expected_sq_norm",
    "perturbation",
    "pfgmpp_loss",
    "prior_sample",
    "radius_scale",
    "sample_gamma",
    "sample_sigma",
]
