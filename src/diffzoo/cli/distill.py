"""``diffzoo distill METHOD --teacher ZOO_NAME [options]``: train a distilled student from a zoo teacher.

``METHOD`` is one of the ``distill-*`` training recipes of :mod:`diffzoo.recipes.distill` (``boot``,
``slimflow``, ``mmd``, ...); ``diffzoo distill boot ...`` is the same run as ``diffzoo train distill-boot
...`` (same options: the shared training options, ``--out-dir`` to resume, ``--zoo-name`` to ship). Example::

    diffzoo distill boot --teacher digits-unet --steps 900 --out-dir runs/boot --zoo-name boot-digits
"""

from __future__ import annotations

import argparse
import json

from diffzoo.recipes import recipes

PREFIX = "distill-"


def _run(args: argparse.Namespace) -> int:
    metrics = args.recipe_fn(args)
    print(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill",
        help="distil a few-step / one-step student from a zoo teacher",
        description="Distil a student from a zoo teacher (the distill-* training recipes).",
    )
    sub = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name, r in sorted(recipes().items()):
        if name.startswith(PREFIX):
            rp = sub.add_parser(name[len(PREFIX) :], help=r.help, description=r.help)
            r.add_args(rp)
            rp.set_defaults(func=_run, recipe_fn=r.run)
