"""Inversion of real images into a latent diffusion model's noise, and editing from there: one API.

``invert(method, model, image_or_latent, prompt, ...) -> InversionResult``, then
``reconstruct(result)`` (back to ``z_0``, or the image with ``decode=True``) and
``edit(result, target_prompt, guidance=..., controller=...)`` (an attention controller from
:mod:`diffzoo.latent.attention`, installed on the UNet's attention processors for the edit pass,
which denoises the batch ``[source; target]``).

=============  ================================================================  ======================
method         idea                                                              reconstruction
=============  ================================================================  ======================
``ddim``       DDIM inversion (Song et al. 2021): the DDIM step run backwards,   drifts, more with
               ``eps`` taken at the known state                                  guidance
``edict``      EDICT (Wallace et al. 2023): coupled ``x/y`` sequences, mixing    exact (round-off)
               ``p = 0.93``
``ddpm``       edit-friendly DDPM noise space (Huberman-Spiegelglas et al.       exact
               2024): stored noise maps ``z_t``
``null_text``  null-text inversion (Mokady et al. 2023): pivot at guidance 1 +   approximate (early
               per-step optimised null embeddings                                stop), at guidance 7.5
``direct``     Direct Inversion (Ju et al. 2024): source branch snapped onto     exact (round-off)
               the pivot each step
=============  ================================================================  ======================

Every method works on any :class:`~diffzoo.latent.model.LatentModel` (TinySD, or a diffusers
``StableDiffusionPipeline``'s components) and every step uses the shared DDIM transfer
(:func:`~diffzoo.inversion.common.ddim_transfer`: core ``to_x0_eps`` + ``ddim_step``) and the one
classifier-free-guidance batcher (core :func:`~diffzoo.core.guidance.guided_x0_eps`). Each method's
default guidances live in its registry entry (:data:`METHODS`: ``default_guidance`` for inversion and
reconstruction, ``default_edit_guidance`` for the edit pass, ``None`` = the inversion's), which
:func:`invert` and :func:`edit` read when ``guidance=None``. Other modules may add methods with
:func:`register_method`. Editing an image end to end, by these methods or by InfEdit / SDEdit, is
:func:`diffzoo.editing.edit_image` (one registry over all of them).

Example (the zoo's TinySD, or Stable Diffusion weights already on disk -- nothing is downloaded)::

    from diffzoo.inversion import invert, reconstruct, edit
    from diffzoo.latent.model import LatentModel
    from diffzoo.latent.attention import replace

    model = diffzoo.zoo.latent.load_tinysd()                          # or, for SD 1.x on disk:
    # pipe = diffusers.StableDiffusionPipeline.from_pretrained("/path/to/sd-1.4", local_files_only=True)
    # model = LatentModel.from_diffusers_pipeline(pipe)                # images (1, 3, 512, 512) in [-1, 1]
    res = invert("null_text", model, image, "a red circle", num_steps=50)   # guidance 7.5
    ctl = replace(model.tokenize, ["a red circle", "a blue circle"], num_steps=50)
    out = edit(res, "a blue circle", controller=ctl)                   # P2P word swap
    edited = model.decode(out.latents)

Exactness in float32: EDICT divides by ``p`` and re-evaluates the network at reconstructed states, so
float32 round-off is amplified by the network's Lipschitz constant (the official code casts everything
to float64). ``dtype=torch.float64`` keeps the *states* in float64 while the network runs in its own
dtype: the network then sees bit-identical float32 inputs in both directions and the round trip is
exact (~1e-15) at float32 network cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffzoo.core.errors import check_choice
from diffzoo.core.random import Generator
from diffzoo.inversion import ddim, ddpm, direct, edict, null_text
from diffzoo.inversion.common import (
    EditResult,
    InversionResult,
    as_prompts,
    check_model,
    embed,
    grid,
)
from diffzoo.latent.attention import AttentionController
from diffzoo.latent.model import LatentModel

Tensor = torch.Tensor

__all__ = [
    "METHODS",
    "EditResult",
    "InversionMethod",
    "InversionResult",
    "canonical_method",
    "edit",
    "edit_guidance",
    "invert",
    "reconstruct",
    "register_method",
]


@dataclass(frozen=True)
class InversionMethod:
    """A method's three functions (see :mod:`diffzoo.inversion.ddim` for their signatures) and its
    default guidances: ``default_guidance`` of inversion and reconstruction, ``default_edit_guidance``
    of the edit pass (``None``: the inversion's guidance, for methods that invert for the scale they
    edit at)."""

    name: str
    invert: Callable[..., InversionResult]
    reconstruct: Callable[[InversionResult], Tensor]
    edit: Callable[..., EditResult]
    default_guidance: float
    default_edit_guidance: float | None = None


METHODS: dict[str, InversionMethod] = {}


def register_method(
    name: str,
    invert_fn: Callable[..., InversionResult],
    reconstruct_fn: Callable[[InversionResult], Tensor],
    edit_fn: Callable[..., EditResult],
    *,
    default_guidance: float,
    default_edit_guidance: float | None = None,
) -> InversionMethod:
    """Add a method to :func:`invert` (``invert_fn(model, z0, prompts, cond, ts, guidance, generator, **kw)``,
    ``edit_fn(result, target_prompt, *, guidance, controller, **kw)``)."""
    if "-" in name:
        raise ValueError(f"name: method names use underscores ('-' is an alias), got {name!r}")
    METHODS[name] = InversionMethod(
        name,
        invert_fn,
        reconstruct_fn,
        edit_fn,
        float(default_guidance),
        None if default_edit_guidance is None else float(default_edit_guidance),
    )
    return METHODS[name]


register_method(
    "ddim",
    ddim.invert,
    ddim.reconstruct,
    ddim.edit,
    default_guidance=ddim.DEFAULT_GUIDANCE,
    default_edit_guidance=ddim.DEFAULT_EDIT_GUIDANCE,
)
register_method("edict", edict.invert, edict.reconstruct, edict.edit, default_guidance=edict.DEFAULT_GUIDANCE)
register_method(
    "ddpm",
    ddpm.invert,
    ddpm.reconstruct,
    ddpm.edit,
    default_guidance=ddpm.DEFAULT_GUIDANCE,
    default_edit_guidance=ddpm.DEFAULT_EDIT_GUIDANCE,
)
register_method(
    "null_text", null_text.invert, null_text.reconstruct, null_text.edit, default_guidance=null_text.DEFAULT_GUIDANCE
)
register_method("direct", direct.invert, direct.reconstruct, direct.edit, default_guidance=direct.DEFAULT_GUIDANCE)


def canonical_method(method: str, choices: Sequence[str] | dict[str, Any] = METHODS) -> str:
    """The registered name of ``method`` (``null-text`` is ``null_text``); ``ValueError`` naming
    ``method`` and the choices otherwise."""
    if not isinstance(method, str):
        raise TypeError(f"method: expected a method name, got {type(method).__name__}")
    name = method.replace("-", "_")
    check_choice(name if name in choices else method, choices, "method")
    return name


def invert(
    method: str,
    model: LatentModel,
    image_or_latent: Tensor,
    prompt: str | Sequence[str],
    *,
    num_steps: int = 50,
    guidance: float | None = None,
    dtype: torch.dtype = torch.float32,
    generator: Generator = None,
    is_latent: bool | None = None,
    spacing: str = "leading",
    steps_offset: int = 1,
    **method_kw: Any,
) -> InversionResult:
    """Invert a batch of images ``(B, 3, H, W)`` in ``[-1, 1]`` (or latents) under ``prompt``.

    Parameters
    ----------
    method: ``ddim``, ``edict``, ``ddpm``, ``null_text`` (``null-text``), ``direct`` (or a registered name).
    model: a text-conditional :class:`~diffzoo.latent.model.LatentModel` (checked).
    image_or_latent: images in ``[-1, 1]`` or latents; which one is decided by
        :meth:`~diffzoo.latent.model.LatentModel.is_latent` unless ``is_latent`` says.
    num_steps: DDIM steps on the grid (``spacing``/``steps_offset``: SD's ``leading`` grid by default).
    guidance: the classifier-free guidance of inversion and reconstruction (``None``: the method's
        ``default_guidance`` in :data:`METHODS` -- ddim 1, edict 3, ddpm 3.5, null_text 7.5, direct 7.5).
    dtype: the working dtype of the latent states (float64 for exactness; the network runs in its own
        dtype -- cast the model with ``model.to(dtype=torch.float64)`` for a float64 network).
    generator: randomness (edit-friendly DDPM's noisy versions).
    method_kw: method options (edict: ``p``, ``leapfrog``, ``strength``; ddpm: ``eta``,
        ``zero_last_noise``; null_text: ``inner_steps``, ``lr``, ``early_stop``; direct:
        ``inversion_guidance``, ``offset_scale``).
    """
    entry = METHODS[canonical_method(method)]
    lm = check_model(model, entry.name)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating-point torch.dtype, got {dtype!r}")
    z0 = lm.to_latent(image_or_latent, dtype, is_latent)
    prompts = as_prompts(prompt, z0.shape[0])
    cond = embed(lm, prompts)
    ts = grid(lm, num_steps, spacing, steps_offset)
    w = entry.default_guidance if guidance is None else guidance
    return entry.invert(lm, z0, prompts, cond, ts, w, generator, **method_kw)


def _check_result(result: object) -> InversionResult:
    if not isinstance(result, InversionResult):
        raise TypeError(f"result: expected an InversionResult from invert(), got {type(result).__name__}")
    check_choice(result.method, METHODS, "result.method")
    return result


def reconstruct(result: InversionResult, *, decode: bool = False) -> Tensor:
    """Regenerate the inverted input with the source prompt: the latent ``z_0`` (or the image)."""
    z = METHODS[_check_result(result).method].reconstruct(result)
    if decode:
        with torch.no_grad():
            return result.model.decode(z)
    return z


def edit_guidance(result: InversionResult, guidance: float | None = None) -> float:
    """The target guidance of an edit of ``result``: ``guidance``, else the method's
    ``default_edit_guidance``, else the inversion's guidance."""
    if guidance is not None:
        return guidance
    default = METHODS[_check_result(result).method].default_edit_guidance
    return result.guidance if default is None else default


def edit(
    result: InversionResult,
    target_prompt: str | Sequence[str],
    *,
    guidance: float | None = None,
    controller: AttentionController | None = None,
    **method_kw: Any,
) -> EditResult:
    """Edit the inverted input towards ``target_prompt`` (see each method's ``edit`` for options:
    ``source_guidance`` for ddim/edict/ddpm, ``skip`` (T_skip) for ddpm). ``guidance=None``: the
    method's default (:func:`edit_guidance`)."""
    return METHODS[_check_result(result).method].edit(
        result, target_prompt, guidance=edit_guidance(result, guidance), controller=controller, **method_kw
    )
