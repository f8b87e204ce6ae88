"""The training-recipe registry behind ``diffzoo train RECIPE``, and the argument dialect every recipe shares.

A recipe is a function ``recipe(args: argparse.Namespace) -> dict`` that trains one zoo model with
diffzoo's trainer and returns its final metrics; it registers itself with :func:`register_recipe` and
declares its options with ``add_args(parser)``, starting from :func:`add_train_args` (``--steps``,
``--batch-size``, ``--seed``, ``--out-dir``, ``--zoo-name``, ...). A recipe writes into the package's zoo
only when ``--zoo-name`` is given (:func:`ship`), recording the exact command line (:func:`command_line`).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffzoo import zoo
from diffzoo.core.errors import check_choice
from diffzoo.train.trainer import TrainConfig

log = logging.getLogger(__name__)

#: Old spellings of the shared options, still accepted (hidden from ``--help``) so that commands recorded
#: before the options were unified parse to the same namespace: alias -> (canonical option, type).
ALIASES: dict[str, tuple[str, type | None]] = {
    "--out": ("--out-dir", None),
    "--zoo": ("--zoo-name", None),
    "--name": ("--zoo-name", None),
    "--ema": ("--ema-decay", float),
    "--warmup": ("--warmup-steps", int),
}


@dataclass
class Recipe:
    name: str
    run: Callable[[argparse.Namespace], dict]
    add_args: Callable[[argparse.ArgumentParser], None]
    help: str


_RECIPES: dict[str, Recipe] = {}


def register_recipe(
    name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None
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
        argv = argv[argv.index("train") :]
    return "diffzoo " + " ".join(shlex.quote(a) for a in argv)


def get_recipe(name: str) -> Recipe:
    all_r = recipes()
    check_choice(name, all_r, "recipe")
    return all_r[name]


# -------------------------------------------------------------------------------------------------
# Shared options of every recipe: the trainer's hyper-parameters, the run folder and the zoo name
# -------------------------------------------------------------------------------------------------


def add_train_args(
    parser: argparse.ArgumentParser,
    *,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 2e-4,
    weight_decay: float = 0.0,
    warmup_steps: int = 100,
    ema_decay: float = 0.999,
    grad_clip: float = 1.0,
    seed: int = 0,
    ckpt_every: int = 500,
    log_every: int = 100,
    out_dir: str | None = None,
    threads: int | None = None,
) -> None:
    """Add the options every recipe shares (with recipe-specific defaults): the
    :class:`~diffzoo.train.trainer.TrainConfig` hyper-parameters, ``--out-dir``, ``--threads`` and
    ``--zoo-name``. The old spellings in :data:`ALIASES` are accepted too (not shown in ``--help``)."""
    g = parser.add_argument_group("training (shared by every recipe)")
    g.add_argument("--steps", type=int, default=steps, help="optimisation steps (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=batch_size, help="global batch size (default %(default)s)")
    g.add_argument("--lr", type=float, default=lr, help="peak AdamW learning rate (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=weight_decay, help="AdamW weight decay (default %(default)s)")
    g.add_argument(
        "--warmup-steps",
        type=int,
        default=warmup_steps,
        help="linear learning-rate warm-up steps (default %(default)s)",
    )
    g.add_argument("--ema-decay", type=float, default=ema_decay, help="EMA decay (default %(default)s)")
    g.add_argument("--grad-clip", type=float, default=grad_clip, help="max grad norm, 0 = off (default %(default)s)")
    g.add_argument("--seed", type=int, default=seed, help="seed of the initial weights and of every batch")
    g.add_argument(
        "--out-dir", default=out_dir, help="checkpoint folder; an existing one is resumed (default %(default)s)"
    )
    g.add_argument("--ckpt-every", type=int, default=ckpt_every, help="checkpoint period (default %(default)s)")
    g.add_argument("--log-every", type=int, default=log_every, help="loss logging period (default %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoint-<step>.safetensors files")
    g.add_argument(
        "--threads",
        type=int,
        default=threads,
        help="torch CPU threads (default %(default)s: leave as is)"
        if threads is None
        else "torch CPU threads (default %(default)s)",
    )
    g.add_argument(
        "--zoo-name",
        default=None,
        help="ship the EMA model to the package's zoo under this name (default: write nothing there)",
    )
    for alias, (canonical, typ) in ALIASES.items():
        dest = canonical[2:].replace("-", "_")
        kw: dict[str, Any] = {} if typ is None else {"type": typ}
        g.add_argument(alias, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)


def check_train_args(args: argparse.Namespace) -> None:
    """Refuse bad shared options before any work (a bad ``--zoo-name`` must not surface after training)."""
    name = getattr(args, "zoo_name", None)
    if name and (Path(name).name != name or name.startswith(".") or name.endswith(".safetensors")):
        raise ValueError(f"zoo-name: expected a plain name such as 'my-model' (no folder, no suffix), got {name!r}")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 0:
        raise ValueError(f"threads: expected a positive number of threads (0 = leave as is), got {threads}")


def train_config_from_args(args: argparse.Namespace, **extra: object) -> TrainConfig:
    """A :class:`~diffzoo.train.trainer.TrainConfig` from the options of :func:`add_train_args`
    (``extra``: recipe options recorded in the checkpoints); applies ``--threads``."""
    check_train_args(args)
    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        ema_decay=args.ema_decay,
        grad_clip=args.grad_clip,
        seed=args.seed,
        out_dir=args.out_dir,
        ckpt_every=args.ckpt_every,
        log_every=args.log_every,
        progress=not args.no_progress,
        keep_checkpoints=bool(getattr(args, "keep_checkpoints", False)),
        extra=dict(extra),
    )


def ship(
    args: argparse.Namespace,
    model: torch.nn.Module,
    arch: str,
    arch_config: dict[str, Any],
    *,
    kind: str,
    steps: int | None = None,
    train_command: str | None = None,
    sample_shape: tuple[int, ...] | None = None,
    **info: Any,
) -> Path | None:
    """Write ``model`` into the package's zoo as ``--zoo-name`` -- only when that option is given (and
    only on the main process of a multi-GPU run); returns the weights' path, or ``None`` when nothing
    was written.

    The JSON records ``kind``, ``sample_shape`` (default: the network's own), the exact command line
    (:func:`command_line`, or ``train_command``), ``--seed``, ``steps`` (default ``--steps``) and ``info``
    (``schedule``, ``prediction_type``, ``metrics``, ...; see :func:`diffzoo.zoo.save`).
    """
    from accelerate import PartialState

    name = getattr(args, "zoo_name", None)
    if not name or not PartialState().is_main_process:
        return None
    path = zoo.save(
        name,
        model,
        arch,
        arch_config,
        kind=kind,
        sample_shape=sample_shape,
        train_command=command_line() if train_command is None else train_command,
        seed=args.seed,
        steps=args.steps if steps is None else int(steps),
        **info,
    )
    log.info("shipped %s to the zoo", path)
    return path


def final_loss(res: Any, window: int = 100) -> float:
    """Mean training loss of the last ``window`` steps of a :func:`diffzoo.train.train` result (every
    recipe's ``final_loss`` metric)."""
    tail = res.losses[-window:]
    return sum(tail) / max(1, len(tail))
