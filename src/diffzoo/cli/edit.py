"""``diffzoo invert`` and ``diffzoo edit``: image file in, PNG out.

Models (``--model``):

* a zoo name with a TinySD checkpoint (default ``tinysd``);
* ``tiny-random``: a tiny randomly initialised SD-shaped model built locally (smoke tests, exactness);
* a local directory holding a diffusers ``StableDiffusionPipeline`` (``save_pretrained`` layout, e.g.
  Stable Diffusion 1.x weights already on disk; nothing is downloaded).

Methods: ``diffzoo edit --method`` takes ``infedit`` (DDCM virtual inversion), ``sdedit`` (anchored
initialisation) or any inversion method of :mod:`diffzoo.inversion` (``ddim``, ``edict``, ``ddpm``,
``null-text``, ``direct``...), whose edit pass runs under prompt-to-prompt control (``--p2p``).
"""

from __future__ import annotations

import argparse
import logging

import torch

from diffzoo import inversion
from diffzoo.editing.api import P2P_MODES, run_edit
from diffzoo.io import read_image, save_image
from diffzoo.zoo.latent import load_latent_model

log = logging.getLogger(__name__)


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


# -------------------------------------------------------------------------------------------------
# Commands
# -------------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="tinysd", help="zoo name, 'tiny-random', or a local diffusers pipeline folder"
    )
    p.add_argument("--image", required=True, help="input image file (RGB; the model's size)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--steps", type=int, default=50, help="number of sampling / inversion steps")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (>= 1; default: the method's own)",
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)


def cmd_invert(args: argparse.Namespace) -> int:
    """Invert an image with ``--method`` and write its reconstruction; prints the round-trip error."""
    args.method = args.method.replace("-", "_")
    dt = _dtype(args.dtype)
    model = load_latent_model(args.model, dt)
    img = read_image(args.image).to(dt)
    with torch.no_grad():
        z0 = model.encode_image(img)
    res = inversion.invert(
        args.method,
        model,
        img,
        args.prompt,
        num_steps=args.steps,
        guidance=args.guidance,
        dtype=dt,
        generator=_generator(args.seed),
    )
    with torch.no_grad():
        z = inversion.reconstruct(res)
        if z.shape[1] == 3:  # an image came back
            z = model.encode_image(z)
        rec = model.decode(z)
    save_image(rec, args.out)
    err = float((z - z0).abs().max())
    print(f"{args.method}: reconstruction max|z - z0| = {err:.3e} (latent), wrote {args.out}")
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


def cmd_edit(args: argparse.Namespace) -> int:
    dt = _dtype(args.dtype)
    model = load_latent_model(args.model, dt)
    img = read_image(args.image).to(dt)
    blend = None
    if args.blend:
        parts = [w.strip() for w in args.blend.split(",")]
        if len(parts) != 2:
            raise ValueError("--blend: expected 'SOURCE_WORDS,TARGET_WORDS'")
        blend = [p.split() for p in parts]
    out = run_edit(
        model,
        img,
        args.method,
        args.source_prompt,
        args.target_prompt,
        steps=args.steps,
        guidance=args.guidance,
        strength=args.strength,
        p2p=args.p2p,
        cross=args.cross_steps,
        self_=args.self_steps,
        blend_words=blend,
        weights=_parse_weights(args.reweight),
        seed=args.seed,
        dtype=dt,
    )
    save_image(out, args.out)
    print(f"{args.method}: {args.source_prompt!r} -> {args.target_prompt!r}, wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("invert", help="invert an image and write its reconstruction (PNG)")
    _common(p)
    p.add_argument(
        "--method", default="edict", help="inversion method (ddim, edict, ddpm, null-text, direct, ...)"
    )
    p.add_argument("--prompt", required=True, help="caption of the input image")
    p.set_defaults(func=cmd_invert)

    e = sub.add_parser("edit", help="edit an image from a source to a target prompt (PNG)")
    _common(e)
    e.add_argument(
        "--method",
        default="infedit",
        help="infedit | sdedit | an inversion method (ddim, edict, ddpm, null-text, direct, ...)",
    )
    e.add_argument("--source-prompt", required=True)
    e.add_argument("--target-prompt", required=True)
    e.add_argument("--strength", type=float, default=0.7, help="start strength in [0, 1] (infedit, sdedit)")
    e.add_argument(
        "--p2p", choices=P2P_MODES, default="refine", help="prompt-to-prompt control of the edit pass"
    )
    e.add_argument(
        "--cross-steps", type=float, default=0.8, help="fraction of steps with cross-attention injection"
    )
    e.add_argument(
        "--self-steps", type=float, default=0.4, help="fraction of steps with self-attention injection"
    )
    e.add_argument("--blend", default=None, help="local blend words: 'SOURCE_WORDS,TARGET_WORDS'")
    e.add_argument("--reweight", nargs="*", default=None, help="P2P re-weighting: WORD=SCALE ...")
    e.set_defaults(func=cmd_edit)
