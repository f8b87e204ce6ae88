"""EDICT: Exact Diffusion Inversion via Coupled Transformations (Wallace, Gokul & Naik, CVPR 2023).

Two sequences ``x, y`` (equal to ``z_0`` at the start of inversion) are updated alternately so that
every noise estimate is evaluated at a state that is *known* in both directions (paper Eq. 14-15).
With ``T_{t->s}(v; eps)`` the DDIM transfer (:func:`~diffzoo.inversion.common.ddim_transfer`,
``a_t v + b_t eps`` in the paper's notation) and mixing weight ``p``, a denoising step ``t -> s`` is::

    x_inter = T_{t->s}(x_t; eps(y_t, t))
    y_inter = T_{t->s}(y_t; eps(x_inter, t))
    x_s = p x_inter + (1 - p) y_inter
    y_s = p y_inter + (1 - p) x_s

and the inversion step ``s -> t`` is its exact algebraic inverse in reverse order (Eq. 15)::

    y_inter = (y_s - (1 - p) x_s) / p
    x_inter = (x_s - (1 - p) y_inter) / p
    y_t = T_{s->t}(y_inter; eps(x_inter, t))
    x_t = T_{s->t}(x_inter; eps(y_t, t))

``T_{s->t}(.; eps)`` inverts ``T_{t->s}(.; eps)`` exactly for a fixed ``eps``, so the round trip is exact
up to floating-point round-off for *any* network and guidance. With ``leapfrog`` (the official code's
default) the roles of ``x`` and ``y`` swap on odd steps. ``eps`` is the classifier-free guided noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_range
from diffzoo.core.guidance import guided_x0_eps
from diffzoo.core.random import Generator
from diffzoo.core.schedules import NoiseSchedule
from diffzoo.inversion.common import (
    EditResult,
    InversionResult,
    Timer,
    after_step,
    branch_conditions,
    branch_result,
    branch_scale,
    check_guidance,
    controlled,
    ddim_transfer,
    set_step,
)
from diffzoo.latent.attention import AttentionController
from diffzoo.latent.model import LatentModel

Tensor = torch.Tensor
#: ``eps(v, t)``: the guided noise estimate at state ``v`` and time ``t``.
EpsFn = Callable[[Tensor, Tensor], Tensor]

#: Inversion and edit guidance (the official code's editing default); read through the registry.
DEFAULT_GUIDANCE = 3.0
DEFAULT_P = 0.93


def _eps_fn(den: Denoiser, cond: Tensor, uncond: Tensor | None, scale: float | Tensor) -> EpsFn:
    return lambda v, t: guided_x0_eps(den, v, t, cond, uncond, scale)[1]


def denoise_step(
    eps: EpsFn, sched: NoiseSchedule, x: Tensor, y: Tensor, t: Tensor, s: Tensor, p: float, swap: bool = False
) -> tuple[Tensor, Tensor]:
    """One EDICT denoising step ``t -> s`` (paper Eq. 14)."""
    if swap:
        x, y = y, x
    x_inter = ddim_transfer(x, eps(y, t), sched, t, s)
    y_inter = ddim_transfer(y, eps(x_inter, t), sched, t, s)
    x_new = p * x_inter + (1 - p) * y_inter
    y_new = p * y_inter + (1 - p) * x_new
    return (y_new, x_new) if swap else (x_new, y_new)


def invert_step(
    eps: EpsFn, sched: NoiseSchedule, x: Tensor, y: Tensor, t: Tensor, s: Tensor, p: float, swap: bool = False
) -> tuple[Tensor, Tensor]:
    """The exact inverse of :func:`denoise_step`: from ``(x_s, y_s)`` back to ``(x_t, y_t)`` (Eq. 15)."""
    if swap:
        x, y = y, x
    y_inter = (y - (1 - p) * x) / p
    x_inter = (x - (1 - p) * y_inter) / p
    y_t = ddim_transfer(y_inter, eps(x_inter, t), sched, s, t)
    x_t = ddim_transfer(x_inter, eps(y_t, t), sched, s, t)
    return (y_t, x_t) if swap else (x_t, y_t)


def _run(
    eps: EpsFn,
    sched: NoiseSchedule,
    x: Tensor,
    y: Tensor,
    ts: Tensor,
    p: float,
    leapfrog: bool,
    controller: AttentionController | None = None,
) -> tuple[Tensor, Tensor]:
    n = ts.numel() - 1
    for i in range(n):

        def eps_i(v: Tensor, t: Tensor, i: int = i) -> Tensor:
            set_step(controller, i)  # two UNet calls per step: both belong to step i
            return eps(v, t)

        x, y = denoise_step(eps_i, sched, x, y, ts[i], ts[i + 1], p, leapfrog and i % 2 == 1)
        x, y = after_step(controller, x), after_step(controller, y)
    return x, y


def invert(
    model: LatentModel,
    z0: Tensor,
    prompts: list[str],
    cond: Tensor,
    ts: Tensor,
    guidance: float,
    generator: Generator = None,
    *,
    p: float = DEFAULT_P,
    leapfrog: bool = True,
    strength: float = 1.0,
) -> InversionResult:
    """Invert ``z0`` exactly. ``strength`` in (0, 1] inverts only the last ``round(N * strength)`` steps
    of the grid (the official code edits with 0.8); ``p`` in (0, 1] is the mixing weight."""
    w = check_guidance(guidance)
    p = check_range(p, "p", 0.0, 1.0, lo_open=True)
    strength = check_range(strength, "strength", 0.0, 1.0, lo_open=True)
    n = ts.numel() - 1
    k = max(1, int(round(n * strength)))
    ts = ts[n - k :]
    den = model.denoiser()
    uncond = model.null_embedding(z0.shape[0]) if w != 1 else None
    eps = _eps_fn(den, cond, uncond, w)
    x, y = z0, z0.clone()
    with torch.no_grad(), Timer(den) as tm:
        for i in range(k - 1, -1, -1):
            x, y = invert_step(eps, den.schedule, x, y, ts[i], ts[i + 1], p, leapfrog and i % 2 == 1)
    return InversionResult(
        "edict",
        model,
        prompts,
        cond,
        ts,
        w,
        z0,
        latents=torch.stack([x, y]),
        options=dict(p=p, leapfrog=leapfrog, strength=strength),
        nfe=tm.nfe,
        seconds=tm.seconds,
    )


def reconstruct(result: InversionResult) -> Tensor:
    """Denoise the inverted pair with the source prompt and guidance; returns ``x_0`` (= ``y_0``)."""
    model, w = result.model, result.guidance
    den = model.denoiser()
    uncond = model.null_embedding(result.latent0.shape[0]) if w != 1 else None
    x, y = result.latents
    with torch.no_grad():
        x, _ = _run(
            _eps_fn(den, result.cond, uncond, w),
            den.schedule,
            x,
            y,
            result.timesteps,
            result.options["p"],
            result.options["leapfrog"],
        )
    return x


def edit(
    result: InversionResult,
    target_prompt: str | Sequence[str],
    *,
    guidance: float,
    controller: AttentionController | None = None,
    source_guidance: float | None = None,
) -> EditResult:
    """EDICT editing (paper Sec. 4): denoise the inverted pair with the target prompt.

    The source branch runs beside the target in the same batch (it reconstructs ``z_0`` and lets an
    attention controller copy its maps). ``guidance`` defaults (in the registry) to the inversion's
    scale; ``source_guidance`` too.
    """
    model = result.model
    w_t = check_guidance(guidance)
    w_s = check_guidance(result.guidance if source_guidance is None else source_guidance, "source_guidance")
    b = result.latent0.shape[0]
    tgt, cond2 = branch_conditions(result, target_prompt)
    scale = branch_scale(result, w_s, w_t)
    den = model.denoiser()
    x, y = (torch.cat([v, v]) for v in result.latents)
    eps = _eps_fn(den, cond2, model.null_embedding(2 * b), scale)
    with torch.no_grad(), controlled(model, controller, b), Timer(den) as tm:
        x, _ = _run(
            eps, den.schedule, x, y, result.timesteps, result.options["p"], result.options["leapfrog"], controller
        )
    return branch_result("edict", result, x, tgt, tm, w_t)
