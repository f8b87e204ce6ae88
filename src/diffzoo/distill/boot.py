"""BOOT: data-free distillation by bootstrapping on the Signal-ODE (Gu, Zhai, Zhang, Liu, Susskind,
"BOOT: Data-free Distillation of Denoising Diffusion Models with Bootstrapping", arXiv 2306.05544).

The student ``g(eps, t, c)`` reads only the initial noise ``eps`` (and the time and label) and predicts
the *signal* ``y_t = (x_t - sigma_t eps) / alpha_t`` of the teacher's deterministic DDIM trajectory that
starts at ``x_T = eps``; ``y`` at the end of sampling is the sample itself, so one-step generation is
``g(eps, t_end)``.

Signal-ODE (paper, Sec. 3.1): ``dy/dt = -lambda'_t (f(x_t, t) - y_t)`` with ``x_t = alpha_t y_t + sigma_t
eps``, ``lambda_t = -log(alpha_t / sigma_t)`` and ``f`` the teacher's x0-prediction. The exact DDIM step
from ``t`` to ``s < t`` in signal space is (our derivation, checked by ``tests/test_distill.py``)::

    y_s = y_t + (1 - exp(-(lambda_t - lambda_s))) (f(alpha_t y_t + sigma_t eps, t) - y_t)

and ``alpha_s y_s + sigma_s eps`` is exactly DDIM's ``x_s`` (:func:`signal_step`).

Bootstrapping loss (paper, Sec. 3.2; the weighting is not confirmed by the sources we could read):
for consecutive grid times ``t > s``, ``L_BS = w ||g(eps, s) - SG[signal_step(g(eps, t))]||^2`` with
``w = 1 / Delta^2``, ``Delta = 1 - exp(-(lambda_t - lambda_s))`` (OFTSR's re-implementation of BOOT;
``weight="none"`` gives ``w = 1``); the target comes from the student's own prediction at the previous
(noisier) time under a stop-gradient, with no EMA target network. Boundary loss (reconstruction):
``L_BC = ||g(eps, T) - f(eps, T)||^2``, the teacher's x0 at ``x_T = eps``, applied every step with weight
``boundary_weight``. Our choices, labelled: the time grid is the teacher's ``num_steps``-step DDIM grid
(``t = grid[k]``, ``s = grid[k + 1]``, ``k`` uniform), so a perfect student reproduces that DDIM
sampler; the trajectory's ``y_T`` is taken as ``f(eps, T)`` (BOOT's boundary) rather than the exact
``(1 - sigma_T) eps / alpha_T`` -- a difference of ``alpha_T |f|`` in ``x_T``.

Clipping the teacher's x0 (``clip``, our choice, on by default in the recipe): BOOT's teachers predict the
signal directly (x-prediction), so ``f`` stays near the data range at every time. An eps-prediction teacher
converted to x0 amplifies its error by ``1 / alpha_t`` (156 at ``t = T`` on the linear schedule): on the
digits UNet with guidance 2, ``f(eps, T)`` has RMS 3.8 and entries up to 24 where the data lie in [-1, 1],
and the student must regress those. With ``clip = c`` the teacher's x0 is clamped to ``[-c, c]`` inside
every step (DDIM with ``clip_sample``, diffusers' semantics: eps is recomputed from the clipped x0, which
the signal form does implicitly), so every ``y`` on the trajectory stays in ``[-c, c]``. ``clip = None``
is the exact, unclipped DDIM (the unit tests). No data is read anywhere in this module: only ``eps`` and
labels are sampled.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_choice, check_range, check_tensor
from diffzoo.distill.common import alpha_sigma_like, check_steps, check_teacher, times_like
from diffzoo.sampling import get_timesteps

Tensor = torch.Tensor
WEIGHTS = ("delta", "none")


def boot_grid(den: Denoiser, num_steps: int) -> Tensor:
    """The bootstrapping time grid: the teacher's ``num_steps``-step uniform DDIM grid (``T`` ... ``t_end``)."""
    return get_timesteps(check_teacher(den).schedule, check_steps(num_steps, "num_steps"))


def log_snr_gap(den: Denoiser, t: Tensor, s: Tensor, like: Tensor) -> Tensor:
    """``Delta = 1 - exp(-(lambda_t - lambda_s)) = 1 - sigma_s alpha_t / (alpha_s sigma_t)``, broadcast."""
    a_t, s_t = alpha_sigma_like(den, t, like)
    a_s, s_s = alpha_sigma_like(den, s, like)
    return 1.0 - (s_s * a_t) / (a_s * s_t)


def teacher_x0(den: Denoiser, x: Tensor, t: Tensor, cond: Any = None, clip: float | None = None) -> Tensor:
    """The teacher's x0-prediction ``f(x, t)``, clamped to ``[-clip, clip]`` when ``clip`` is set."""
    x0 = den.x0_eps(x, t, cond)[0]
    return x0 if clip is None else x0.clamp(-clip, clip)


def signal_step(
    den: Denoiser,
    y_t: Tensor,
    eps: Tensor,
    t: Tensor | float,
    s: Tensor | float,
    cond: Any = None,
    clip: float | None = None,
) -> Tensor:
    """One teacher DDIM step ``t -> s`` in signal space: ``x_t = alpha_t y_t + sigma_t eps``,
    ``x_s = DDIM(x_t)``, returns ``y_s = (x_s - sigma_s eps) / alpha_s = y_t + Delta (f(x_t, t) - y_t)``
    (``alpha_s > 0`` always holds for ``s`` below the grid's first time; ``clip``: see the module docstring)."""
    check_tensor(y_t, "y_t", floating=True)
    check_tensor(eps, "eps", floating=True, shape=tuple(y_t.shape))
    if clip is not None:
        check_range(clip, "clip", 0.0, lo_open=True)
    t, s = times_like(t, y_t), times_like(s, y_t)
    a_t, s_t = alpha_sigma_like(den, t, y_t)
    x0 = teacher_x0(den, a_t * y_t + s_t * eps, t, cond, clip)
    return y_t + log_snr_gap(den, t, s, y_t) * (x0 - y_t)


@torch.no_grad()
def signal_rollout(
    den: Denoiser,
    eps: Tensor,
    timesteps: Tensor,
    cond: Any = None,
    y_start: Tensor | None = None,
    clip: float | None = None,
) -> Tensor:
    """The teacher's DDIM trajectory in signal space from ``x_T = eps``: ``y`` at every grid time,
    ``(len(timesteps), *eps.shape)``. ``y_start`` defaults to the exact ``(1 - sigma_T) eps / alpha_T``
    (then ``ys[-1]`` equals DDIM's sample); pass ``f(eps, T)`` for BOOT's boundary convention."""
    ts = torch.as_tensor(timesteps, dtype=torch.float64)
    if y_start is None:
        a_t, s_t = alpha_sigma_like(den, ts[0], eps)
        y_start = (eps - s_t * eps) / a_t
    ys = [y_start]
    for i in range(ts.numel() - 1):
        ys.append(signal_step(den, ys[-1], eps, ts[i], ts[i + 1], cond, clip))
    return torch.stack(ys)


def boundary_target(
    den: Denoiser, eps: Tensor, t_max: Tensor | float, cond: Any = None, clip: float | None = None
) -> Tensor:
    """BOOT's boundary: the teacher's x0-prediction at ``x_T = eps`` (clamped to ``[-clip, clip]``)."""
    return teacher_x0(den, eps, times_like(t_max, eps), cond, clip)


def boot_loss(
    student: nn.Module,
    teacher: Denoiser,
    eps: Tensor,
    cond: Any,
    grid: Tensor,
    generator: torch.Generator,
    *,
    weight: str = "delta",
    boundary_weight: float = 1.0,
    boundary_fraction: float = 0.25,
    clip: float | None = None,
) -> Tensor:
    """``L_BS + boundary_weight * L_BC`` for one batch of noise ``eps`` (and labels ``cond``); see the
    module docstring. ``student(eps, t, cond) -> y_t``; ``grid`` from :func:`boot_grid`; ``generator``
    draws the grid indices. The boundary term uses the first ``boundary_fraction`` of the batch; ``clip``
    clamps the teacher's x0 in the target and the boundary."""
    check_teacher(teacher)
    check_choice(weight, WEIGHTS, "weight")
    check_range(boundary_weight, "boundary_weight", 0.0)
    check_range(boundary_fraction, "boundary_fraction", 0.0, 1.0)
    check_tensor(eps, "eps", floating=True)
    grid = torch.as_tensor(grid, dtype=torch.float64)
    b, k_max = eps.shape[0], grid.numel() - 1
    k = torch.randint(k_max, (b,), generator=generator)
    t, s = grid[k].to(eps.device), grid[k + 1].to(eps.device)
    with torch.no_grad():
        target = signal_step(teacher, student(eps, t.to(eps.dtype), cond), eps, t, s, cond, clip)
    pred = student(eps, s.to(eps.dtype), cond)
    per = (pred - target).flatten(1).pow(2).mean(1)
    if weight == "delta":
        per = per / log_snr_gap(teacher, t, s, eps).flatten().pow(2)
    loss = per.mean()
    nb = int(round(b * boundary_fraction))
    if boundary_weight > 0 and nb > 0:
        e, c = eps[:nb], None if cond is None else cond[:nb]
        tmax = grid[:1].expand(nb).to(eps.device)
        with torch.no_grad():
            y_b = boundary_target(teacher, e, tmax, c, clip)
        loss = loss + boundary_weight * (student(e, tmax.to(e.dtype), c) - y_b).flatten(1).pow(2).mean(1).mean()
    return loss
