"""Editing a real image from a source prompt to a target prompt, by any method: one registry, one entry
point, one result type.

``edit_image(method, model, image, source_prompt, target_prompt, ...) -> EditResult`` runs any method of
:data:`EDIT_METHODS`:

=============  ============================================================  =========================
method         what runs                                                     default guidance
=============  ============================================================  =========================
``ddim``       DDIM inversion (at its own default, 1), then the edit pass    the inversion registry's
``edict``      EDICT exact inversion, then the edit pass                     ``default_edit_guidance``,
``ddpm``       edit-friendly DDPM noise maps, then the edit pass             else ``default_guidance``
``null_text``  null-text inversion, then the edit pass                       (:data:`diffzoo.inversion.
``direct``     Direct Inversion's pivot, then the corrected edit pass        METHODS`)
``infedit``    DDCM virtual inversion + unified attention control            ``ddcm.DEFAULT_GUIDANCE``
``sdedit``     anchored start (SDEdit) + DDIM with the target prompt         ``anchored.DEFAULT_GUIDANCE``
=============  ============================================================  =========================

The edit pass of the inversion methods runs ``[source; target]`` under prompt-to-prompt control
(``p2p``: :func:`make_controller`); InfEdit uses its own unified attention control unless ``p2p="none"``;
SDEdit has no attention control. ``reconstruct_image`` (or ``edit_image(..., reconstruct=True)``) gives
what each method regenerates with the source prompt: the inversion's reconstruction, InfEdit's edit
with target = source, SDEdit with the source prompt.

Each entry holds the method's function and its default guidance (and start strength): the one place
the CLI, the benchmark and the demo get them from. Other modules add methods with
:func:`register_edit_method`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from diffzoo import inversion
from diffzoo.core.errors import check_choice, check_int, check_range
from diffzoo.editing import anchored, ddcm
from diffzoo.inversion.common import EditResult
from diffzoo.latent import attention as A
from diffzoo.latent.attention import AttentionController
from diffzoo.latent.model import LatentModel

log = logging.getLogger(__name__)
Tensor = torch.Tensor

__all__ = [
    "EDIT_METHODS",
    "P2P_MODES",
    "EditFn",
    "EditMethod",
    "EditOptions",
    "EditResult",
    "edit_by_inversion",
    "edit_image",
    "get_edit_method",
    "inversion_edit_guidance",
    "make_controller",
    "reconstruct_image",
    "register_edit_method",
]

P2P_MODES = ("replace", "refine", "none")


# -------------------------------------------------------------------------------------------------
# Prompt-to-prompt controllers for the inversion methods' edit pass
# -------------------------------------------------------------------------------------------------


def make_controller(
    model: LatentModel,
    mode: str,
    source: str,
    target: str,
    num_steps: int,
    *,
    cross: float | None = None,
    self_: float | None = None,
    blend_words: Sequence[Sequence[str]] | None = None,
    weights: dict[str, float] | None = None,
    blend: dict[str, Any] | None = None,
) -> AttentionController | None:
    """A prompt-to-prompt controller for ``[source; target]`` (``None``: mode "none" and no weights).

    ``cross`` / ``self_``: the fractions of steps with cross- / self-attention injection (``None``: the
    factories' defaults); ``blend``: local-blend options of the factories (``blend_threshold``,
    ``blend_normalize``). ``replace`` falls back to ``refine`` when the prompts' token counts differ."""
    check_choice(mode, P2P_MODES, "p2p")
    tokenize = model.tokenize
    if tokenize is None:
        raise ValueError("model: prompt-to-prompt control needs a text-conditional model (a tokenizer)")
    kw: dict[str, Any] = {
        k: v for k, v in (("cross_replace_steps", cross), ("self_replace_steps", self_)) if v is not None
    }
    kw.update({k: v for k, v in (blend or {}).items() if v is not None})
    if weights:
        return A.reweight(tokenize, [source, target], num_steps, weights, blend_words=blend_words, **kw)
    if mode == "none":
        return None
    if mode == "replace" and A.prompt_length(tokenize, source) != A.prompt_length(tokenize, target):
        log.info("p2p: token counts differ, using refine instead of replace")
        mode = "refine"
    fn = A.replace if mode == "replace" else A.refine
    return fn(tokenize, [source, target], num_steps, blend_words=blend_words, **kw)


# -------------------------------------------------------------------------------------------------
# The registry
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditOptions:
    """The settings of one edit with the method's defaults filled in: what every method function gets.

    ``guidance`` is the target branch's classifier-free guidance; ``invert_guidance`` the inversion's
    (inversion methods only; ``None``: the method's ``default_guidance`` when it has a separate edit
    default -- ddim, ddpm -- else ``guidance``). ``strength`` is the start strength (InfEdit, SDEdit;
    EDICT's partial inversion). The attention options (``p2p``, ``cross_steps``, ``self_steps``,
    ``blend_words``, ``weights``, ``blend_threshold``, ``blend_normalize``, or a ready ``controller``)
    are ``None`` where the method's own defaults apply. ``seed`` seeds a fresh generator per run.
    One set of options can drive every method: SDEdit has no attention control and does not use the
    attention options; a ``strength`` or ``invert_guidance`` (or InfEdit's ``weights``) that a method has
    no use for is ignored with a logged warning.
    """

    num_steps: int
    guidance: float
    invert_guidance: float | None = None
    strength: float | None = None
    p2p: str = "refine"
    cross_steps: float | None = None
    self_steps: float | None = None
    blend_words: Sequence[Sequence[str]] | None = None
    weights: dict[str, float] | None = None
    blend_threshold: float | None = None
    blend_normalize: str | None = None
    controller: AttentionController | None = None
    seed: int = 0
    reconstruct: bool = False
    method_kw: dict[str, Any] = field(default_factory=dict)

    def generator(self) -> torch.Generator:
        """A fresh CPU generator seeded with ``seed`` (each run of a method draws the same noise)."""
        return torch.Generator().manual_seed(int(self.seed))

    def blend(self) -> dict[str, Any]:
        """The local-blend options that were set."""
        return {
            k: v
            for k, v in (("blend_threshold", self.blend_threshold), ("blend_normalize", self.blend_normalize))
            if v is not None
        }


class EditFn(Protocol):
    """A method's function: edit the latent ``z0`` (batch ``B``) from ``source_prompt`` to
    ``target_prompt``; ``target_prompt=None`` asks for the reconstruction only (``latents`` and
    ``reconstruction`` are then what the method regenerates with the source prompt). With
    ``opts.reconstruct`` an edit also sets ``reconstruction``. ``nfe``/``seconds`` count the edit
    (inversion included), not the optional reconstruction."""

    def __call__(
        self, model: LatentModel, z0: Tensor, source_prompt: str, target_prompt: str | None, opts: EditOptions
    ) -> EditResult: ...


@dataclass(frozen=True)
class EditMethod:
    """A registered edit method: its function, its default guidance and (for methods that start late)
    its default start strength.

    ``guidance`` is the default guidance itself, or a function that reads it from where it lives (the
    inversion methods read :data:`diffzoo.inversion.METHODS`: ``default_edit_guidance``, else
    ``default_guidance``); :attr:`default_guidance` is the number either way.
    """

    name: str
    run: EditFn
    guidance: float | Callable[[], float]
    default_strength: float | None = None
    summary: str = ""

    @property
    def default_guidance(self) -> float:
        """The guidance of the target branch when ``edit_image(..., guidance=None)``."""
        return float(self.guidance() if callable(self.guidance) else self.guidance)


EDIT_METHODS: dict[str, EditMethod] = {}


def register_edit_method(
    name: str,
    run: EditFn,
    *,
    default_guidance: float | Callable[[], float],
    default_strength: float | None = None,
    summary: str = "",
) -> EditMethod:
    """Add (or replace) a method of :func:`edit_image`; returns its entry. ``default_guidance`` is a
    number or a function returning it (to read it from another registry)."""
    if "-" in name:
        raise ValueError(f"name: method names use underscores ('-' is an alias), got {name!r}")
    EDIT_METHODS[name] = EditMethod(
        name,
        run,
        default_guidance if callable(default_guidance) else float(default_guidance),
        None if default_strength is None else float(default_strength),
        summary,
    )
    return EDIT_METHODS[name]


def get_edit_method(method: str) -> EditMethod:
    """The entry of ``method`` (``null-text`` is ``null_text``); ``ValueError`` naming ``method`` and the
    choices otherwise."""
    return EDIT_METHODS[inversion.canonical_method(method, EDIT_METHODS)]


# -------------------------------------------------------------------------------------------------
# The methods
# -------------------------------------------------------------------------------------------------


def _keyword_options(fn: Callable[..., Any], reserved: set[str]) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY} - reserved


def edit_by_inversion(name: str) -> EditFn:
    """The edit function of inversion method ``name`` (:data:`diffzoo.inversion.METHODS`): invert with
    the source prompt, then the edit pass ``[source; target]`` under ``opts``' attention control.

    ``opts.method_kw`` go to the method's ``invert`` or ``edit`` (whichever takes them; e.g. edict
    ``p``, ddpm ``skip``, null_text ``inner_steps``); ``opts.strength`` is EDICT's partial inversion.
    The controller covers the edit pass's steps (``N - skip`` for ddpm).
    """
    invert_opts = _keyword_options(inversion.METHODS[name].invert, set()) | {"spacing", "steps_offset"}
    edit_opts = _keyword_options(inversion.METHODS[name].edit, {"guidance", "controller"})

    def run(
        model: LatentModel, z0: Tensor, source_prompt: str, target_prompt: str | None, opts: EditOptions
    ) -> EditResult:
        entry = inversion.METHODS[name]
        invert_kw: dict[str, Any] = {}
        edit_kw: dict[str, Any] = {}
        for key, value in opts.method_kw.items():
            if key in invert_opts:
                invert_kw[key] = value
            elif key in edit_opts:
                edit_kw[key] = value
            else:
                raise TypeError(
                    f"{key}: not an option of the {name} method (inversion: {sorted(invert_opts)}, "
                    f"edit: {sorted(edit_opts)})"
                )
        if opts.strength is not None:
            if "strength" in invert_opts:
                invert_kw["strength"] = opts.strength
            else:
                _ignored(name, {"strength": opts.strength})
        w_inv = opts.invert_guidance
        if w_inv is None:
            w_inv = opts.guidance if entry.default_edit_guidance is None else entry.default_guidance
        res = inversion.invert(
            name,
            model,
            z0,
            source_prompt,
            num_steps=opts.num_steps,
            guidance=w_inv,
            dtype=z0.dtype,
            generator=opts.generator(),
            is_latent=True,
            **invert_kw,
        )
        rec = None
        if opts.reconstruct or target_prompt is None:
            with torch.no_grad():
                rec = inversion.reconstruct(res)
            if target_prompt is None:
                return EditResult(
                    name,
                    rec,
                    None,
                    list(res.prompt),
                    nfe=res.nfe,
                    seconds=res.seconds,
                    latent0=z0,
                    guidance=res.guidance,
                    timesteps=res.timesteps,
                    inversion=res,
                    reconstruction=rec,
                )
        ctl = opts.controller
        if ctl is None:
            ctl = make_controller(
                model,
                opts.p2p,
                source_prompt,
                target_prompt,
                res.num_steps - int(edit_kw.get("skip", 0)),
                cross=opts.cross_steps,
                self_=opts.self_steps,
                blend_words=opts.blend_words,
                weights=opts.weights,
                blend=opts.blend(),
            )
        out = inversion.edit(res, target_prompt, guidance=opts.guidance, controller=ctl, **edit_kw)
        return replace(out, nfe=res.nfe + out.nfe, seconds=res.seconds + out.seconds, reconstruction=rec)

    return run


def _ignored(name: str, options: dict[str, Any]) -> None:
    """Log the options that were set but that method ``name`` has no use for."""
    unused = sorted(k for k, v in options.items() if v is not None and v is not False)
    if unused:
        log.warning("%s: ignoring %s (not options of this method)", name, ", ".join(unused))


def _infedit(
    model: LatentModel, z0: Tensor, source_prompt: str, target_prompt: str | None, opts: EditOptions
) -> EditResult:
    """InfEdit (:func:`~diffzoo.editing.ddcm.ddcm_edit`): unified attention control unless ``p2p="none"``
    (or ``opts.controller``); the reconstruction is the edit with target = source at one guidance."""
    _ignored("infedit", {"invert_guidance": opts.invert_guidance, "weights": opts.weights})
    control: AttentionController | str | None = opts.controller
    if control is None:
        control = "unified" if opts.p2p != "none" else None
    kw: dict[str, Any] = dict(
        num_steps=opts.num_steps, strength=opts.strength, is_latent=True, decode=False, **opts.blend(), **opts.method_kw
    )
    kw.update(
        {
            k: v
            for k, v in (("cross_replace_steps", opts.cross_steps), ("self_replace_steps", opts.self_steps))
            if v is not None
        }
    )
    rec = None
    if opts.reconstruct or target_prompt is None:
        rec_kw = {**kw, "source_guidance": opts.guidance}
        r = ddcm.ddcm_edit(
            model,
            z0,
            source_prompt,
            source_prompt,
            guidance=opts.guidance,
            generator=opts.generator(),
            controller=control if isinstance(control, str) else None,
            **rec_kw,
        )
        if target_prompt is None:
            return replace(r, reconstruction=r.latents)
        rec = r.latents
    out = ddcm.ddcm_edit(
        model,
        z0,
        source_prompt,
        target_prompt,
        guidance=opts.guidance,
        generator=opts.generator(),
        controller=control,
        blend_words=opts.blend_words,
        **kw,
    )
    return replace(out, reconstruction=rec)


def _sdedit(
    model: LatentModel, z0: Tensor, source_prompt: str, target_prompt: str | None, opts: EditOptions
) -> EditResult:
    """SDEdit (:func:`~diffzoo.editing.anchored.sdedit`; no attention control: the attention options
    are not used); the reconstruction is SDEdit with the source prompt."""
    _ignored("sdedit", {"invert_guidance": opts.invert_guidance})
    kw: dict[str, Any] = dict(
        strength=opts.strength,
        num_steps=opts.num_steps,
        guidance=opts.guidance,
        is_latent=True,
        decode=False,
        **opts.method_kw,
    )
    rec = None
    if opts.reconstruct or target_prompt is None:
        r = anchored.sdedit(model, z0, source_prompt, generator=opts.generator(), **kw)
        if target_prompt is None:
            return replace(r, reconstruction=r.latents)
        rec = r.latents
    out = anchored.sdedit(model, z0, target_prompt, generator=opts.generator(), **kw)
    return replace(out, reconstruction=rec)


def inversion_edit_guidance(name: str) -> Callable[[], float]:
    """The default edit guidance of inversion method ``name``, read from :data:`diffzoo.inversion.METHODS`
    when asked (``default_edit_guidance``, else ``default_guidance``)."""

    def default() -> float:
        entry = inversion.METHODS[name]
        return entry.default_guidance if entry.default_edit_guidance is None else entry.default_edit_guidance

    return default


register_edit_method(
    "ddim",
    edit_by_inversion("ddim"),
    default_guidance=inversion_edit_guidance("ddim"),
    summary="DDIM inversion + prompt-to-prompt edit pass",
)
register_edit_method(
    "edict",
    edit_by_inversion("edict"),
    default_guidance=inversion_edit_guidance("edict"),
    summary="EDICT exact inversion + edit pass",
)
register_edit_method(
    "ddpm",
    edit_by_inversion("ddpm"),
    default_guidance=inversion_edit_guidance("ddpm"),
    summary="edit-friendly DDPM inversion + edit pass",
)
register_edit_method(
    "null_text",
    edit_by_inversion("null_text"),
    default_guidance=inversion_edit_guidance("null_text"),
    summary="null-text inversion + prompt-to-prompt edit pass",
)
register_edit_method(
    "direct",
    edit_by_inversion("direct"),
    default_guidance=inversion_edit_guidance("direct"),
    summary="Direct Inversion + prompt-to-prompt edit pass",
)
register_edit_method(
    "infedit",
    _infedit,
    default_guidance=ddcm.DEFAULT_GUIDANCE,
    default_strength=ddcm.DEFAULT_STRENGTH,
    summary="InfEdit: DDCM virtual inversion + unified attention control",
)
register_edit_method(
    "sdedit",
    _sdedit,
    default_guidance=anchored.DEFAULT_GUIDANCE,
    default_strength=anchored.DEFAULT_STRENGTH,
    summary="SDEdit: anchored start + DDIM",
)


# -------------------------------------------------------------------------------------------------
# The entry points
# -------------------------------------------------------------------------------------------------


def _run(
    method: str,
    model: LatentModel,
    image: Tensor,
    source_prompt: str,
    target_prompt: str | None,
    *,
    num_steps: int,
    guidance: float | None,
    strength: float | None,
    dtype: torch.dtype | None,
    is_latent: bool | None,
    decode: bool,
    **options: Any,
) -> EditResult:
    entry = get_edit_method(method)
    if not isinstance(model, LatentModel):
        raise TypeError(f"model: expected a diffzoo.latent.model.LatentModel, got {type(model).__name__}")
    model.require_conditional(f"{entry.name} editing")
    for arg, prompt in (("source_prompt", source_prompt), ("target_prompt", target_prompt)):
        ok = isinstance(prompt, str) or (isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt))
        if not ok and not (prompt is None and arg == "target_prompt"):
            raise TypeError(f"{arg}: expected a string or a list of strings, got {type(prompt).__name__}")
    check_int(options["seed"], "seed")
    check_choice(options["p2p"], P2P_MODES, "p2p")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating-point torch.dtype, got {dtype!r}")
    z0 = model.to_latent(image, dtype, is_latent)
    opts = EditOptions(
        num_steps=num_steps,
        guidance=entry.default_guidance if guidance is None else check_range(guidance, "guidance"),
        strength=entry.default_strength if strength is None else strength,
        **options,
    )
    out = entry.run(model, z0, source_prompt, target_prompt, opts)
    if decode and out.image is None:
        with torch.no_grad():
            out = replace(out, image=model.decode(out.latents))
    return out


_POSITIONAL = ("method", "model", "image", "source_prompt", "target_prompt")


def _options(arguments: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of :func:`edit_image` / :func:`reconstruct_image` (their ``locals()``), as
    :func:`_run` takes them: one list of options, written once in each signature."""
    return {k: v for k, v in arguments.items() if k not in _POSITIONAL}


def edit_image(
    method: str,
    model: LatentModel,
    image: Tensor,
    source_prompt: str,
    target_prompt: str,
    *,
    num_steps: int = 50,
    guidance: float | None = None,
    invert_guidance: float | None = None,
    strength: float | None = None,
    p2p: str = "refine",
    cross_steps: float | None = None,
    self_steps: float | None = None,
    blend_words: Sequence[Sequence[str]] | None = None,
    weights: dict[str, float] | None = None,
    blend_threshold: float | None = None,
    blend_normalize: str | None = None,
    controller: AttentionController | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    is_latent: bool | None = None,
    decode: bool = True,
    reconstruct: bool = False,
    **method_kw: Any,
) -> EditResult:
    """Edit ``image`` (``(B, 3, H, W)`` in ``[-1, 1]``, or its latent) from ``source_prompt`` to
    ``target_prompt`` with ``method`` (a name of :data:`EDIT_METHODS`; ``ValueError`` naming ``method``
    otherwise).

    Parameters
    ----------
    num_steps: steps of the method's grid (SD's ``leading`` DDIM grid).
    guidance: the target branch's classifier-free guidance (``None``: the method's default).
    invert_guidance: the inversion's guidance (inversion methods; see :class:`EditOptions`).
    strength: the start strength (``None``: the method's default; InfEdit, SDEdit, EDICT).
    p2p: prompt-to-prompt mode of the edit pass (``replace``, ``refine``, ``none``); InfEdit: anything
        but ``none`` is its unified attention control. ``cross_steps``/``self_steps`` (injection
        windows), ``blend_words`` (local blend, ``[source words, target words]``), ``weights``
        (re-weighting ``{word: scale}``), ``blend_threshold``/``blend_normalize``: ``None`` keeps the
        method's defaults. ``controller``: a ready attention controller instead.
    seed: seeds the method's noise (a fresh generator per run).
    dtype: the working dtype of the latent states (``None``: the image's).
    is_latent: whether ``image`` is a latent (``None``: :meth:`LatentModel.is_latent` decides).
    decode: set ``image`` of the result (the decoded edit in ``[-1, 1]``).
    reconstruct: also set ``reconstruction`` (see :func:`reconstruct_image`; not counted in ``nfe``).
    method_kw: the method's own options (e.g. edict ``p``, ddpm ``skip``/``eta``, null_text
        ``inner_steps``, infedit ``source_guidance``/``eta``, sdedit ``mode``).
    """
    return _run(method, model, image, source_prompt, target_prompt, **_options(locals()))


def reconstruct_image(
    method: str,
    model: LatentModel,
    image: Tensor,
    source_prompt: str,
    *,
    num_steps: int = 50,
    guidance: float | None = None,
    invert_guidance: float | None = None,
    strength: float | None = None,
    p2p: str = "refine",
    cross_steps: float | None = None,
    self_steps: float | None = None,
    blend_words: Sequence[Sequence[str]] | None = None,
    weights: dict[str, float] | None = None,
    blend_threshold: float | None = None,
    blend_normalize: str | None = None,
    controller: AttentionController | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    is_latent: bool | None = None,
    decode: bool = True,
    **method_kw: Any,
) -> EditResult:
    """What ``method`` regenerates from ``image`` with the source prompt: the ``reconstruction`` that
    :func:`edit_image` with the same options sets -- an inversion method's reconstruction (at the
    inversion's guidance), InfEdit's edit with target = source (source and target guidance
    ``guidance``), SDEdit with the source prompt. ``latents`` = ``reconstruction``;
    ``reconstruction_error`` is its ``max |z - z_0|``. Takes :func:`edit_image`'s options, so one set
    drives both (blend words, re-weighting and controllers are not used by a reconstruction)."""
    return _run(method, model, image, source_prompt, None, reconstruct=True, **_options(locals()))
