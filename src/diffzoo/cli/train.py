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


def add_recipe_commands(p: argparse.ArgumentParser, dest: str, metavar: str, prefix: str = "") -> None:
    """One subcommand per registered recipe whose name starts with ``prefix`` (named without it); each
    runs the recipe and prints its metrics. ``diffzoo train`` takes them all, ``diffzoo distill`` the
    ``distill-*`` ones."""
    sub = p.add_subparsers(dest=dest, required=True, metavar=metavar)
    for name, r in sorted(recipes().items()):
        if name.startswith(prefix):
            rp = sub.add_parser(name[len(prefix) :], help=r.help, description=r.help)
            r.add_args(rp)
            rp.set_defaults(func=_run, recipe_fn=r.run)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model with a registered recipe",
        description="Train a model with a registered recipe (see `diffzoo train RECIPE -h`).",
    )
    add_recipe_commands(p, "recipe", "RECIPE")
