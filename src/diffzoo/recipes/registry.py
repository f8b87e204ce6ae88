"""The training-recipe registry behind ``diffzoo train RECIPE``, and the argument dialect every recipe shares.

A recipe is a function ``recipe(args: argparse.Namespace) -> dict`` that trains one zoo model with
diffzoo's trainer and returns its final metrics; it registers itself with :func:`register_recipe` and
declares its options with ``add_args(parser)``, starting from :func:`add_train_args` (``--steps``,
``--batch-size``, ``--seed``, ``--out-dir``, ``--zoo-name``, ...). A recipe writes into the package's zoo
only when ``--zoo-name`` is given (:func:`ship`), recording the exact command line (:func:`command_line`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffzoo.core.errors import check_choice
from diffzoo.train.trainer import TrainConfig



@dataclass
class Recipe:
    name: str
    run: Callable[[argparse.Namespace], dict]
    add_args: Callable[[argparse.ArgumentParser], None]
    help: str


_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None
                    ) -> Callable[[Callable[[argparse.Namespace], dict]], Callable[[argparse.Namespace], dict]]:
    def deco(fn: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
        _RECIPES[name] = Recipe(name, fn, add_args or (lambda p: None), help)
        return fn
    return deco


def recipes() -> dict[str, Recipe]:
    """Every registered recipe (the modules of :mod:`diffzoo.recipes` register theirs on import)."""
    return dict(_RECIPES)


def command_line() -> str:
    """The ``diffzoo train ...`` command of this process, shell-quoted (recorded in zoo JSONs)."""
    argv = sys.argv[1:]
    if "train" in argv:
        argv = argv[argv.index("train"):]
    return "diffzoo " + " ".join(shlex.quote(a) for a in argv)


def get_recipe(name: str) -> Recipe:
    all_r = recipes()
    check_choice(name, all_r, "recipe")
    return all_r[name]


# -------------------------------------------------------------------------------------------------
# Shared options of every recipe: the trainer's hyper-parameters
# -------------------------------------------------------------------------------------------------

def add_train_args(parser: argparse.ArgumentParser, *, steps: int = 1000, batch_size: int = 128, lr: float = 2e-4,
                   weight_decay: float = 0.0, warmup_steps: int = 100, ema_decay: float = 0.999,
                   grad_clip: float = 1.0, seed: int = 0, ckpt_every: int = 500, log_every: int = 100) -> None:
    """Add the :class:`~diffzoo.train.trainer.TrainConfig` options (with recipe-specific defaults)."""
    g = parser.add_argument_group("training")
    g.add_argument("--steps", type=int, default=steps, help="optimisation steps (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=batch_size, help="global batch size (default %(default)s)")
    g.add_argument("--lr", type=float, default=lr, help="peak AdamW learning rate (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=weight_decay)
    g.add_argument("--warmup-steps", type=int, default=warmup_steps)
    g.add_argument("--ema-decay", type=float, default=ema_decay)
    g.add_argument("--grad-clip", type=float, default=grad_clip, help="max grad norm (0 = off)")
    g.add_argument("--seed", type=int, default=seed)
    g.add_argument("--out-dir", default=None, help="checkpoint folder; an existing one is resumed")
    g.add_argument("--ckpt-every", type=int, default=ckpt_every)
    g.add_argument("--log-every", type=int, default=log_every)
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoint-<step>.safetensors files")
    g.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    g.add_argument("--zoo-name", default=None, help="also ship the EMA model to the zoo under this name")


def train_config_from_args(args: argparse.Namespace, **extra: object):
    """A :class:`~diffzoo.train.trainer.TrainConfig` from the options of :func:`add_train_args`."""


    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       warmup_steps=args.warmup_steps, ema_decay=args.ema_decay, grad_clip=args.grad_clip,
                       seed=args.seed, out_dir=args.out_dir, ckpt_every=args.ckpt_every, log_every=args.log_every,
                       progress=not args.no_progress,
                       keep_checkpoints=bool(getattr(args, "keep_checkpoints", False)), extra=dict(extra))
