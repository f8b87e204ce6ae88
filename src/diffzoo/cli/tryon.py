"""``diffzoo tryon``: IDM-VTON-style virtual try-on of a garment image on a person image (a small analogue).

Example::

    diffzoo tryon --person P.png --garment G.png --out out.png [--mask M.png] [--model tryon-full]

The person is a 24x24 image; the region to replace is ``--mask`` (white = replace) or, without it, the
person's transparent pixels. The garment is a 16x16 image. Outside the mask the output equals the person
exactly. ``--caption`` gives the detailed garment caption that ``full`` models read
(e.g. "a red and white horizontally striped shirt with 3 stripes").
"""

from __future__ import annotations

import argparse

from diffzoo.zoo.conditioning import DEFAULT_TRYON, tryon_files


def _run(args: argparse.Namespace) -> int:
    info = tryon_files(
        args.person,
        args.garment,
        args.out,
        mask=args.mask,
        model=args.model,
        caption=args.caption,
        seed=args.seed,
        num_steps=args.steps,
    )
    print(f"{info['model']} ({info['mode']}): filled {info['masked_pixels']} masked pixels\nwrote {info['out']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tryon",
        help="virtual try-on of a garment on a person (IDM-VTON-style analogue)",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--person", required=True, help="24x24 person image (PNG; transparent pixels = mask)")
    p.add_argument("--garment", required=True, help="16x16 garment image")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--mask", default=None, help="mask image (white = region to replace)")
    p.add_argument("--model", default=DEFAULT_TRYON, help="zoo try-on model (tryon-concat|adapter|reference|full)")
    p.add_argument("--caption", default=None, help="detailed garment caption (read by 'full' models)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)
