"""``diffzoo invert`` and ``diffzoo edit``: image file in, PNG out.

Models (``--model``):

* a zoo name with a TinySD checkpoint (default ``tinysd``);
* ``tiny-random``: a tiny randomly initialised SD-shaped model built locally (smoke tests, exactness);
* a local directory holding a diffusers ``StableDiffusionPipeline`` (``save_pretrained`` layout, e.g.
  Stable Diffusion 1.x weights already on disk; nothing is downloaded).

Methods (``--method``): any name of :data:`diffzoo.editing.EDIT_METHODS` (``ddim``, ``edict``, ``ddpm``,
``null-text``, ``direct``, ``infedit``, ``sdedit``). ``diffzoo edit`` is
:func:`diffzoo.editing.edit_image`, ``diffzoo invert`` is :func:`diffzoo.editing.reconstruct_image`;
options left out take the method's defaults from the registry.

``diffzoo edit --cache faster-diffusion|deepcache [--cache-keys uniform:K]`` runs the UNet through a
feature cache (:func:`diffzoo.accel.cache.cache_latent_model`) over the ``--steps`` grid; the edit then goes
without prompt-to-prompt attention control (``--p2p none``), which counts attention calls per UNet call.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch

from diffzoo.accel.cache import CACHE_METHODS, cache_latent_model
from diffzoo.editing import EDIT_METHODS, P2P_MODES, edit_image, reconstruct_image
from diffzoo.inversion.common import grid
from diffzoo.io import check_output_path, read_image, save_image
from diffzoo.zoo.latent import load_latent_model

log = logging.getLogger(__name__)


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def _given(**options: Any) -> dict[str, Any]:
    """The options set on the command line (the others keep the API's and the method's defaults)."""
    return {k: v for k, v in options.items() if v is not None}


def _methods_help() -> str:
    return ", ".join(f"{name} ({m.default_guidance:g})" for name, m in EDIT_METHODS.items())


# -------------------------------------------------------------------------------------------------
# Commands
# -------------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tinysd", help="zoo name, 'tiny-random', or a local diffusers pipeline folder")
    p.add_argument("--image", required=True, help="input image file (RGB; the model's size)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--steps", type=int, default=None, help="number of sampling / inversion steps")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=None)


def cmd_invert(args: argparse.Namespace) -> int:
    """Invert an image with ``--method`` and write its reconstruction; prints the round-trip error."""
    dt = _dtype(args.dtype)
    check_output_path(args.out, "--out", suffixes=(".png",))
    img = read_image(args.image, arg="--image").to(dt)  # bad files fail before any model loads
    model = load_latent_model(args.model, dt)
    res = reconstruct_image(
        args.method,
        model,
        img,
        args.prompt,
        dtype=dt,
        **_given(num_steps=args.steps, invert_guidance=args.guidance, seed=args.seed),
    )
    save_image(res.image, args.out)
    print(f"{res.method}: reconstruction max|z - z0| = {res.reconstruction_error:.3e} (latent), wrote {args.out}")
    return 0


def _parse_weights(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    out = {}
    for it in items:
        word, _, val = it.partition("=")
        if not word or not val:
            raise ValueError(f"--reweight: expected WORD=SCALE, got {it!r}")
        out[word] = float(val)
    return out


def _parse_blend(text: str | None) -> list[list[str]] | None:
    if not text:
        return None
    parts = [w.strip() for w in text.split(",")]
    if len(parts) != 2:
        raise ValueError("--blend: expected 'SOURCE_WORDS,TARGET_WORDS'")
    return [p.split() for p in parts]


def cmd_edit(args: argparse.Namespace) -> int:
    dt = _dtype(args.dtype)
    check_output_path(args.out, "--out", suffixes=(".png",))
    img = read_image(args.image, arg="--image").to(dt)  # bad files fail before any model loads
    model = load_latent_model(args.model, dt)
    p2p = args.p2p
    if args.cache is None and args.cache_keys is not None:
        raise ValueError("cache_keys: key steps need a cache method (--cache faster-diffusion|deepcache)")
    if args.cache is not None:  # attention control cannot run under a cache: the edit pass goes without it
        model = cache_latent_model(model, grid(model, args.steps or 50), args.cache, args.cache_keys)
        p2p = "none" if p2p is None else p2p
    out = edit_image(
        args.method,
        model,
        img,
        args.source_prompt,
        args.target_prompt,
        dtype=dt,
        **_given(
            num_steps=args.steps,
            guidance=args.guidance,
            invert_guidance=args.invert_guidance,
            strength=args.strength,
            p2p=p2p,
            cross_steps=args.cross_steps,
            self_steps=args.self_steps,
            blend_words=_parse_blend(args.blend),
            weights=_parse_weights(args.reweight),
            seed=args.seed,
        ),
    )
    save_image(out.image, args.out)
    cached = "" if args.cache is None else f" ({args.cache} cache: {model.unet.cache.full_calls} full UNet calls)"
    print(f"{out.method}: {args.source_prompt!r} -> {args.target_prompt!r}{cached}, wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("invert", help="invert an image and write its reconstruction (PNG)")
    _common(p)
    p.add_argument("--method", default="edict", help=f"edit method: {', '.join(EDIT_METHODS)}")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance of the inversion (default: the method's own)",
    )
    p.add_argument("--prompt", required=True, help="caption of the input image")
    p.set_defaults(func=cmd_invert)

    e = sub.add_parser("edit", help="edit an image from a source to a target prompt (PNG)")
    _common(e)
    e.add_argument("--method", default="infedit", help=f"edit method (default guidance): {_methods_help()}")
    e.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance of the edit (target branch; default: the method's own)",
    )
    e.add_argument(
        "--invert-guidance",
        type=float,
        default=None,
        help="guidance of the inversion (inversion methods; default: the method's own)",
    )
    e.add_argument("--source-prompt", required=True)
    e.add_argument("--target-prompt", required=True)
    e.add_argument("--strength", type=float, default=None, help="start strength in [0, 1] (infedit, sdedit, edict)")
    e.add_argument("--p2p", choices=P2P_MODES, default=None, help="prompt-to-prompt control of the edit pass")
    e.add_argument("--cross-steps", type=float, default=None, help="fraction of steps with cross-attention injection")
    e.add_argument("--self-steps", type=float, default=None, help="fraction of steps with self-attention injection")
    e.add_argument("--blend", default=None, help="local blend words: 'SOURCE_WORDS,TARGET_WORDS'")
    e.add_argument("--reweight", nargs="*", default=None, help="P2P re-weighting: WORD=SCALE ...")
    e.add_argument(
        "--cache",
        default=None,
        choices=CACHE_METHODS,
        help="feature cache of the UNet (Faster Diffusion / DeepCache) over the --steps grid; implies --p2p none",
    )
    e.add_argument("--cache-keys", default=None, help="key steps of --cache: 'paper', 'uniform:K', 'all'")
    e.set_defaults(func=cmd_edit)
