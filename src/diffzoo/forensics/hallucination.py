"""Hallucination by mode interpolation (Aithal, Maini, Lipton, Kolter, *Understanding Hallucinations in
Diffusion Models through Mode Interpolation*, NeurIPS 2024, arXiv 2406.09358; official code
``locuslab/diffusion-model-hallucination``, ``gaussian_experiments/train_toy_filter.py``).

A diffusion model trained on well-separated modes produces samples *between* them (hallucinations):
its learned score is a smooth interpolation where the true score jumps. Such samples are unstable at the
end of the reverse process: the predicted clean sample ``x0^(t) = (x_t - sqrt(1-abar_t) eps)/sqrt(abar_t)``
keeps moving. The detector is the variance (``ddof = 0``) of ``x0^(t)`` over the last ``K`` reverse steps
(smallest ``t``; official ``K = 10`` of 1000 ancestral steps), averaged over dimensions; filtering keeps
the lowest-variance samples.

* :func:`sample_with_x0` -- ancestral (DDPM) sampling that records the last ``K`` x0 predictions;
* :func:`hallucination_score` -- ``Hal(x) = mean_d Var_k x0^(t_k)_d``;
* :func:`between_modes` -- the paper's ground truth on mixtures: ``min_k |x - mu_k| > 4 sigma``;
* :func:`score_field` -- the score ``-eps/sigma_t`` of a denoiser on a 1-D grid (learned or exact).

Deviation: :func:`diffzoo.sampling.ddpm` uses the posterior variance ``beta~_t`` (Ho et al.'s "fixed
small"); the official toy code samples with ``beta_t`` ("fixed large").
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_int, check_range, check_tensor
from diffzoo.core.random import Generator
from diffzoo.sampling import ddpm, get_timesteps

Tensor = torch.Tensor

#: The official number of final reverse steps whose x0 predictions are compared.
LAST_K = 10


@torch.no_grad()
def sample_with_x0(
    den: Denoiser,
    noise: Tensor,
    num_steps: int = 1000,
    last_k: int = LAST_K,
    cond: Any = None,
    generator: Generator = None,
) -> tuple[Tensor, Tensor]:
    """DDPM ancestral sampling from ``noise`` over ``num_steps`` steps; returns ``(samples, x0s)`` where
    ``x0s`` ``(K, B, ...)`` holds the x0 predictions of the last ``K = min(last_k, num_steps)`` steps."""
    check_tensor(noise, "noise", floating=True)
    num_steps = check_int(num_steps, "num_steps", 1)
    last_k = check_int(last_k, "last_k", 2)
    keep: list[Tensor] = []
    first = num_steps - min(last_k, num_steps)

    def record(d: dict) -> None:
        if int(d["i"]) >= first:
            keep.append(d["x0"].detach().clone())

    x = ddpm(den, noise, get_timesteps(den.schedule, num_steps, "leading"), cond, generator=generator, callback=record)
    return x, torch.stack(keep)


def hallucination_score(x0s: Tensor) -> Tensor:
    """``Hal = mean over dimensions of Var_k(x0^(t_k))`` (ddof 0) for ``x0s`` of shape ``(K, B, ...)``;
    non-negative and invariant to a common shift of the trajectory."""
    check_tensor(x0s, "x0s", floating=True)
    if x0s.ndim < 2 or x0s.shape[0] < 2:
        raise ValueError(f"x0s: expected (K >= 2, B, ...) predictions, got shape {tuple(x0s.shape)}")
    return x0s.double().var(0, unbiased=False).flatten(1).mean(1)


def between_modes(x: Tensor, modes: Tensor, sigma: float, k: float = 4.0) -> Tensor:
    """Bool per row of ``x`` ``(B, d)``: farther than ``k * sigma`` from every mode ``(M, d)``."""
    check_tensor(x, "x", ndim=2, floating=True)
    check_tensor(modes, "modes", ndim=2, floating=True, shape=(None, x.shape[1]))
    check_range(sigma, "sigma", 0.0, None, lo_open=True)
    return torch.cdist(x.double(), modes.double()).min(-1).values > k * sigma


@torch.no_grad()
def score_field(den: Denoiser, xs: Tensor, t: float) -> Tensor:
    """The score ``grad log p_t(x) = -eps(x, t) / sigma_t`` of ``den`` at the points ``xs`` ``(N, d)``,
    where ``x`` is the *noisy* state at time ``t`` (any denoiser: a network or an exact mixture)."""
    check_tensor(xs, "xs", ndim=2, floating=True)
    tt = torch.full((xs.shape[0],), float(t), dtype=torch.float64)
    _, sigma = den.schedule.alpha_sigma(tt)
    eps = den.x0_eps(xs, tt)[1]
    return -eps.double() / sigma.double()[:, None]
