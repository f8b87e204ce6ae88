"""Sampling grids: which model times a sampler visits, and their validation.

A grid is a strictly decreasing float64 tensor ``t_0 > t_1 > ... > t_N`` of length ``N + 1`` whose
last entry is ``schedule.t_end`` (the end of sampling: ``-1`` on a discrete schedule, meaning
``abar = final_alpha_cumprod``). A sampler with ``N`` steps evaluates the network at ``t_0..t_{N-1}``
(plus stage points for multi-stage methods) and lands at ``t_N``.

Spacings (for a discrete schedule with ``T`` training steps; continuous schedules in brackets):

* ``uniform`` -- ``round(linspace(T-1, 0, N+1))[:N]``: diffusers' ``timestep_spacing="linspace"`` as
  used by ``DPMSolverMultistepScheduler`` [``linspace(t_max, t_end, N+1)``].
* ``leading`` -- ``(T//N) * (N-1, ..., 1, 0) + steps_offset``: the DDIM / PNDM papers' grid
  ``range(0, T, T//N)`` (Song et al. 2021, Sec. 4.2; Liu et al. 2022) and diffusers' ``"leading"``.
* ``trailing`` -- ``round(arange(T, 0, -T/N)) - 1``: starts at ``T-1`` (Lin et al. 2024, Table 2),
  diffusers' ``"trailing"``.

On continuous schedules ``leading`` and ``trailing`` are the same as ``uniform``.
* ``karras`` -- ``sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho`` on the schedule's
  VE noise level ``sigma/alpha`` (Karras et al. 2022, Eq. 5, ``rho = 7``), mapped back to model time
  with ``schedule.t_from_ve_sigma`` (fractional on discrete schedules).
* ``quadratic`` -- ``t_i = t_end + (t_max - t_end) (1 - i/N)^2`` (discrete: ``round((T-1)(1 - i/N)^2)``):
  DDIM's quadratic trajectory (Song et al. 2021, Appendix D.2), denser near the data. DDIM's code
  squares ``linspace(0, sqrt(0.8 T), N)`` and so stops at ``0.8 T``; here the grid spans the full range.
"""

from __future__ import annotations

import math

import torch

from diffzoo.core.errors import check_choice, check_int, check_range, check_tensor
from diffzoo.core.schedules import NoiseSchedule

Tensor = torch.Tensor

SPACINGS = ("uniform", "leading", "trailing", "karras", "quadratic")


def _karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _ve_range(schedule: NoiseSchedule) -> tuple[float, float]:
    if hasattr(schedule, "sigma_min_max"):
        return schedule.sigma_min_max()  # type: ignore[attr-defined]
    lo = schedule.ve_sigma(torch.tensor(schedule.t_min, dtype=torch.float64))
    hi = schedule.ve_sigma(torch.tensor(schedule.t_max, dtype=torch.float64))
    return float(lo), float(hi)


def _discrete_grid(schedule: NoiseSchedule, n: int, spacing: str, steps_offset: int) -> Tensor:
    big_t = int(schedule.t_max) + 1
    if spacing == "uniform":
        t = torch.linspace(big_t - 1, 0, n + 1, dtype=torch.float64).round()[:n]
    elif spacing == "leading":
        t = torch.arange(n - 1, -1, -1, dtype=torch.float64) * (big_t // n) + steps_offset
    elif spacing == "trailing":
        t = (torch.arange(big_t, 0, -big_t / n, dtype=torch.float64).round() - 1)[:n]
    else:  # quadratic
        u = torch.linspace(1, 0, n + 1, dtype=torch.float64)[:n]
        t = (u**2 * (big_t - 1)).round()
    return t


def _continuous_grid(schedule: NoiseSchedule, n: int, spacing: str) -> Tensor:
    u = torch.linspace(1, 0, n + 1, dtype=torch.float64)[:n]
    lo, hi = schedule.t_end, schedule.t_max
    if spacing == "quadratic":
        return lo + (hi - lo) * u**2
    return lo + (hi - lo) * u  # uniform; leading and trailing are discrete-grid conventions: same here


def get_timesteps(
    schedule: NoiseSchedule,
    num_steps: int,
    spacing: str = "uniform",
    *,
    rho: float = 7.0,
    steps_offset: int = 0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    """The model-time grid of a ``num_steps``-step sampler (see the module docstring for spacings).

    Returns a strictly decreasing float64 tensor of length ``num_steps + 1`` ending at
    ``schedule.t_end``. ``rho``, ``sigma_min``, ``sigma_max`` apply to ``karras`` (default: the
    schedule's VE noise range); ``steps_offset`` to ``leading`` (diffusers' ``steps_offset``).
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule: expected a NoiseSchedule, got {type(schedule).__name__}")
    check_choice(spacing, SPACINGS, "spacing")
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps: expected a positive integer, got {num_steps!r}")
    steps_offset = check_int(steps_offset, "steps_offset", lo=0)
    if spacing == "karras":
        rho = check_range(rho, "rho", 0.0, math.inf, lo_open=True, hi_open=True)
        smin, smax = _ve_range(schedule)
        smin = smin if sigma_min is None else check_range(sigma_min, "sigma_min", 0.0, lo_open=True)
        smax = smax if sigma_max is None else check_range(sigma_max, "sigma_max", 0.0, lo_open=True)
        if not 0 < smin < smax < math.inf:
            raise ValueError(
                f"sigma_min, sigma_max: need 0 < sigma_min < sigma_max < inf, got {smin}, {smax} "
                f"(schedule {schedule.name!r}'s VE range; pass sigma_min/sigma_max explicitly)"
            )
        t = schedule.t_from_ve_sigma(_karras_sigmas(num_steps, smin, smax, rho)).to(torch.float64)
        t = t.clamp(schedule.t_min, schedule.t_max)
    elif schedule.kind == "discrete":
        t = _discrete_grid(schedule, num_steps, spacing, steps_offset)
        if spacing == "leading" and t.numel() and float(t[0]) > schedule.t_max:
            raise ValueError(
                f"steps_offset: {steps_offset} moves the first of {num_steps} 'leading' steps to "
                f"{float(t[0]):g}, past the last training timestep {schedule.t_max:g}"
            )
        if t.numel() != num_steps or bool((t[1:] >= t[:-1]).any()) or float(t[-1]) < 0:
            raise ValueError(
                f"num_steps: {num_steps} steps do not fit a {spacing!r} grid on "
                f"{int(schedule.t_max) + 1} training timesteps (use 'leading' for every step)"
            )
    else:
        t = _continuous_grid(schedule, num_steps, spacing)
    grid = torch.cat([t, torch.tensor([schedule.t_end], dtype=torch.float64)])
    return validate_timesteps(schedule, grid, arg=f"timesteps ({spacing}, num_steps={num_steps})")


def validate_timesteps(schedule: NoiseSchedule, timesteps: Tensor, arg: str = "timesteps") -> Tensor:
    """Check a sampling grid and return it as float64: 1-D, at least 2 entries, strictly decreasing,
    within ``[schedule.t_end, schedule.t_max]``. Raises ``ValueError`` naming ``arg`` otherwise."""
    check_tensor(timesteps, arg, ndim=1)
    if timesteps.dtype == torch.bool or timesteps.is_complex():
        raise TypeError(f"{arg}: expected real model times (a float or integer tensor), got dtype {timesteps.dtype}")
    if timesteps.numel() < 2:
        raise ValueError(f"{arg}: need at least 2 entries (start and end), got {timesteps.numel()}")
    t = timesteps.detach().to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{arg}: contains NaN or inf")
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError(f"{arg}: must be strictly decreasing (noisy -> clean), got {t.tolist()[:8]}...")
    tol = 1e-6 * max(1.0, abs(schedule.t_max))
    if float(t[0]) > schedule.t_max + tol or float(t[-1]) < schedule.t_end - tol:
        raise ValueError(
            f"{arg}: must lie in [t_end={schedule.t_end:g}, t_max={schedule.t_max:g}], "
            f"got [{float(t[-1]):g}, {float(t[0]):g}]"
        )
    return t
