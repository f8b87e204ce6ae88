"""InfEdit's virtual inversion: the Denoising Diffusion Consistent Model sampler (DDCM) with unified
attention control (Xu et al., *Inversion-Free Image Editing with Natural Language*, CVPR 2024, Sec. 3-4;
BRIEFS Sec. 5).

No inversion is run. With ``z_0 = E(x_src)`` both branches start at ``z_src = z_tgt = alpha z_0 + sigma n``
(strength ``s`` chooses the start time) and each step ``tau -> tau'`` does (Sec. 3.2, Eq. 9-11; the
official ``ddcm_sampler``)::

    e_s = CFG(z_src, tau, c_src, w_src),   e_t = CFG(z_tgt, tau, c_tgt, w_tgt)      (one batched call)
    e_cons = (z_src - alpha_tau z_0) / sigma_tau                  # the exact noise of the source branch
    x0_tgt = z_0 + ((z_tgt - z_src) - sigma_tau (e_t - e_s)) / alpha_tau
           = (z_tgt - sigma_tau (e_t - e_s + e_cons)) / alpha_tau
    e = (e_t - e_s) + e_cons,   n ~ N(0, I) shared,   c^2 = eta sigma_tau'^2
    z_src' = alpha_tau' z_0    + sqrt(sigma_tau'^2 - c^2) e + c n
    z_tgt' = alpha_tau' x0_tgt + sqrt(sigma_tau'^2 - c^2) e + c n

and the last step returns ``x0_tgt``. The source branch's clean estimate is ``z_0`` at every step, so
with ``c_tgt = c_src`` and ``w_tgt = w_src`` the output is exactly ``z_0`` for any network ("virtual
inversion"). With ``eta = 1`` (the paper's setting) this is a multi-step consistency sampler.

Unified attention control (Sec. 4) runs a third, *mutual* branch (source prompt, source guidance)
beside source and target, all in one batched call:
:class:`~diffzoo.latent.attention.UnifiedAttentionControl` refines the target's cross-attention from
the source's, injects the source's self-attention maps early and lets the mutual branch attend with the
target's queries to the source's keys/values later; its local blend takes the target from the mutual
branch outside the target words' mask. The plain P2P controllers (two branches) work as well.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_choice, check_range
from diffzoo.core.guidance import guided_x0_eps
from diffzoo.core.parameterization import ddim_step
from diffzoo.core.random import Generator, randn
from diffzoo.editing.anchored import start_index
from diffzoo.inversion.common import EditResult
from diffzoo.latent.attention import AttentionController, attention_control, refine, unified
from diffzoo.latent.model import LatentModel
from diffzoo.sampling.timesteps import get_timesteps

Tensor = torch.Tensor

__all__ = ["DEFAULT_GUIDANCE", "DEFAULT_STRENGTH", "ddcm_sample", "ddcm_edit"]

#: InfEdit's defaults (the official demo): target guidance 2 (source 1) at strength 0.7; the editing
#: registry reads them.
DEFAULT_GUIDANCE = 2.0
DEFAULT_STRENGTH = 0.7


def ddcm_sample(
    den: Denoiser,
    z0: Tensor,
    timesteps: Tensor,
    conds: Tensor,
    uncond: Tensor,
    scales: Sequence[float],
    *,
    eta: float = 1.0,
    generator: Generator = None,
    controller: AttentionController | None = None,
) -> Tensor:
    """The DDCM sampler over ``timesteps`` (noisy -> end) for branches ``b = 0..B-1`` of one image ``z0``.

    Branch 0 is the source (``conds[0]``, CFG scale ``scales[0]``); every branch ``b`` starts from the
    same noised ``z0``, shares the noise, and has the clean estimate
    ``x0_b = z0 + ((z_b - z_src) - sigma (e_b - e_src)) / alpha`` (so ``x0_src = z0``). Returns the final
    ``x0`` of every branch, ``(B, C, H, W)``. ``controller.step_callback`` (local blend) is applied to
    the branch latents after every step.
    """
    check_range(eta, "eta", 0.0, 1.0)
    if z0.shape[0] != 1:
        raise ValueError(f"z0: DDCM edits one image at a time, got batch {z0.shape[0]}")
    nb = conds.shape[0]
    if len(scales) != nb:
        raise ValueError(f"scales: expected one CFG scale per branch ({nb}), got {len(scales)}")
    a, s = den.schedule.alpha_sigma(timesteps.to(torch.float64))
    a, s = a.to(z0.dtype), s.to(z0.dtype)
    cond = conds.to(z0.dtype)
    un = uncond.expand(nb, *uncond.shape[1:]).to(z0.dtype)
    w = torch.tensor(list(scales), dtype=z0.dtype)
    z = ddim_step(z0, randn(z0.shape, generator, z0.dtype, z0.device), a[0], s[0]).expand(nb, *z0.shape[1:])
    n_steps = timesteps.numel() - 1
    for i in range(n_steps):
        # every branch with its own CFG scale: one batched call [cond rows; uncond rows]
        eps = guided_x0_eps(den, z, timesteps[i].to(z0.dtype), cond, un, w)[1]
        x0 = z0 + ((z - z[:1]) - s[i] * (eps - eps[:1])) / a[i]  # Eq. 11; row 0 is exactly z0
        if i == n_steps - 1:
            z = x0
        else:
            e = (eps - eps[:1]) + (z[:1] - a[i] * z0) / s[i]  # (e_b - e_src) + e_cons
            c = (eta**0.5) * s[i + 1]
            mix = e * torch.sqrt((s[i + 1] ** 2 - c**2).clamp(min=0)) / s[i + 1]
            if eta > 0:
                mix = mix + (c / s[i + 1]) * randn(z0.shape, generator, z0.dtype, z0.device)
            z = ddim_step(x0, mix, a[i + 1], s[i + 1])
        if controller is not None:
            z = controller.step_callback(z)
    return z


def ddcm_edit(
    model: LatentModel,
    image_or_latent: Tensor,
    source_prompt: str,
    target_prompt: str,
    *,
    num_steps: int = 15,
    strength: float = DEFAULT_STRENGTH,
    guidance: float = DEFAULT_GUIDANCE,
    source_guidance: float = 1.0,
    eta: float = 1.0,
    generator: Generator = None,
    dtype: torch.dtype | None = None,
    spacing: str = "leading",
    steps_offset: int = 1,
    controller: AttentionController | str | None = "unified",
    cross_replace_steps: float = 0.7,
    self_replace_steps: float = 0.3,
    blend_words: Sequence[Sequence[str]] | None = None,
    blend_threshold: float = 0.3,
    blend_normalize: str = "max",
    decode: bool = True,
    is_latent: bool | None = None,
) -> EditResult:
    """InfEdit: edit an image (or latents) from ``source_prompt`` to ``target_prompt`` without inversion.

    Defaults follow the official demo (15 steps, strength 0.7, target guidance 2, source guidance 1,
    eta 1, cross-attention control 0.7, self-attention control 0.3). ``controller``: ``"unified"``
    (InfEdit's unified attention control on ``[source; target; mutual]``), ``"refine"`` (P2P refine on
    ``[source; target]``), ``None``, or an :class:`~diffzoo.latent.attention.AttentionController` for
    ``[source; target]`` (2 branches) or ``[source; target; mutual]`` (3 branches).
    ``image_or_latent`` is told apart by :meth:`~diffzoo.latent.model.LatentModel.is_latent` unless
    ``is_latent`` says. The
    result's ``source_latents`` is the source branch's clean estimate at the end (``z_0`` exactly) and
    ``timesteps`` the grid run (start time ... end); ``nfe`` counts batched network calls.
    """

    model.require_conditional("InfEdit/DDCM editing")
    check_range(guidance, "guidance", 1.0, None)
    check_range(source_guidance, "source_guidance", 1.0, None)
    z0 = model.to_latent(image_or_latent, dtype, is_latent)
    t0 = time.perf_counter()  # the edit's wall time: encoding and decoding excluded
    if z0.shape[0] != 1:
        raise ValueError(f"image_or_latent: DDCM edits one image at a time, got batch {z0.shape[0]}")
    i0 = start_index(num_steps, strength)
    if i0 >= num_steps:
        raise ValueError(
            f"strength: {strength} leaves no step of {num_steps} to run; use strength > {1 / num_steps:.3g}"
        )
    grid = get_timesteps(model.schedule, num_steps, spacing, steps_offset=steps_offset)[i0:]
    n_run = grid.numel() - 1
    with torch.no_grad():
        emb = model.encode_prompt([source_prompt, target_prompt]).to(z0.dtype)
        uncond = model.null_embedding(1).to(z0.dtype)
    if isinstance(controller, str):
        check_choice(controller, ("unified", "refine"), "controller")
        make = unified if controller == "unified" else refine
        controller = make(
            model.tokenize,
            [source_prompt, target_prompt],
            n_run,
            cross_replace_steps=cross_replace_steps,
            self_replace_steps=self_replace_steps,
            blend_words=blend_words,
            blend_threshold=blend_threshold,
            blend_normalize=blend_normalize,
        )
    mutual = controller is not None and controller.num_branches == 3
    conds = torch.cat([emb, emb[:1]]) if mutual else emb
    scales = [source_guidance, guidance] + ([source_guidance] if mutual else [])
    den = model.denoiser()
    ctx = attention_control(model.unet, controller) if controller is not None else contextlib.nullcontext()
    with torch.no_grad():
        with ctx:
            x0 = ddcm_sample(den, z0, grid, conds, uncond, scales, eta=eta, generator=generator, controller=controller)
        x_s, x_t = x0[:1], x0[1:2]
        seconds = time.perf_counter() - t0
        image = model.decode(x_t) if decode else None
    return EditResult(
        "infedit",
        x_t,
        x_s,
        [target_prompt],
        nfe=den.nfe,
        seconds=seconds,
        image=image,
        latent0=z0,
        guidance=float(guidance),
        timesteps=grid,
    )
