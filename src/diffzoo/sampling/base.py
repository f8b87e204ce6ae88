"""Shared pieces of every sampler: grid tables, the two transfer forms, noise, progress and callbacks.

Every deterministic move from model time ``t`` to ``s`` in diffzoo is the DDIM transfer
``x_s = alpha_s x0 + sigma_s eps`` (:func:`diffzoo.core.parameterization.ddim_step`) applied to a
consistent pair ``(x0, eps)`` with ``x_t = alpha_t x0 + sigma_t eps``. Solvers differ only in how they
build that pair:

* from a combined noise estimate ``eps'`` (PLMS, F-PNDM, Heun): ``x0' = (x_t - sigma_t eps') / alpha_t``
  -- :func:`transfer_eps`; this is the PNDM transfer ``phi`` (Liu et al. 2022, Eq. 9) and, in the VE
  frame ``x / alpha``, the Euler/Heun update ``z + (sigma_s - sigma_t) d`` of Karras et al. (2022);
* from a combined data estimate ``D`` (DPM-Solver++): ``eps' = (x_t - alpha_t D) / sigma_t`` --
  :func:`transfer_x0`; this equals ``(sigma_s/sigma_t) x_t + alpha_s (1 - e^{-h}) D`` (Lu et al.
  2022b, Eq. 9), ``h = lambda_s - lambda_t``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_tensor
from diffzoo.core.parameterization import ddim_step
from diffzoo.core.random import Generator, randn
from diffzoo.sampling.timesteps import validate_timesteps

Tensor = torch.Tensor
Callback = Callable[[dict], None]


@dataclass(frozen=True)
class Grid:
    """Schedule tables of a sampling grid, precomputed before the loop.

    ``t`` stays float64 (model times); ``alpha``, ``sigma``, ``log_snr`` are in the state dtype.
    """

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    log_snr: Tensor

    @property
    def num_steps(self) -> int:
        return self.t.numel() - 1


def prepare(denoiser: Denoiser, x: Tensor, timesteps: Tensor) -> Grid:
    """Validate the inputs of a sampler and precompute its schedule tables."""
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser: expected a diffzoo Denoiser, got {type(denoiser).__name__}")
    check_tensor(x, "x", floating=True)
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: samplers run in float32 or float64, got {x.dtype}")
    t = validate_timesteps(denoiser.schedule, timesteps).to(x.device)
    a, s = denoiser.schedule.alpha_sigma(t)
    lam = 2.0 * (torch.log(a) - torch.log(s))  # +inf where sigma = 0 (the clean end)
    return Grid(t=t, alpha=a.to(x.dtype), sigma=s.to(x.dtype), log_snr=lam.to(x.dtype))


def transfer_eps(x: Tensor, eps: Tensor, a_t: Tensor, s_t: Tensor, a_s: Tensor, s_s: Tensor) -> tuple[Tensor, Tensor]:
    """Move ``x`` from ``t`` to ``s`` along the noise estimate ``eps``; returns ``(x_s, x0)``."""
    x0 = (x - s_t * eps) / a_t
    return ddim_step(x0, eps, a_s, s_s), x0


def transfer_x0(x: Tensor, x0: Tensor, a_t: Tensor, s_t: Tensor, a_s: Tensor, s_s: Tensor) -> tuple[Tensor, Tensor]:
    """Move ``x`` from ``t`` to ``s`` along the data estimate ``x0``; returns ``(x_s, eps)``."""
    eps = (x - a_t * x0) / s_t
    return ddim_step(x0, eps, a_s, s_s), eps


def noise_like(x: Tensor, generator: Generator) -> Tensor:
    """Standard normal noise shaped like ``x``; a list of generators gives per-sample streams."""
    return randn(x.shape, generator, x.dtype, x.device)


def check_generator(generator: Generator, x: Tensor) -> None:
    if generator is None or isinstance(generator, torch.Generator):
        return
    gens = list(generator)
    if len(gens) != x.shape[0] or not all(isinstance(g, torch.Generator) for g in gens):
        raise ValueError(f"generator: expected a torch.Generator or a list of {x.shape[0]} generators")


def steps(n: int, progress: bool, desc: str) -> Iterator[int]:
    """``range(n)`` with an optional tqdm bar."""
    return iter(tqdm(range(n), desc=desc, disable=not progress, leave=False))


def report(callback: Callback | None, grid: Grid, i: int, x: Tensor, x0: Tensor, eps: Tensor) -> None:
    """Call ``callback(dict(i, t, s, x, x0, eps))`` after step ``i`` (``x`` is the new state at ``s``)."""
    if callback is not None:
        callback({"i": i, "t": grid.t[i], "s": grid.t[i + 1], "x": x, "x0": x0, "eps": eps})


def predict(denoiser: Denoiser, x: Tensor, t: Tensor, cond: Any) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` from the denoiser -- the only way samplers see the network."""
    return denoiser.x0_eps(x, t, cond)
