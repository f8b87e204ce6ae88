"""``diffzoo distill METHOD --teacher ZOO_NAME [options]``: train a distilled student from a zoo teacher.

``METHOD`` is one of the ``distill-*`` training recipes of :mod:`diffzoo.recipes.distill` (``boot``,
``slimflow``, ``mmd``, ...); ``diffzoo distill boot ...`` is the same run as ``diffzoo train distill-boot
...`` (same options: the shared training options, ``--out-dir`` to resume, ``--zoo-name`` to ship). Example::

    diffzoo distill boot --teacher digits-unet --steps 900 --out-dir runs/boot --zoo-name boot-digits
"""

from __future__ import annotations

import argparse

from diffzoo.cli.train import add_recipe_commands

PREFIX = "distill-"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill",
        help="distil a few-step / one-step student from a zoo teacher",
        description="Distil a student from a zoo teacher (the distill-* training recipes).",
    )
    add_recipe_commands(p, "method", "METHOD", PREFIX)
