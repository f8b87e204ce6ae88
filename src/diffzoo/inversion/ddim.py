"""DDIM inversion (Song et al. 2021, Sec. 4.3; used as the baseline and pivot in Null-text inversion,
Mokady et al. 2023, Sec. 3, and Direct Inversion, Ju et al. 2024).

Inversion runs the deterministic DDIM transfer backwards, ``z_t = T_{s->t}(z_s; eps(z_s, t))``, with
the noise evaluated at the *previous* state ``z_s`` instead of the unknown ``z_t``. The error of that
substitution grows with the classifier-free guidance scale, because guidance amplifies the difference
``eps_c - eps_u`` (Null-text inversion, Sec. 3.1): reconstruction drifts, which is what the exact
methods (EDICT, edit-friendly DDPM) and the corrected ones (null-text, Direct Inversion) fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffzoo.core.random import Generator
from diffzoo.inversion.common import (
    EditResult,
    InversionResult,
    Timer,
    branch_conditions,
    branch_result,
    branch_scale,
    check_guidance,
    controlled,
    ddim_denoise,
    ddim_invert_trajectory,
)
from diffzoo.latent.attention import AttentionController
from diffzoo.latent.model import LatentModel

Tensor = torch.Tensor

#: Inversion guidance (conditional only) and edit guidance (Null-text inversion's DDIM baseline).
#: Read through the registry (:data:`diffzoo.inversion.METHODS`), which resolves ``guidance=None``.
DEFAULT_GUIDANCE = 1.0
DEFAULT_EDIT_GUIDANCE = 7.5


def invert(
    model: LatentModel,
    z0: Tensor,
    prompts: list[str],
    cond: Tensor,
    ts: Tensor,
    guidance: float,
    generator: Generator = None,
) -> InversionResult:
    """Invert ``z0`` along ``ts`` with guidance ``guidance`` (registry default 1: conditional only)."""
    w = check_guidance(guidance)
    den = model.denoiser()
    uncond = model.null_embedding(z0.shape[0]) if w != 1 else None
    with torch.no_grad(), Timer(den) as tm:
        traj = ddim_invert_trajectory(den, z0, ts, cond, uncond, w)
    return InversionResult(
        "ddim", model, prompts, cond, ts, w, z0, latents=traj[0], trajectory=traj, nfe=tm.nfe, seconds=tm.seconds
    )


def reconstruct(result: InversionResult) -> Tensor:
    """DDIM sampling from the inverted ``z_T`` with the source prompt at the inversion's guidance."""
    model, w = result.model, result.guidance
    den = model.denoiser()
    uncond = model.null_embedding(result.latent0.shape[0]) if w != 1 else None
    with torch.no_grad():
        return ddim_denoise(den, result.latents, result.timesteps, result.cond, uncond, w)


def edit(
    result: InversionResult,
    target_prompt: str | Sequence[str],
    *,
    guidance: float,
    controller: AttentionController | None = None,
    source_guidance: float | None = None,
) -> EditResult:
    """DDIM(+P2P) editing: sample ``[source; target]`` from the inverted ``z_T``.

    ``guidance`` is the target branch's scale (registry default 7.5), ``source_guidance`` the source
    branch's (default: the same).
    """
    model = result.model
    w_t = check_guidance(guidance)
    w_s = check_guidance(w_t if source_guidance is None else source_guidance, "source_guidance")
    b = result.latent0.shape[0]
    tgt, cond2 = branch_conditions(result, target_prompt)
    scale = branch_scale(result, w_s, w_t)
    den = model.denoiser()
    x = torch.cat([result.latents, result.latents])
    with torch.no_grad(), controlled(model, controller, b), Timer(den) as tm:
        x = ddim_denoise(den, x, result.timesteps, cond2, model.null_embedding(2 * b), scale, controller=controller)
    return branch_result("ddim", result, x, tgt, tm, w_t)
