"""Editing a real image from a source prompt to a target prompt, by any method: one entry point.

``run_edit(model, image, method, source, target, ...)`` runs ``infedit`` (DDCM virtual inversion,
:mod:`diffzoo.editing.ddcm`), ``sdedit`` (anchored start, :mod:`diffzoo.editing.anchored`) or any
inversion method of :mod:`diffzoo.inversion` followed by its edit pass under prompt-to-prompt control
(:func:`make_controller`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from diffzoo import inversion
from diffzoo.editing.anchored import sdedit
from diffzoo.editing.ddcm import ddcm_edit
from diffzoo.latent import attention as A

log = logging.getLogger(__name__)

P2P_MODES = ("replace", "refine", "none")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def make_controller(
    model: Any,
    mode: str,
    source: str,
    target: str,
    num_steps: int,
    *,
    cross: float = 0.8,
    self_: float = 0.4,
    blend_words: list[list[str]] | None = None,
    weights: dict[str, float] | None = None,
    blend: dict[str, Any] | None = None,
) -> Any:
    """A prompt-to-prompt controller for ``[source; target]`` (``None``: mode "none" and no weights).

    ``blend``: local-blend options of the factories (``blend_threshold``, ``blend_normalize``)."""
    blend = dict(blend or {})
    if weights:
        return A.reweight(
            model.tokenize,
            [source, target],
            num_steps,
            weights,
            cross_replace_steps=cross,
            self_replace_steps=self_,
            blend_words=blend_words,
            **blend,
        )
    if mode == "none":
        return None
    if mode == "replace" and A.prompt_length(model.tokenize, source) != A.prompt_length(
        model.tokenize, target
    ):
        log.info("p2p: token counts differ, using refine instead of replace")
        mode = "refine"
    fn = A.replace if mode == "replace" else A.refine
    return fn(
        model.tokenize,
        [source, target],
        num_steps,
        cross_replace_steps=cross,
        self_replace_steps=self_,
        blend_words=blend_words,
        **blend,
    )


def run_edit(
    model: Any,
    img: torch.Tensor,
    method: str,
    source: str,
    target: str,
    *,
    steps: int = 50,
    guidance: float | None = None,
    strength: float = 0.7,
    p2p: str = "refine",
    cross: float = 0.8,
    self_: float = 0.4,
    blend_words: list[list[str]] | None = None,
    weights: dict[str, float] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    method_kw: dict | None = None,
) -> torch.Tensor:
    """Edit ``img`` from ``source`` to ``target`` with ``method``; returns the edited image in ``[-1, 1]``.

    ``guidance=None`` uses each method's default scale.
    """
    g = _generator(seed)
    if method == "infedit":
        ctl = "unified" if p2p != "none" else None  # InfEdit's own unified attention control
        return ddcm_edit(
            model,
            img,
            source,
            target,
            num_steps=steps,
            strength=strength,
            guidance=2.0 if guidance is None else guidance,
            generator=g,
            dtype=dtype,
            controller=ctl,
            cross_replace_steps=cross,
            self_replace_steps=self_,
            blend_words=blend_words,
        ).image
    if method == "sdedit":
        return sdedit(
            model,
            img,
            target,
            strength=strength,
            num_steps=steps,
            guidance=7.5 if guidance is None else guidance,
            generator=g,
            dtype=dtype,
        ).image
    method = method.replace("-", "_")
    res = inversion.invert(
        method,
        model,
        img,
        source,
        num_steps=steps,
        guidance=guidance,
        dtype=dtype,
        generator=g,
        **(method_kw or {}),
    )
    ctl = make_controller(
        model, p2p, source, target, steps, cross=cross, self_=self_, blend_words=blend_words, weights=weights
    )
    out = inversion.edit(res, target, guidance=guidance, controller=ctl)
    with torch.no_grad():
        return model.decode(out.latents)
