"""``diffzoo attack IMAGE --method jpeg|blur|noise|resize|crop|rotation|brightness|vae|regen|guided|edit
--strength S --out OUT``: remove a watermark by post-processing or with TinySD.

Classical methods take their own strength (JPEG quality, blur sigma, ...); ``regen`` / ``guided`` take the
noise level ``t*`` in [0, 1] (``--prompt``: empty by default); ``guided`` differentiates a zoo watermark
decoder (``--against learned|wouaf|safe-sd``, ``--model`` another zoo name); ``edit`` edits with ``--prompt``
-> ``--target`` (default: the same prompt). Images larger than 32x32 are processed as 32x32 tiles.
"""

from __future__ import annotations

import argparse

import torch

from diffzoo.io import read_image, save_image
from diffzoo.provenance import ATTACKS, classical, edit_attack, guided_regenerate, regenerate, vae_roundtrip
from diffzoo.zoo.latent import load_tinysd
from diffzoo.zoo.provenance import ZOO_WATERMARKS, load_zoo_watermark

GENERATIVE = ("vae", "regen", "guided", "edit")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    img = read_image(args.image, arg="image", channels=3)
    g = torch.Generator().manual_seed(args.seed)
    if args.method in ATTACKS:
        if args.strength is None:
            raise ValueError(f"strength: {args.method} needs --strength (e.g. JPEG quality 50, blur sigma 1)")
        out = classical(args.method, img, args.strength, g)
    else:
        model = load_tinysd()
        prompt = args.prompt or ""
        if args.method == "vae":
            out = vae_roundtrip(model, img)
        elif args.method == "regen":
            out = regenerate(
                model, img, 0.3 if args.strength is None else args.strength, prompt, num_steps=args.steps, generator=g
            )
        elif args.method == "guided":
            wm = load_zoo_watermark(args.against, args.model)
            out = guided_regenerate(
                model,
                img,
                0.3 if args.strength is None else args.strength,
                wm.differentiable_decoder,
                wm.fixed_bits,
                prompt,
                num_steps=args.steps,
                generator=g,
            )
        else:
            if not args.prompt:
                raise ValueError("prompt: the edit attack needs the image's caption (--prompt)")
            out = edit_attack(
                model, img, [prompt], None if args.target is None else [args.target], num_steps=args.steps
            )
    save_image(out[0], args.out)
    print(f"{args.method} attack written to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="attack a watermarked image (classical post-processing or diffusion)")
    p.add_argument("image", help="image file (PNG/JPEG)")
    p.add_argument("--method", choices=(*ATTACKS, *GENERATIVE), required=True)
    p.add_argument("--strength", type=float, default=None, help="attack strength (regen/guided: t* in [0, 1])")
    p.add_argument("--prompt", default=None, help="regen/guided/edit: the caption (default: empty prompt)")
    p.add_argument("--target", default=None, help="edit: target prompt (default: the same caption)")
    p.add_argument("--against", choices=tuple(ZOO_WATERMARKS), default="learned", help="guided: decoder to fool")
    p.add_argument("--model", default=None, help="guided: zoo name of that decoder (default: the method's)")
    p.add_argument("--steps", type=int, default=50, help="diffusion steps of the full grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output image path")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)
