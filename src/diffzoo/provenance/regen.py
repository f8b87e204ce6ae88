"""Diffusion attacks on watermarks: regeneration, VAE round trip, decoder-guided regeneration, edit.

* :func:`regenerate` -- the regeneration attack of Zhao et al. (*Invisible Image Watermarks Are Provably
  Removable Using Generative AI*, arXiv 2306.01953; ``XuandongZhao/WatermarkAttacker``):
  ``z = E(x_w)``, ``z_{t*} = sqrt(abar_{t*}) z + sqrt(1 - abar_{t*}) eps``, DDIM-denoise to 0 with the
  empty or the captioned prompt, ``x' = D(z')``. ``t_star`` in [0, 1] is the fraction of the training
  horizon (``t* = 0``: no noise, only the VAE round trip is left; the grid's first ``floor(t* N)`` steps).
* :func:`vae_roundtrip` -- ``D(E(x))`` only.
* :func:`guided_regenerate` -- the decoder-guided attack of *Diffusion-based image editing for breaking
  robust watermarks* (BRIEFS Sec. 11; the exact update was not found, so this is a labelled, generic
  "-style" form): during denoising, after each DDIM step the predicted clean latent ``x0`` is moved by a
  normalised gradient step on ``BCE(W(D(x0)), m_rand)`` -- the attacker's differentiable watermark decoder
  pushed toward a fresh random message, i.e. toward chance agreement with the true one -- and the state
  is shifted by ``alpha_s (x0' - x0)`` (the DDIM update is linear in ``x0``).
* :func:`edit_attack` -- an edit with :func:`diffzoo.editing.edit_image` (default: DDIM inversion and
  re-generation under prompt-to-prompt control with the same caption, a "null edit").

Images larger than the model's native size are processed as a grid of native tiles
(:mod:`~diffzoo.provenance.tiles`), with one caption per tile.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from diffzoo.core.errors import check_range
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.random import Generator, randn
from diffzoo.editing import edit_image
from diffzoo.editing.anchored import anchored_latent, start_index
from diffzoo.latent.model import LatentModel
from diffzoo.provenance.tiles import from_tiles, to_tiles
from diffzoo.sampling.ddim import ddim
from diffzoo.sampling.timesteps import get_timesteps

Tensor = torch.Tensor


def _tiles(model: LatentModel, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    size = model.image_size or x.shape[-1]
    if x.shape[-1] == size and x.shape[-2] == size:
        return x, (1, 1)
    return to_tiles(x, size), (x.shape[-2] // size, x.shape[-1] // size)


def _prompts(prompts: Sequence[str] | str | None, n: int) -> list[str]:
    if prompts is None:
        return [""] * n
    if isinstance(prompts, str):
        return [prompts] * n
    prompts = [p for row in prompts for p in ([row] if isinstance(row, str) else row)]
    if len(prompts) != n:
        raise ValueError(f"prompts: expected {n} prompts (one per tile), got {len(prompts)}")
    return prompts


def vae_roundtrip(model: LatentModel, x: Tensor) -> Tensor:
    """``D(E(x))`` (tile-wise)."""
    t, grid = _tiles(model, x)
    with torch.no_grad():
        return from_tiles(model.decode(model.encode_image(t)), grid)


def _regen(
    model: LatentModel,
    x: Tensor,
    t_star: float,
    prompts: Sequence[str] | str | None,
    num_steps: int,
    guidance: float,
    generator: Generator,
    callback: Callable[[dict], Any] | None,
    grid_hw: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    check_range(t_star, "t_star", 0.0, 1.0)
    check_range(guidance, "guidance", 1.0, None)
    t, grid_shape = _tiles(model, x)
    prm = _prompts(prompts, t.shape[0])
    with torch.no_grad():
        z0 = model.encode_image(t)
        grid = get_timesteps(model.schedule, num_steps, "leading", steps_offset=1)
        i0 = start_index(num_steps, t_star)
        z = z0
        if i0 < num_steps:
            noise = randn(z0.shape, generator, z0.dtype, z0.device)
            z = anchored_latent(model.schedule, z0, grid[i0], noise)
            cond = model.encode_prompt(prm).to(z0.dtype)
            den = cfg_denoiser(model.denoiser(), guidance, model.null_embedding(z0.shape[0]).to(z0.dtype))
            z = ddim(den, z, grid[i0:], cond, callback=callback)
        return from_tiles(model.decode(z), grid_shape)


def regenerate(
    model: LatentModel,
    x: Tensor,
    t_star: float,
    prompts: Sequence[str] | str | None = None,
    *,
    num_steps: int = 50,
    guidance: float = 1.0,
    generator: Generator = None,
) -> Tensor:
    """Regeneration attack (see the module docstring); ``prompts``: ``None`` (empty prompt), one string,
    or one caption per tile (a list per image or flat)."""
    return _regen(model, x, t_star, prompts, num_steps, guidance, generator, None)


def guided_regenerate(
    model: LatentModel,
    x: Tensor,
    t_star: float,
    decoder: Callable[[Tensor], Tensor],
    bits: int,
    prompts: Sequence[str] | str | None = None,
    *,
    scale: float = 0.5,
    num_steps: int = 50,
    guidance: float = 1.0,
    generator: Generator = None,
) -> Tensor:
    """Decoder-guided regeneration ("-style"; module docstring): ``decoder(image) -> (B, bits)`` logits,
    differentiable; ``scale`` is the step on ``x0`` in units of its RMS-normalised gradient."""
    check_range(scale, "scale", 0.0, None)
    t, grid_shape = _tiles(model, x)
    gen = generator[0] if isinstance(generator, (list, tuple)) else generator
    # the random target message comes from its own stream, so scale = 0 is exactly plain regeneration
    tgen = torch.Generator().manual_seed((gen.initial_seed() if gen is not None else 0) + 7919)
    target = torch.randint(0, 2, (x.shape[0], int(bits)), generator=tgen).float()

    def callback(d: dict) -> Tensor | None:
        if scale == 0:
            return None
        with torch.enable_grad():
            x0 = d["x0"].detach().requires_grad_(True)
            img = from_tiles(model.decode(x0), grid_shape)
            loss = F.binary_cross_entropy_with_logits(decoder(img), target, reduction="sum")
            (g,) = torch.autograd.grad(loss, x0)
        rms = g.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, *[1] * (g.ndim - 1))
        a_s, _ = model.schedule.alpha_sigma(torch.as_tensor(d["s"], dtype=torch.float64))
        return d["x"] - float(a_s) * scale * g / rms

    return _regen(model, x, t_star, prompts, num_steps, guidance, generator, callback)


def edit_attack(
    model: LatentModel,
    x: Tensor,
    prompts: Sequence[str],
    targets: Sequence[str] | None = None,
    *,
    method: str = "ddim",
    num_steps: int = 20,
    seed: int = 0,
    **kw: Any,
) -> Tensor:
    """Edit every tile from its caption to ``targets`` (default: the same caption) with
    :func:`~diffzoo.editing.edit_image` (``method`` one of its methods; ``kw`` passed on)."""
    t, grid_shape = _tiles(model, x)
    src = _prompts(prompts, t.shape[0])
    tgt = src if targets is None else _prompts(targets, t.shape[0])
    out = []
    for i in range(t.shape[0]):
        res = edit_image(method, model, t[i : i + 1], src[i], tgt[i], num_steps=num_steps, seed=seed + i, **kw)
        out.append(res.image.detach())
    return from_tiles(torch.cat(out), grid_shape)


def generate_latents(
    model: LatentModel,
    prompts: Sequence[str],
    *,
    num_steps: int = 20,
    guidance: float = 5.0,
    generator: Generator = None,
) -> Tensor:
    """Text-to-image latents (DDIM from pure noise, classifier-free guidance), not decoded: WOUAF decodes
    the UNet's latents with the fingerprinted decoder."""
    check_range(guidance, "guidance", 1.0, None)
    prm = _prompts(list(prompts), len(prompts))
    size = model.image_size or 32
    shape = model.latent_shape(len(prm), size, size)
    with torch.no_grad():
        grid = get_timesteps(model.schedule, num_steps, "leading", steps_offset=1)
        z = randn(shape, generator, torch.float32, model.device)
        cond = model.encode_prompt(prm)
        den = cfg_denoiser(model.denoiser(), guidance, model.null_embedding(len(prm)))
        return ddim(den, z, grid, cond)
