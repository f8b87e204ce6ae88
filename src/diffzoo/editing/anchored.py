"""Anchored initialisation / SDEdit: start sampling from a noised anchor latent instead of pure noise.

SDEdit (Meng et al., ICLR 2022, Sec. 3) and the anchor-image initialisation of *Text-image guided
Diffusion Model for generating Deepfake celebrity interactions* (arXiv 2309.14751; BRIEFS Sec. 13),
as a general img2img start: with strength ``s`` in ``[0, 1]`` and an ``N``-step grid, skip the first
``N - floor(s N)`` steps and start at ``t_s`` from::

    z_init = alpha_{t_s} E(x_anchor) + sigma_{t_s} eps                     ("sdedit", the forward marginal)
    z_init = eps + lam * E(x_anchor)                                        ("additive": the paper's ablation)

then denoise with the text prompt (DDIM, classifier-free guidance). ``s = 0`` returns the anchor's
latent (no step is taken); ``s = 1`` starts from almost pure noise (plain text-to-image).
"""

from __future__ import annotations

import time

import torch

from diffzoo.core.errors import check_choice, check_range
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.parameterization import ddim_step
from diffzoo.core.random import Generator, randn
from diffzoo.core.schedules import NoiseSchedule
from diffzoo.inversion.common import EditResult
from diffzoo.latent.model import LatentModel
from diffzoo.sampling.ddim import ddim
from diffzoo.sampling.timesteps import get_timesteps

Tensor = torch.Tensor

__all__ = ["DEFAULT_GUIDANCE", "DEFAULT_STRENGTH", "start_index", "anchored_latent", "sdedit"]

#: SDEdit's defaults (img2img practice with Stable Diffusion); the editing registry reads them.
DEFAULT_GUIDANCE = 7.5
DEFAULT_STRENGTH = 0.6


def start_index(num_steps: int, strength: float) -> int:
    """Index of the first grid time for an edit of ``strength``: ``N - floor(strength N)`` (img2img)."""
    check_range(strength, "strength", 0.0, 1.0)
    if int(num_steps) < 1:
        raise ValueError(f"num_steps: must be >= 1, got {num_steps}")
    return int(num_steps) - min(int(strength * num_steps), int(num_steps))


def anchored_latent(
    schedule: NoiseSchedule, z_anchor: Tensor, t: Tensor | float, noise: Tensor, mode: str = "sdedit", lam: float = 1.0
) -> Tensor:
    """The anchored start ``z_init`` at model time ``t`` (see the module docstring for the two modes)."""
    check_choice(mode, ("sdedit", "additive"), "mode")
    if noise.shape != z_anchor.shape:
        raise ValueError(f"noise: shape {tuple(noise.shape)} does not match z_anchor {tuple(z_anchor.shape)}")
    tt = torch.as_tensor(t, dtype=torch.float64)
    a, s = schedule.alpha_sigma(tt)
    a, s = a.to(z_anchor.dtype), s.to(z_anchor.dtype)
    if mode == "sdedit":
        return ddim_step(z_anchor, noise, a, s)
    return noise + lam * z_anchor


def sdedit(
    model: LatentModel,
    image_or_latent: Tensor,
    prompt: str,
    *,
    strength: float = DEFAULT_STRENGTH,
    num_steps: int = 50,
    guidance: float = DEFAULT_GUIDANCE,
    generator: Generator = None,
    dtype: torch.dtype | None = None,
    spacing: str = "leading",
    steps_offset: int = 1,
    mode: str = "sdedit",
    lam: float = 1.0,
    eta: float = 0.0,
    decode: bool = True,
    is_latent: bool | None = None,
) -> EditResult:
    """Anchored initialisation + DDIM denoising with ``prompt`` (SDEdit / img2img).

    ``guidance`` >= 1 is the CFG scale (1 = conditional only); ``eta`` the DDIM stochasticity; the grid
    is ``spacing`` with ``steps_offset`` (SD's scheduler: leading, offset 1); ``image_or_latent`` is told
    apart by :meth:`~diffzoo.latent.model.LatentModel.is_latent` unless ``is_latent`` says.
    Returns the latents at the end of sampling (and their decoding when ``decode``); ``timesteps`` is
    the grid run (``t_start`` its first time), ``source_latents`` is ``None`` (no source branch).
    """

    model.require_conditional("sdedit")
    check_range(guidance, "guidance", 1.0, None)
    z0 = model.to_latent(image_or_latent, dtype, is_latent)
    t0 = time.perf_counter()  # the edit's wall time: encoding and decoding excluded
    grid = get_timesteps(model.schedule, num_steps, spacing, steps_offset=steps_offset)
    i0 = start_index(num_steps, strength)
    nfe = 0
    if i0 >= num_steps:
        z = z0
    else:
        with torch.no_grad():
            cond = model.encode_prompt([prompt] * z0.shape[0]).to(z0.dtype)
            uncond = model.null_embedding(z0.shape[0]).to(z0.dtype)
            noise = randn(z0.shape, generator, z0.dtype, z0.device)
            z = anchored_latent(model.schedule, z0, grid[i0], noise, mode, lam)
            g = cfg_denoiser(model.denoiser(), guidance, uncond)
            z = ddim(g, z, grid[i0:], cond, eta=eta, generator=generator)
            nfe = g.nfe
    seconds = time.perf_counter() - t0
    image = None
    if decode:
        with torch.no_grad():
            image = model.decode(z)
    return EditResult(
        "sdedit",
        z,
        None,
        [prompt] * z0.shape[0],
        nfe=nfe,
        seconds=seconds,
        image=image,
        latent0=z0,
        guidance=float(guidance),
        timesteps=grid[i0:],
    )
