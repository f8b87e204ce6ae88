"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov & Michaeli, CVPR 2024, Sec. 3-4).

A DDPM/DDIM(eta) step ``t -> s`` is ``x_s = mu(x_t, eps(x_t, t)) + std_t z`` with
``mu = alpha_s x0_hat + sqrt(sigma_s^2 - std_t^2) eps`` and ``std_t`` the DDIM(eta) std (eta = 1: DDPM).
The method draws *independent* noisy versions ``x_t = alpha_t z_0 + sigma_t n_t`` (fresh ``n_t`` per
``t``, paper Eq. 6), then extracts the noise maps that make the sampler pass through them (Eq. 5)::

    z_t = (x_s - mu(x_t)) / std_t,        x_s <- mu(x_t) + std_t z_t   (stored, as the official code)

Sampling from ``x_{t_0}`` with the same prompt, guidance and stored ``z_t`` reproduces every ``x_t`` and
``z_0`` exactly (for any network). Editing re-samples with the target prompt from step ``skip``
(``T_skip``) using the same noise maps.

When ``std_t = 0`` (the final step of a schedule whose end ``abar`` is 1) the step is deterministic;
the map then stores the residual ``x_s - mu`` and the step adds it unscaled, so reconstruction stays
exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_range
from diffzoo.core.guidance import guided_x0_eps
from diffzoo.core.random import Generator, randn
from diffzoo.inversion.common import (
    EditResult,
    InversionResult,
    Timer,
    after_step,
    alpha_sigma,
    branch_conditions,
    branch_result,
    branch_scale,
    check_guidance,
    controlled,
    ddim_eta_mean,
    ddim_eta_std,
    set_step,
)
from diffzoo.latent.attention import AttentionController
from diffzoo.latent.model import LatentModel

Tensor = torch.Tensor

#: Inversion guidance (``cfg_src`` of the official code) and edit guidance (``cfg_tar``); read through
#: the registry.
DEFAULT_GUIDANCE = 3.5
DEFAULT_EDIT_GUIDANCE = 15.0


def _step(
    den: Denoiser,
    x: Tensor,
    z: Tensor,
    t: Tensor,
    s: Tensor,
    eta: float,
    cond: Tensor,
    uncond: Tensor | None,
    scale: float | Tensor,
) -> Tensor:
    """``x_s = mu(x_t) + std z`` (``+ z`` when ``std = 0``)."""
    eps = guided_x0_eps(den, x, t, cond, uncond, scale)[1]
    std = ddim_eta_std(den.schedule, t, s, eta, x)
    mu = ddim_eta_mean(x, eps, den.schedule, t, s, std)
    return mu + (std if float(std) > 0 else 1.0) * z


def invert(
    model: LatentModel,
    z0: Tensor,
    prompts: list[str],
    cond: Tensor,
    ts: Tensor,
    guidance: float,
    generator: Generator = None,
    *,
    eta: float = 1.0,
    zero_last_noise: bool = False,
) -> InversionResult:
    """Extract the noise maps of ``z0`` (``eta`` in (0, 1]; ``zero_last_noise`` as the official code,
    which makes the last step deterministic and the reconstruction inexact)."""
    w = check_guidance(guidance)
    eta = check_range(eta, "eta", 0.0, 1.0, lo_open=True)
    n = ts.numel() - 1
    den = model.denoiser()
    uncond = model.null_embedding(z0.shape[0]) if w != 1 else None
    xs: list[Tensor] = []
    for i in range(n):
        a, s = alpha_sigma(model.schedule, ts[i], z0)
        xs.append(a * z0 + s * randn(z0.shape, generator, z0.dtype, z0.device))
    xs.append(z0)
    zs: list[Tensor] = []
    with torch.no_grad(), Timer(den) as tm:
        for i in range(n):
            t, s = ts[i], ts[i + 1]
            eps = guided_x0_eps(den, xs[i], t, cond, uncond, w)[1]
            std = ddim_eta_std(den.schedule, t, s, eta, z0)
            mu = ddim_eta_mean(xs[i], eps, den.schedule, t, s, std)
            scale = std if float(std) > 0 else torch.ones_like(std)
            z = (xs[i + 1] - mu) / scale
            if zero_last_noise and i == n - 1:
                z = torch.zeros_like(z)
            zs.append(z)
            xs[i + 1] = mu + scale * z  # the stored state is the one the sampler will reach
    return InversionResult(
        "ddpm",
        model,
        prompts,
        cond,
        ts,
        w,
        z0,
        latents=xs[0],
        trajectory=xs,
        noise_maps=zs,
        options=dict(eta=eta),
        nfe=tm.nfe,
        seconds=tm.seconds,
    )


def _sample(
    den: Denoiser,
    x: Tensor,
    result: InversionResult,
    cond: Tensor,
    uncond: Tensor | None,
    scale: float | Tensor,
    skip: int,
    controller: AttentionController | None = None,
) -> Tensor:
    ts, zs, eta = result.timesteps, result.noise_maps, result.options["eta"]
    reps = x.shape[0] // zs[0].shape[0]
    for i in range(skip, ts.numel() - 1):
        set_step(controller, i - skip)
        z = zs[i] if reps == 1 else torch.cat([zs[i]] * reps)
        x = _step(den, x, z, ts[i], ts[i + 1], eta, cond, uncond, scale)
        x = after_step(controller, x)
    return x


def reconstruct(result: InversionResult) -> Tensor:
    """DDPM sampling from ``x_{t_0}`` with the stored noise maps, source prompt and guidance: ``z_0``."""
    model, w = result.model, result.guidance
    den = model.denoiser()
    uncond = model.null_embedding(result.latent0.shape[0]) if w != 1 else None
    with torch.no_grad():
        return _sample(den, result.latents, result, result.cond, uncond, w, 0)


def edit(
    result: InversionResult,
    target_prompt: str | Sequence[str],
    *,
    guidance: float,
    controller: AttentionController | None = None,
    source_guidance: float | None = None,
    skip: int = 0,
) -> EditResult:
    """Re-sample with the target prompt from step ``skip`` (``T_skip``: start at ``x_{t_skip}`` with the
    noise maps ``z[skip:]``; larger keeps more structure). Target guidance: registry default 15
    (``cfg_tar``); source branch at the inversion's guidance. A controller's ``num_steps`` should be
    ``N - skip``."""
    model = result.model
    n = result.num_steps
    if not isinstance(skip, int) or not 0 <= skip < n:
        raise ValueError(f"skip: expected an integer in [0, {n - 1}], got {skip!r}")
    w_t = check_guidance(guidance)
    w_s = check_guidance(result.guidance if source_guidance is None else source_guidance, "source_guidance")
    b = result.latent0.shape[0]
    tgt, cond2 = branch_conditions(result, target_prompt)
    scale = branch_scale(result, w_s, w_t)
    den = model.denoiser()
    x = torch.cat([result.trajectory[skip]] * 2)
    with torch.no_grad(), controlled(model, controller, b), Timer(den) as tm:
        x = _sample(den, x, result, cond2, model.null_embedding(2 * b), scale, skip, controller)
    return branch_result("ddpm", result, x, tgt, tm, w_t, result.timesteps[skip:])
