"""Direct Inversion (Ju, Zeng, Bian, Liu & Xu, *PnP Inversion: Boosting Diffusion-based Editing with 3
Lines of Code*, ICLR 2024, Sec. 4, Alg. 1).

1. DDIM inversion at guidance 1 gives the pivot ``z*_{t_0}, ..., z*_{t_N} = z_0``.
2. Editing runs ``[source; target]`` from ``z*_{t_0}`` with guidance ``w`` (and prompt-to-prompt or
   another attention control). After each step ``t_i -> t_{i+1}`` the *source* branch is moved back
   onto the pivot by the offset ``d_i = z*_{t_{i+1}} - T_{t_i -> t_{i+1}}(z_src; eps_w)``; the target
   branch is left free. With ``offset_scale = 1`` the source branch equals the pivot at every step,
   for any network and guidance; ``offset_scale = 0`` is plain DDIM inversion + P2P.

The offsets are computed on the fly from the source row of the edit batch, which under attention
control equals a source-only pass (the controller never changes the source branch), so the method
costs no network evaluation beyond one guided pass per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffzoo.core.errors import check_range
from diffzoo.core.random import Generator
from diffzoo.inversion.common import (
    Corrector,
    EditResult,
    InversionResult,
    Timer,
    branch_conditions,
    branch_result,
    check_guidance,
    controlled,
    ddim_denoise,
    ddim_invert_trajectory,
)
from diffzoo.latent.attention import AttentionController
from diffzoo.latent.model import LatentModel

Tensor = torch.Tensor

#: Reconstruction and edit guidance (the pivot itself is inverted at ``inversion_guidance``, 1);
#: read through the registry.
DEFAULT_GUIDANCE = 7.5


def invert(
    model: LatentModel,
    z0: Tensor,
    prompts: list[str],
    cond: Tensor,
    ts: Tensor,
    guidance: float,
    generator: Generator = None,
    *,
    inversion_guidance: float = 1.0,
    offset_scale: float = 1.0,
) -> InversionResult:
    """The pivot (DDIM inversion at ``inversion_guidance``, default 1); ``guidance`` (registry default
    7.5) is the scale of reconstruction and editing."""
    w = check_guidance(guidance)
    w_inv = check_guidance(inversion_guidance, "inversion_guidance")
    offset_scale = check_range(offset_scale, "offset_scale", 0.0, 1.0)
    den = model.denoiser()
    uncond = model.null_embedding(z0.shape[0]) if w_inv != 1 else None
    with torch.no_grad(), Timer(den) as tm:
        pivot = ddim_invert_trajectory(den, z0, ts, cond, uncond, w_inv)
    return InversionResult(
        "direct",
        model,
        prompts,
        cond,
        ts,
        w,
        z0,
        latents=pivot[0],
        trajectory=pivot,
        options=dict(inversion_guidance=w_inv, offset_scale=offset_scale),
        nfe=tm.nfe,
        seconds=tm.seconds,
    )


def _corrector(result: InversionResult, rows: slice) -> Corrector:
    pivot, c = result.trajectory, result.options["offset_scale"]

    def correct(i: int, x: Tensor) -> Tensor:
        x = x.clone()
        x[rows] = x[rows] + c * (pivot[i + 1] - x[rows])
        return x

    return correct


def reconstruct(result: InversionResult) -> Tensor:
    """The source branch alone: guided DDIM sampling with the offsets (= ``z_0`` for ``offset_scale = 1``)."""
    model, w = result.model, result.guidance
    b = result.latent0.shape[0]
    den = model.denoiser()
    with torch.no_grad():
        return ddim_denoise(
            den,
            result.latents,
            result.timesteps,
            result.cond,
            model.null_embedding(b),
            w,
            correct=_corrector(result, slice(0, b)),
        )


def edit(
    result: InversionResult,
    target_prompt: str | Sequence[str],
    *,
    guidance: float,
    controller: AttentionController | None = None,
) -> EditResult:
    """``[source; target]`` from the pivot at guidance ``w`` (registry default: the inversion's); the
    source branch is corrected each step."""
    model = result.model
    w = check_guidance(guidance)
    b = result.latent0.shape[0]
    tgt, cond2 = branch_conditions(result, target_prompt)
    den = model.denoiser()
    x = torch.cat([result.latents, result.latents])
    with torch.no_grad(), controlled(model, controller, b), Timer(den) as tm:
        x = ddim_denoise(
            den,
            x,
            result.timesteps,
            cond2,
            model.null_embedding(2 * b),
            w,
            controller=controller,
            correct=_corrector(result, slice(0, b)),
        )
    return branch_result("direct", result, x, tgt, tm, w)
