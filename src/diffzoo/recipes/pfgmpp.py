"""Training recipe ``diffzoo train pfgmpp-digits``: PFGM++ models of 8x8 digits at augmentation dimension ``--D``.

Xu et al., *PFGM++: Unlocking the Potential of Physics-Inspired Generative Models*, ICML 2023, arXiv
2302.04265. The network is the EDM-preconditioned digits UNet (``edm_digits_unet``, unconditional); the
loss is EDM's with PFGM++'s kernel (:func:`diffzoo.accel.pfgmpp.pfgmpp_loss`); ``--D 1e6`` is the
diffusion (EDM) limit. The evaluation samples with EDM's Heun sampler (18 steps, 35 NFE) from the PFGM++
prior and reports FD-digits. The zoo entry has kind ``pfgmpp`` and records ``augment_dim`` (D).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from diffzoo.accel.pfgmpp import check_D, pfgmpp_loss, pfgmpp_sample
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.schedules import get_schedule
from diffzoo.data import digits
from diffzoo.metrics import digits_fd
from diffzoo.models.registry import build
from diffzoo.recipes.registry import add_train_args, final_loss, register_recipe, ship, train_config_from_args
from diffzoo.train.trainer import train

Tensor = torch.Tensor
SCHEDULE = {"name": "edm", "kwargs": {}}
SHAPE = (1, 8, 8)


def pfgmpp_denoiser(model: torch.nn.Module) -> Denoiser:
    """An ``edm_digits_unet`` (x0 prediction, ``t = sigma``) as a core denoiser on EDM's schedule."""
    return Denoiser(model, get_schedule(SCHEDULE["name"], **SCHEDULE["kwargs"]), "sample")


@torch.no_grad()
def evaluate_pfgmpp(model: torch.nn.Module, D: float, n: int = 500, seed: int = 0, steps: int = 18) -> dict[str, Any]:
    """FD-digits of ``n`` Heun samples (``2 steps - 1`` NFE) from the PFGM++ prior of ``D``."""
    g = torch.Generator().manual_seed(seed)
    x = pfgmpp_sample(pfgmpp_denoiser(model.eval()), (n, *SHAPE), D, steps, generator=g)
    return {"fd_digits": digits_fd(x.clamp(-1, 1)), "heun_steps": steps, "nfe": 2 * steps - 1, "eval_samples": n}


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--D", type=float, default=128.0, help="augmentation dimension (> 2; 1e6 ~ diffusion; default 128)")
    p.add_argument("--ch", type=int, default=16, help="base channels of the inner UNet")
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--time-scale", type=float, default=250.0, help="scale of c_noise = ln(sigma)/4 in the embedding")
    p.add_argument("--eval-samples", type=int, default=500)
    add_train_args(p, steps=3000, batch_size=128, lr=2e-3, warmup_steps=200, ema_decay=0.999, ckpt_every=500)


@register_recipe("pfgmpp-digits", "PFGM++ on 8x8 digits at augmentation dimension --D (EDM loss and network)", _args)
def pfgmpp_digits_recipe(args: argparse.Namespace) -> dict[str, Any]:
    D = check_D(args.D, "D")
    train_set = digits.load("train")
    arch_config = {
        "ch": args.ch,
        "blocks": args.blocks,
        "mults": [1, 2],
        "num_classes": 0,
        "time_scale": args.time_scale,
    }

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> Tensor:
        return train_set.batch(bs, gen)[0]

    def loss_fn(model: torch.nn.Module, x: Tensor, gen: torch.Generator) -> Tensor:
        return pfgmpp_loss(model, x, D, gen)

    cfg = train_config_from_args(args, arch="edm_digits_unet", arch_config=arch_config, D=D)
    torch.manual_seed(args.seed)
    res = train(build("edm_digits_unet", **arch_config), loss_fn, batch_fn, cfg)
    metrics = evaluate_pfgmpp(res.ema_model, D, args.eval_samples, args.seed)
    metrics["final_loss"] = final_loss(res)
    ship(
        args,
        res.ema_model,
        "edm_digits_unet",
        arch_config,
        kind="pfgmpp",
        schedule=SCHEDULE,
        prediction_type="sample",
        metrics=metrics,
        augment_dim=D,
    )
    return metrics
