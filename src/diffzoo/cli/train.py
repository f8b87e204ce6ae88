"""``diffzoo train RECIPE [options]``: run a registered training recipe and print its final metrics.

Every recipe takes the shared options of :func:`diffzoo.recipes.add_train_args` (``--steps``,
``--batch-size``, ``--lr``, ..., ``--out-dir``, ``--zoo-name``) and writes into the package's zoo only
with ``--zoo-name NAME``, recording the exact command line in the model's JSON (``train_command``).
Multi-GPU: ``accelerate launch -m diffzoo.cli train RECIPE ...``.
"""

from __future__ import annotations

import argparse
import json

from diffzoo.recipes import recipes


def _run(args: argparse.Namespace) -> int:
    metrics = args.recipe_fn(args)
    print(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model with a registered recipe",
        description="Train a model with a registered recipe (see `diffzoo train RECIPE -h`).",
    )
    sub = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    for name, r in sorted(recipes().items()):
        rp = sub.add_parser(name, help=r.help, description=r.help)
        r.add_args(rp)
        rp.set_defaults(func=_run, recipe_fn=r.run)
