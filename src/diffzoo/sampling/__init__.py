"""Samplers: stateless functions ``fn(denoiser, x, timesteps, cond=None, *, generator, callback, progress)``.

Every sampler takes the state ``x`` at ``timesteps[0]`` and returns it at ``timesteps[-1]`` (a grid
from :func:`get_timesteps`), asks the network only through ``denoiser.x0_eps`` (in the loop, its
precomputed form ``x0_eps_at``) and moves with the one DDIM transfer of
:mod:`diffzoo.core.parameterization`. See each module for the paper and equations.

=============  ==========================================  ==========================================
name           method                                      NFE
=============  ==========================================  ==========================================
``ddpm``       ancestral (Ho et al. 2020)                  N
``ddim``       DDIM, ``eta`` (Song et al. 2021)            N
``plms``       PLMS, diffusers' warm start (Liu 2022)      N + 1
``pndm``       F-PNDM, pseudo RK warm start (Liu 2022)     N + 9
``dpmpp_2m``   DPM-Solver++(2M) (Lu et al. 2022b)          N
``euler``      Euler, VE frame (Karras et al. 2022)        N
``heun``       Heun, VE frame (Karras et al. 2022)         2N - 1 (2N if the grid ends above 0 noise)
``flow_euler`` Euler on the velocity (Liu et al. 2023)     N
=============  ==========================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_choice
from diffzoo.core.random import Generator, randn
from diffzoo.sampling.ddim import ddim, ddpm
from diffzoo.sampling.dpm_solver import dpmpp_2m
from diffzoo.sampling.flow import flow_euler
from diffzoo.sampling.karras import euler, heun, heun_final_correction
from diffzoo.sampling.pndm import plms, pndm
from diffzoo.sampling.timesteps import SPACINGS, get_timesteps, validate_timesteps

Tensor = torch.Tensor

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "plms": plms,
    "pndm": pndm,
    "dpmpp_2m": dpmpp_2m,
    "euler": euler,
    "heun": heun,
    "flow_euler": flow_euler,
}

STOCHASTIC = frozenset({"ddpm"})


def nfe(name: str, num_steps: int, ends_at_zero: bool = True) -> int:
    """Network evaluations of sampler ``name`` over ``num_steps`` steps.

    ``ends_at_zero``: the grid ends at zero noise (or at a discrete schedule's end marker ``t = -1``),
    where Heun's last step is an Euler step (``2N - 1``); ``False`` for a grid ending above zero noise at
    a model time, where it is a full Heun step (``2N``; see :func:`heun_final_correction`). Other
    samplers do not depend on it.
    """
    check_choice(name, SAMPLERS, "sampler")
    if name == "heun":
        return 2 * num_steps - (1 if ends_at_zero else 0)
    return num_steps + {"plms": 1, "pndm": 9}.get(name, 0)


def steps_for_nfe(name: str, budget: int, ends_at_zero: bool = True) -> int | None:
    """The largest step count whose NFE (:func:`nfe`) is at most ``budget`` (``None`` if not even the minimum fits)."""
    check_choice(name, SAMPLERS, "sampler")
    heun = (budget + 1) // 2 if ends_at_zero else budget // 2
    n = {"plms": budget - 1, "pndm": budget - 9, "heun": heun}.get(name, budget)
    return n if n >= (4 if name == "pndm" else 1) else None


def sample(name: str, denoiser: Denoiser, x: Tensor, timesteps: Tensor, cond: Any = None, **kwargs: Any) -> Tensor:
    """Run sampler ``name`` (a key of :data:`SAMPLERS`)."""
    check_choice(name, SAMPLERS, "sampler")
    return SAMPLERS[name](denoiser, x, timesteps, cond, **kwargs)


def initial_noise(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    timesteps: Tensor,
    generator: Generator = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Starting state ``x_{t_0} ~ N(0, (alpha^2 + sigma^2) I)``: the prior for unit-variance data
    (``N(0, I)`` on variance-preserving schedules, ``N(0, (1 + sigma^2) I)`` on VE)."""
    a, s = denoiser.schedule.alpha_sigma(validate_timesteps(denoiser.schedule, timesteps)[0])
    return randn(shape, generator, dtype, device) * float(torch.sqrt(a * a + s * s))


__all__ = [
    "SAMPLERS",
    "SPACINGS",
    "STOCHASTIC",
    "ddim",
    "ddpm",
    "dpmpp_2m",
    "euler",
    "flow_euler",
    "get_timesteps",
    "heun",
    "heun_final_correction",
    "initial_noise",
    "nfe",
    "plms",
    "pndm",
    "sample",
    "steps_for_nfe",
    "validate_timesteps",
]
