"""Pieces every inversion method shares: the result types, input checks, the grid, the deterministic
DDIM transfer in both directions and the guided DDIM loop (guided predictions come from core
:func:`~diffzoo.core.guidance.guided_x0_eps`, the one classifier-free-guidance batcher).

**One step, two directions.** With ``x_t = alpha_t x0 + sigma_t eps``, deterministic DDIM (Song et al.
2021, Eq. 12, eta = 0) moves a state from time ``u`` to time ``v`` *for a given noise estimate eps*::

    T_{u->v}(x; eps) = alpha_v * (x - sigma_u eps) / alpha_u + sigma_v eps

which is :func:`diffzoo.core.parameterization.to_x0_eps` followed by
:func:`~diffzoo.core.parameterization.ddim_step`. For fixed ``eps`` the map is affine in ``x`` and
``T_{v->u}(.; eps)`` is its exact inverse, so *denoising* (``t -> s``, ``s < t``) and *inversion*
(``s -> t``) are the same function with the endpoints swapped -- no separate inverse scheduler.
Inversion methods differ only in where ``eps`` is evaluated:

* DDIM inversion evaluates ``eps(x_s, t)`` instead of the unknown ``eps(x_t, t)`` (the drift),
* EDICT keeps two coupled sequences so that every ``eps`` is evaluated at a *known* state (exact),
* edit-friendly DDPM inversion stores the residual noise of each step (exact),
* null-text / Direct Inversion correct a DDIM-inversion pivot afterwards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_range
from diffzoo.core.guidance import cfg_denoiser, guided_x0_eps
from diffzoo.core.parameterization import ddim_step, to_x0_eps
from diffzoo.core.schedules import NoiseSchedule
from diffzoo.latent.attention import AttentionController, attention_control
from diffzoo.latent.model import LatentModel
from diffzoo.sampling.ddim import ddim, ddim_noise_scale
from diffzoo.sampling.timesteps import get_timesteps

Tensor = torch.Tensor
#: ``correct(i, x) -> x``: a hook after step ``ts[i] -> ts[i+1]`` of :func:`ddim_denoise`.
Corrector = Callable[[int, Tensor], Tensor]

#: Guidance scales accepted by every method (0 = unconditional, 1 = conditional only).
GUIDANCE_RANGE = (0.0, 50.0)


# -------------------------------------------------------------------------------------------------
# Results
# -------------------------------------------------------------------------------------------------


@dataclass
class InversionResult:
    """What an inversion stores; which fields are set depends on the method.

    Attributes
    ----------
    method: the method name (``ddim``, ``edict``, ``ddpm``, ``null_text``, ``direct``).
    model: the :class:`~diffzoo.latent.model.LatentModel` that was inverted.
    prompt: the source prompts (one per sample).
    cond: source prompt embeddings ``(B, L, D)``.
    timesteps: the decreasing grid ``t_0 > ... > t_N = t_end`` (float64, length ``N + 1``).
    guidance: the guidance scale of the inversion (and of :func:`reconstruct`).
    latent0: the latent ``z_0`` that was inverted, in the working ``dtype``.
    latents: the noisy start of sampling ``z_{t_0}`` (EDICT: the pair ``(x, y)`` stacked on dim 0).
    trajectory: the states at every grid time, ``trajectory[i]`` at ``timesteps[i]`` (DDIM pivot,
        DDPM's noisy versions).
    noise_maps: DDPM inversion's ``z_i`` (one per step, ``noise_maps[i]`` used for ``t_i -> t_{i+1}``).
    null_embeddings: null-text inversion's optimised unconditional embeddings, one per step.
    options: method options needed to reconstruct and edit (mixing ``p``, ``eta``, ...).
    nfe: network evaluations (batched calls) the inversion took; seconds: its wall time.
    """

    method: str
    model: LatentModel
    prompt: list[str]
    cond: Tensor
    timesteps: Tensor
    guidance: float
    latent0: Tensor
    latents: Tensor | None = None
    trajectory: list[Tensor] | None = None
    noise_maps: list[Tensor] | None = None
    null_embeddings: list[Tensor] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    nfe: int = 0
    seconds: float = 0.0

    @property
    def num_steps(self) -> int:
        """Number of grid steps ``N`` (``timesteps`` has ``N + 1`` entries)."""
        return int(self.timesteps.numel() - 1)

    @property
    def dtype(self) -> torch.dtype:
        """The working dtype of the latent states."""
        return self.latent0.dtype


@dataclass
class EditResult:
    """An edit, by any method: the one result type of :func:`diffzoo.inversion.edit`,
    :func:`diffzoo.editing.edit_image` and the editing methods (InfEdit, SDEdit).

    Attributes
    ----------
    method: the method name.
    latents: the edited latents (the target branch).
    source_latents: the source branch run beside the target in the same batch (``None`` for methods
        without one, e.g. SDEdit).
    target_prompt: the target prompts (one per sample).
    nfe: network evaluations (batched calls); seconds: wall time (encoding and decoding excluded) --
        of the edit pass alone for :func:`diffzoo.inversion.edit`, inversion included for
        :func:`diffzoo.editing.edit_image`.
    image: the decoded edit in ``[-1, 1]`` (``None`` when not decoded).
    latent0: the input's latent ``z_0``.
    guidance: the classifier-free guidance of the target branch.
    timesteps: the grid the edit pass ran (a late start -- strength, T_skip -- shows in ``timesteps[0]``).
    inversion: the :class:`InversionResult` of inversion-based methods.
    reconstruction: the latent the method regenerates from its inversion with the source prompt, when
        asked for (``edit_image(..., reconstruct=True)``).
    """

    method: str
    latents: Tensor
    source_latents: Tensor | None
    target_prompt: list[str]
    nfe: int = 0
    seconds: float = 0.0
    image: Tensor | None = None
    latent0: Tensor | None = None
    guidance: float | None = None
    timesteps: Tensor | None = None
    inversion: InversionResult | None = None
    reconstruction: Tensor | None = None

    @property
    def t_start(self) -> float | None:
        """The model time the edit pass started from (``timesteps[0]``)."""
        return None if self.timesteps is None else float(self.timesteps[0])

    @property
    def reconstruction_error(self) -> float | None:
        """``max |reconstruction - z_0|`` in latent space (``None`` without a reconstruction)."""
        if self.reconstruction is None or self.latent0 is None:
            return None
        return float((self.reconstruction - self.latent0.to(self.reconstruction)).abs().max())

    def images(self, model: LatentModel) -> Tensor:
        """The edited images in ``[-1, 1]`` (decoded target latents)."""
        with torch.no_grad():
            return model.decode(self.latents)


class Timer:
    """Wall time and NFE of a block: ``with Timer(den) as tm: ...; tm.seconds, tm.nfe``."""

    def __init__(self, *dens: Denoiser):
        self.dens = dens
        self.seconds = 0.0
        self.nfe = 0

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        self._n0 = [d.nfe for d in self.dens]
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.nfe = sum(d.nfe - n for d, n in zip(self.dens, self._n0))


# -------------------------------------------------------------------------------------------------
# Inputs
# -------------------------------------------------------------------------------------------------


def check_model(model: object, method: str) -> LatentModel:
    """Every method needs a text-conditional :class:`LatentModel`."""

    if not isinstance(model, LatentModel):
        raise TypeError(
            f"model: {method} inversion expects a diffzoo.latent.model.LatentModel, got {type(model).__name__}"
        )
    model.require_conditional(f"{method} inversion")
    return model


def check_guidance(guidance: float, arg: str = "guidance") -> float:
    """A classifier-free guidance scale in ``GUIDANCE_RANGE`` (``ValueError`` naming ``arg`` otherwise)."""
    return check_range(guidance, arg, *GUIDANCE_RANGE)


def as_prompts(prompt: str | Sequence[str], batch: int, arg: str = "prompt") -> list[str]:
    """A prompt per sample: a single string is repeated ``batch`` times."""
    if isinstance(prompt, str):
        return [prompt] * batch
    prompts = list(prompt) if isinstance(prompt, (list, tuple)) else None
    if prompts is None or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"{arg}: expected a string or a list of strings, got {type(prompt).__name__}")
    if len(prompts) != batch:
        raise ValueError(f"{arg}: got {len(prompts)} prompts for a batch of {batch}")
    return prompts


def grid(model: LatentModel, num_steps: int, spacing: str = "leading", steps_offset: int = 1) -> Tensor:
    """The decreasing sampling grid of ``num_steps`` steps (default: Stable Diffusion's DDIM grid,
    ``leading`` spacing with ``steps_offset = 1``), from :func:`diffzoo.sampling.get_timesteps`."""
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps: expected a positive integer, got {num_steps!r}")
    if num_steps > model.schedule.num_train_timesteps:
        raise ValueError(f"num_steps: at most {model.schedule.num_train_timesteps} (training steps), got {num_steps}")
    return get_timesteps(model.schedule, num_steps, spacing, steps_offset=steps_offset)


def embed(model: LatentModel, prompts: list[str], dtype: torch.dtype | None = None) -> Tensor:
    """Prompt embeddings without gradient."""
    with torch.no_grad():
        e = model.encode_prompt(prompts)
    return e.detach() if dtype is None else e.detach().to(dtype)


# -------------------------------------------------------------------------------------------------
# The DDIM transfer, both directions
# -------------------------------------------------------------------------------------------------


def alpha_sigma(schedule: NoiseSchedule, t: Tensor | float, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(alpha_t, sigma_t)`` as scalars in ``like``'s dtype/device."""
    tt = torch.as_tensor(t, dtype=torch.float64)
    a, s = schedule.alpha_sigma(tt)
    return a.to(device=like.device, dtype=like.dtype), s.to(device=like.device, dtype=like.dtype)


def ddim_transfer(
    x: Tensor, eps: Tensor, schedule: NoiseSchedule, t_from: Tensor | float, t_to: Tensor | float
) -> Tensor:
    """``T_{u->v}(x; eps)``: the deterministic DDIM move from ``t_from`` to ``t_to`` with noise ``eps``.

    ``x0 = (x - sigma_u eps) / alpha_u`` (core :func:`to_x0_eps`), then ``alpha_v x0 + sigma_v eps``
    (core :func:`ddim_step`). Denoising uses ``t_from > t_to``, inversion ``t_from < t_to``; for a
    fixed ``eps`` each is the other's exact inverse.
    """
    a_u, s_u = alpha_sigma(schedule, t_from, x)
    a_v, s_v = alpha_sigma(schedule, t_to, x)
    x0, _ = to_x0_eps(eps, "epsilon", x, a_u, s_u)
    return ddim_step(x0, eps, a_v, s_v)


def ddim_eta_std(schedule: NoiseSchedule, t: Tensor | float, s: Tensor | float, eta: float, like: Tensor) -> Tensor:
    """Noise std of the DDIM(eta) step ``t -> s`` (Song et al. 2021, Eq. 16):
    ``eta sigma_s sqrt(1 - exp(lambda_t - lambda_s))`` -- for a VP schedule
    ``eta sqrt((1 - abar_s)/(1 - abar_t) (1 - abar_t/abar_s))``; eta = 1 is DDPM's posterior std.
    The formula is :func:`diffzoo.sampling.ddim.ddim_noise_scale` (one place)."""

    tt, ss = (torch.as_tensor(v, dtype=torch.float64) for v in (t, s))
    std = ddim_noise_scale(schedule.log_snr(tt), schedule.log_snr(ss), schedule.sigma(ss), eta)
    return std.to(device=like.device, dtype=like.dtype)


def ddim_eta_mean(
    x: Tensor, eps: Tensor, schedule: NoiseSchedule, t: Tensor | float, s: Tensor | float, std: Tensor
) -> Tensor:
    """Mean of the DDIM(eta) step: ``alpha_s x0 + sqrt(sigma_s^2 - std^2) eps`` with
    ``x0 = (x - sigma_t eps)/alpha_t`` (the shared :func:`ddim_step` with a reduced noise coefficient)."""
    a_t, s_t = alpha_sigma(schedule, t, x)
    a_s, s_s = alpha_sigma(schedule, s, x)
    x0, _ = to_x0_eps(eps, "epsilon", x, a_t, s_t)
    return ddim_step(x0, eps, a_s, (s_s**2 - std**2).clamp(min=0).sqrt())


# -------------------------------------------------------------------------------------------------
# Edit passes: the batch of branches [source; target] and attention control
# -------------------------------------------------------------------------------------------------


def branch_conditions(result: InversionResult, target_prompt: str | Sequence[str]) -> tuple[list[str], Tensor]:
    """Target prompts per sample and the condition batch ``[source rows; target rows]``."""
    b = result.latent0.shape[0]
    tgt = as_prompts(target_prompt, b, "target_prompt")
    cond_t = embed(result.model, tgt).to(result.cond.dtype)
    return tgt, torch.cat([result.cond, cond_t])


def branch_scale(result: InversionResult, source_guidance: float, target_guidance: float) -> Tensor:
    """Per-row guidance of the two-branch batch ``[source rows; target rows]``."""
    b = result.latent0.shape[0]
    return torch.tensor([source_guidance] * b + [target_guidance] * b, dtype=result.dtype)


def branch_result(
    method: str,
    result: InversionResult,
    x: Tensor,
    target_prompt: list[str],
    timer: Timer,
    guidance: float,
    timesteps: Tensor | None = None,
) -> EditResult:
    """The :class:`EditResult` of a two-branch edit pass ``x = [source; target]`` run from ``result``
    (``timesteps``: the grid the pass ran, the inversion's by default)."""
    b = result.latent0.shape[0]
    return EditResult(
        method,
        x[b:],
        x[:b],
        target_prompt,
        nfe=timer.nfe,
        seconds=timer.seconds,
        latent0=result.latent0,
        guidance=guidance,
        timesteps=result.timesteps if timesteps is None else timesteps,
        inversion=result,
    )


def controlled(model: LatentModel, controller: AttentionController | None, batch: int) -> AbstractContextManager[Any]:
    """Context installing an attention controller (:mod:`diffzoo.latent.attention`) on the UNet.

    Controllers act on one edit ``[source; target]``, so a controlled edit needs batch size 1.
    """

    if controller is None:
        return contextlib.nullcontext()
    if batch != 1:
        raise ValueError(f"controller: attention control edits one image at a time, got a batch of {batch}")

    return attention_control(model.unet, controller)


def after_step(controller: AttentionController | None, x: Tensor) -> Tensor:
    """The controller's per-step latent hook (P2P local blend) on ``[source; target]``."""
    return x if controller is None else controller.step_callback(x)


def set_step(controller: AttentionController | None, i: int) -> None:
    """Tell the controller which edit step the next UNet call belongs to."""
    if controller is not None:
        controller.cur_step = i


def ddim_denoise(
    den: Denoiser,
    x: Tensor,
    ts: Tensor,
    cond: Tensor,
    uncond: Tensor | Sequence[Tensor] | None,
    scale: float | Tensor,
    *,
    start: int = 0,
    controller: AttentionController | None = None,
    correct: Corrector | None = None,
) -> Tensor:
    """Deterministic DDIM sampling over ``ts[start:]`` with classifier-free guidance, for the
    reconstruction and edit passes of every inversion method: :func:`diffzoo.sampling.ddim` (the one
    DDIM loop) over core's guidance batcher, with the per-step hooks in its callback.

    ``uncond`` is one null embedding or one per grid step (null-text inversion). ``correct(i, x)`` runs
    after each step ``ts[i] -> ts[i+1]`` (Direct Inversion's offsets), then the controller's
    ``step_callback`` (local blend); the controller is told the edit step before each network call.
    """
    per_step = isinstance(uncond, (list, tuple))
    current = {"i": start}

    def null() -> Tensor | None:
        return uncond[current["i"]] if per_step else uncond  # type: ignore[index,return-value]

    def hook(d: dict) -> Tensor:
        i = start + int(d["i"])
        y = d["x"] if correct is None else correct(i, d["x"])
        y = after_step(controller, y)
        current["i"] = i + 1
        set_step(controller, i + 1 - start)
        return y

    if ts.numel() - 1 <= start:
        return x
    guided = cfg_denoiser(den, scale, null if per_step else uncond)
    set_step(controller, 0)
    try:
        return ddim(guided, x, ts[start:], cond, callback=hook)
    finally:
        den.nfe += guided.nfe


def ddim_invert_trajectory(
    den: Denoiser, z0: Tensor, ts: Tensor, cond: Tensor, uncond: Tensor | None, scale: float
) -> list[Tensor]:
    """DDIM inversion (Song et al. 2021, Sec. 4.3; Dhariwal & Nichol 2021): for ``i = N-1 .. 0``,
    ``z_{t_i} = T_{t_{i+1} -> t_i}(z_{t_{i+1}}; eps(z_{t_{i+1}}, t_i))`` -- the denoising transfer run
    backwards, with ``eps`` evaluated at the known state (the approximation that causes drift).
    Returns the trajectory ``traj[i]`` at ``ts[i]`` (``traj[N] = z0``)."""
    n = ts.numel() - 1
    traj: list[Tensor] = [z0] * (n + 1)
    x = z0
    for i in range(n - 1, -1, -1):
        eps = guided_x0_eps(den, x, ts[i], cond, uncond, scale)[1]
        x = ddim_transfer(x, eps, den.schedule, ts[i + 1], ts[i])
        traj[i] = x
    return traj
