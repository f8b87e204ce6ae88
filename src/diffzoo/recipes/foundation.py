"""Training recipes of the foundation zoo models: ``diffzoo train toy2d | digits-unet | digits-classifier``.

Each recipe is deterministic by ``--seed`` (per-step seeded batches, see :mod:`diffzoo.train.trainer`),
resumes from ``--out-dir``, evaluates the EMA model and, with ``--zoo-name``, ships it to the zoo with
its exact command line, seed, steps and measured metrics.

* ``toy2d``: :class:`~diffzoo.models.mlp.MLPDenoiser`, epsilon prediction on the DDPM ``linear``
  1000-step schedule, on a :mod:`diffzoo.data.toy2d` dataset; metrics SWD / MMD^2 to fresh data and the
  exact NLL (where the density exists) of 50-step DDIM samples.
* ``digits-unet``: :class:`~diffzoo.models.unet.DigitsUNet`, epsilon on ``linear``; labels are dropped
  to the null class 10 with probability 0.1 (classifier-free guidance training, Ho & Salimans 2022);
  metrics: conditional accuracy and FD-digits of 50-step DDIM samples with guidance ``--guidance``.
* ``digits-classifier``: :class:`~diffzoo.models.classifier.DigitClassifier`, cross-entropy with
  +-1 pixel shifts and light noise; metric: test-split accuracy.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.schedules import get_schedule
from diffzoo.data import digits, toy2d
from diffzoo.metrics import digits_accuracy, digits_fd, mmd, nll, sliced_wasserstein
from diffzoo.models.registry import build
from diffzoo.recipes.registry import add_train_args, final_loss, register_recipe, ship, train_config_from_args
from diffzoo.sampling import ddim, get_timesteps
from diffzoo.train.trainer import diffusion_loss, train

log = logging.getLogger(__name__)
Tensor = torch.Tensor

SCHEDULE = {"name": "linear", "kwargs": {}}
NULL_CLASS = 10


# -------------------------------------------------------------------------------------------------
# shared helpers
# -------------------------------------------------------------------------------------------------


@torch.no_grad()
def ddim_sample(den: Denoiser, x: Tensor, num_steps: int = 50, cond: Any = None) -> Tensor:
    """Deterministic DDIM (eta = 0) over ``num_steps`` uniform steps ending at ``schedule.t_end``."""
    return ddim(den, x, get_timesteps(den.schedule, num_steps), cond)


def _run(
    args: argparse.Namespace,
    arch: str,
    arch_config: dict[str, Any],
    loss_fn: Callable,
    batch_fn: Callable,
    **extra: Any,
) -> Any:
    cfg = train_config_from_args(args, arch=arch, arch_config=arch_config, **extra)
    torch.manual_seed(args.seed)  # initial weights
    model = build(arch, **arch_config)
    return train(model, loss_fn, batch_fn, cfg)


# -------------------------------------------------------------------------------------------------
# toy2d
# -------------------------------------------------------------------------------------------------


def _toy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="ring8", help="toy2d dataset name (default %(default)s)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--fourier-octaves", type=int, default=0, help="positional encoding of x (0 = off)")
    p.add_argument(
        "--time-at-input-only",
        action="store_true",
        help="add the time embedding only at the input (the first toy2d models), not in every block",
    )
    p.add_argument("--eval-samples", type=int, default=2000)
    add_train_args(p, steps=5000, batch_size=256, lr=1e-3, warmup_steps=200, ema_decay=0.999, ckpt_every=1000)


@torch.no_grad()
def evaluate_toy2d(
    model: torch.nn.Module, dataset: Any, n: int = 2000, seed: int = 0, steps: int = 50
) -> dict[str, float]:
    """SWD and MMD^2 of ``n`` DDIM samples to ``n`` fresh data points; exact NLL where it exists.

    For mixtures, the same metrics of the same sampler driven by the exact denoiser are reported too
    (``*_exact_denoiser``): the part of the error that is the sampler's, not the network's.
    """

    g = torch.Generator().manual_seed(seed)
    den = Denoiser(model.eval(), get_schedule(SCHEDULE["name"]), "epsilon")
    x = ddim_sample(den, torch.randn(n, dataset.dim, generator=g), steps).to(torch.float64)
    ref = dataset.sample(n, g)
    out = {
        "swd": float(sliced_wasserstein(x, ref, generator=g)),
        "mmd2": float(mmd(x, ref)),
        "swd_data_vs_data": float(sliced_wasserstein(dataset.sample(n, g), ref, generator=g)),
        "ddim_steps": steps,
        "eval_samples": n,
    }
    if hasattr(dataset, "mixture"):  # the same sampler on the exact denoiser: the floor of these metrics
        xe = ddim_sample(
            dataset.mixture.denoiser(den.schedule), torch.randn(n, dataset.dim, generator=g, dtype=torch.float64), steps
        )
        out["swd_exact_denoiser"] = float(sliced_wasserstein(xe, ref, generator=g))
        out["nll_exact_denoiser"] = float(nll(xe, dataset))
    if hasattr(dataset, "log_prob"):
        lp = dataset.log_prob(x)
        out["frac_in_support"] = float(torch.isfinite(lp).double().mean())
        if bool(torch.isfinite(lp).all()):
            out["nll"] = float(nll(x, dataset))
            out["nll_data"] = float(nll(ref, dataset))
    return out


@register_recipe("toy2d", "MLP epsilon-denoiser on a toy 2-D dataset (DDPM linear schedule)", _toy_args)
def toy2d_recipe(args: argparse.Namespace) -> dict[str, Any]:

    data = toy2d.get(args.dataset)
    schedule = get_schedule(SCHEDULE["name"])
    arch_config = {
        "dim": data.dim,
        "hidden": args.hidden,
        "depth": args.depth,
        "time_every_block": not args.time_at_input_only,
    }
    if args.fourier_octaves:
        arch_config["fourier_octaves"] = args.fourier_octaves

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> Tensor:
        return data.sample(bs, gen).to(torch.float32)

    def loss_fn(model: torch.nn.Module, x0: Tensor, gen: torch.Generator) -> Tensor:
        return diffusion_loss(model, x0, schedule, gen)

    res = _run(args, "mlp", arch_config, loss_fn, batch_fn, dataset=args.dataset)
    metrics = evaluate_toy2d(res.ema_model, data, args.eval_samples, args.seed)
    metrics["final_loss"] = final_loss(res)
    ship(
        args,
        res.ema_model,
        "mlp",
        arch_config,
        kind="diffusion",
        schedule=SCHEDULE,
        prediction_type="epsilon",
        metrics=metrics,
        dataset=args.dataset,
    )
    return metrics


# -------------------------------------------------------------------------------------------------
# digits classifier
# -------------------------------------------------------------------------------------------------


def _clf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ch", type=int, default=32)
    add_train_args(
        p, steps=2000, batch_size=128, lr=2e-3, warmup_steps=100, ema_decay=0.995, ckpt_every=500, weight_decay=1e-4
    )


def shift_augment(x: Tensor, gen: torch.Generator, max_shift: int = 1, noise: float = 0.05) -> Tensor:
    """Random integer translations by up to ``max_shift`` pixels (background -1 fills) plus Gaussian noise."""
    b = x.shape[0]
    pad = torch.nn.functional.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(2 * max_shift + 1, (b,), generator=gen)
    dy = torch.randint(2 * max_shift + 1, (b,), generator=gen)
    h, w = x.shape[-2:]
    out = torch.stack([pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    return (out + noise * torch.randn(out.shape, generator=gen)).clamp(-1, 1)


@torch.no_grad()
def classifier_accuracy(model: torch.nn.Module, split: str = "test") -> float:

    d = digits.load(split)
    return float((model.eval()(d.images).argmax(-1) == d.labels).float().mean())


@register_recipe("digits-classifier", "held-out CNN classifier of 8x8 digits (for FD-digits / accuracy)", _clf_args)
def digits_classifier_recipe(args: argparse.Namespace) -> dict[str, Any]:

    train_set = digits.load("train")
    arch_config = {"ch": args.ch}

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> tuple[Tensor, Tensor]:
        x, y = train_set.batch(bs, gen)
        return shift_augment(x, gen), y

    def loss_fn(model: torch.nn.Module, batch: tuple[Tensor, Tensor], gen: torch.Generator) -> Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    res = _run(args, "digit_classifier", arch_config, loss_fn, batch_fn)
    metrics = {
        "test_accuracy": classifier_accuracy(res.ema_model, "test"),
        "train_accuracy": classifier_accuracy(res.ema_model, "train"),
    }
    ship(args, res.ema_model, "digit_classifier", arch_config, kind="classifier", metrics=metrics)
    return metrics


# -------------------------------------------------------------------------------------------------
# digits UNet
# -------------------------------------------------------------------------------------------------


def _unet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ch", type=int, default=16, help="base channels (16: the shipped 0.16M model; 32: 0.65M)")
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--guidance", type=float, default=2.0, help="CFG scale for the evaluation samples")
    p.add_argument("--eval-per-class", type=int, default=50)
    add_train_args(p, steps=4500, batch_size=128, lr=2e-3, warmup_steps=200, ema_decay=0.999, ckpt_every=500)


def digits_denoiser(model: torch.nn.Module, guidance: float = 1.0) -> Denoiser:
    """The digits UNet as a core denoiser (``cond`` = labels), with CFG against the null class."""
    den = Denoiser(model, get_schedule(SCHEDULE["name"]), "epsilon")
    return den if guidance == 1.0 else cfg_denoiser(den, guidance, torch.tensor([NULL_CLASS]))


@torch.no_grad()
def evaluate_digits_unet(
    model: torch.nn.Module, guidance: float = 2.0, per_class: int = 50, seed: int = 0, steps: int = 50
) -> dict[str, float]:
    """Conditional accuracy and FD-digits of ``10 * per_class`` guided 50-step DDIM samples."""

    labels = torch.arange(10).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    x = ddim_sample(
        digits_denoiser(model.eval(), guidance), torch.randn(labels.shape[0], 1, 8, 8, generator=g), steps, labels
    ).clamp(-1, 1)
    return {
        "cond_accuracy": digits_accuracy(x, labels),
        "fd_digits": digits_fd(x),
        "guidance": guidance,
        "ddim_steps": steps,
        "eval_samples": int(labels.shape[0]),
    }


@register_recipe("digits-unet", "class-conditional epsilon-UNet on 8x8 digits (CFG null class 10)", _unet_args)
def digits_unet_recipe(args: argparse.Namespace) -> dict[str, Any]:

    train_set = digits.load("train")
    schedule = get_schedule(SCHEDULE["name"])
    arch_config = {"ch": args.ch, "blocks": args.blocks, "mults": [1, 2], "num_classes": 10}

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> tuple[Tensor, Tensor]:
        return train_set.batch(bs, gen)

    def loss_fn(model: torch.nn.Module, batch: tuple[Tensor, Tensor], gen: torch.Generator) -> Tensor:
        x, y = batch
        drop = torch.rand(y.shape[0], generator=gen) < args.label_dropout
        y = torch.where(drop.to(y.device), torch.full_like(y, NULL_CLASS), y)
        return diffusion_loss(model, x, schedule, gen, cond=y)

    res = _run(args, "digits_unet", arch_config, loss_fn, batch_fn, label_dropout=args.label_dropout)
    metrics = evaluate_digits_unet(res.ema_model, args.guidance, args.eval_per_class, args.seed)
    metrics["final_loss"] = final_loss(res)
    ship(
        args,
        res.ema_model,
        "digits_unet",
        arch_config,
        kind="diffusion",
        schedule=SCHEDULE,
        prediction_type="epsilon",
        metrics=metrics,
        null_class=NULL_CLASS,
    )
    return metrics
