"""``diffzoo protect IMAGE --method sds-|sdst-|advdm|photoguard|mist --eps 16/255``: write a protected image.

Diff-Protect (Xue et al., ICLR 2024, arXiv 2311.12832) on the zoo's TinySD (32x32 RGB images): PGD
with sign steps inside an L-infinity ball of radius ``--eps`` (a fraction like ``16/255`` or a number
in (0, 1]); see :mod:`diffzoo.forensics.protect`. Prints the budget used and the cost.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import torch

from diffzoo.forensics.protect import DEFAULT_STEPS, PROTECT_METHODS, latent_change, protect
from diffzoo.io import read_image, save_image
from diffzoo.zoo.latent import load_latent_model

ALIASES = {"advdm": "advdm+", "sds": "sds-", "sdst": "sdst-"}


def parse_budget(text: str, arg: str = "eps") -> float:
    """``"16/255"`` or ``"0.0627"`` -> a float in (0, 1]; ``ValueError`` naming ``arg`` otherwise."""
    try:
        v = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{arg}: expected a number or a fraction such as 16/255, got {text!r}") from None
    if not 0 < v <= 1:
        raise ValueError(f"{arg}: expected a budget in (0, 1] (pixel units), got {text}")
    return v


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    eps = parse_budget(args.eps)
    step = parse_budget(args.step_size, "step_size")
    method = ALIASES.get(args.method, args.method)
    model = load_latent_model(args.model)
    img = read_image(args.image, arg="image", channels=3)
    model.check_image(img, "image")
    res = protect(
        model,
        img,
        method,
        eps=eps,
        step_size=step,
        steps=args.steps,
        prompt=args.prompt,
        generator=torch.Generator().manual_seed(args.seed),
    )
    out = Path(args.out or Path(args.image).with_name(Path(args.image).stem + f"_protected_{method}.png"))
    save_image(res.image, out)
    ch = latent_change(model, img, res.image)
    print(
        f"{out}: method {method}, budget {eps:.4f} (= {eps * 255:.1f}/255), used L-inf {res.linf:.4f} "
        f"(= {res.linf * 255:.1f}/255), {args.steps} steps in {res.seconds:.1f} s; "
        f"|dz|/|z| = {ch['dz_rel']:.3f} vs |dx|/|x| = {ch['dx_rel']:.3f}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protect", help="protect an image against diffusion mimicry (Diff-Protect)")
    p.add_argument("image", help="image file (32x32 RGB for the zoo's TinySD)")
    p.add_argument("--method", choices=sorted(set(PROTECT_METHODS) | set(ALIASES)), default="sds-")
    p.add_argument("--eps", default="16/255", help="L-inf budget in (0, 1], e.g. 16/255 (default %(default)s)")
    p.add_argument("--step-size", default="1/255", help="PGD step (default %(default)s)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--prompt", default="", help="prompt of the semantic loss (default: empty)")
    p.add_argument("--model", default="tinysd", help="latent model: zoo name, tiny-random or a diffusers folder")
    p.add_argument("--out", default=None, help="output PNG (default: IMAGE_protected_METHOD.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)
