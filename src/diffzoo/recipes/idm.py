"""``diffzoo train idm-cs``: fine-tune an IDM chain (models.idm) for compressed sensing on digits.

The few-step chain is initialised from the shipped digits UNet (``--base``, unconditional pass through
the null class) and trained end to end with the L1 loss of IDM (Sec. 3.3) on noiseless orthogonalised
CS measurements ``y = Phi x`` of the digits train split, back-propagating through the reversible chain
(memory-free backward). With ``--zoo-name idm-*`` it ships the EMA model, the operator recorded in its JSON.
"""

from __future__ import annotations

import argparse
import copy
import logging
from typing import Any

import torch

from diffzoo import zoo
from diffzoo.core.schedules import get_schedule
from diffzoo.data import digits
from diffzoo.inverse.operators import CompressedSensing
from diffzoo.metrics import psnr, ssim
from diffzoo.models.idm import IDMChain
from diffzoo.recipes.registry import add_train_args, register_recipe, ship, train_config_from_args
from diffzoo.train.trainer import train

log = logging.getLogger(__name__)


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", default="digits-unet", help="zoo name of the pretrained digits UNet")
    p.add_argument("--ratio", type=float, default=0.1, help="CS sampling ratio in (0, 1]")
    p.add_argument("--op-seed", type=int, default=0, help="seed of the measurement matrix")
    p.add_argument("--idm-steps", type=int, default=3, help="sampling steps T of the chain")
    p.add_argument("--ch", type=int, default=16, help="width of the invertible injector net")
    p.add_argument("--rev-blocks", type=int, default=2, help="reversible blocks in the injector net")
    p.add_argument("--plain-backprop", action="store_true", help="store activations (reference run)")
    add_train_args(p, steps=1500, batch_size=64, lr=1e-4, warmup_steps=50, ema_decay=0.99, ckpt_every=250, log_every=50)


def build_from_base(base_name: str, steps: int, ch: int, blocks: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """An :class:`~diffzoo.models.idm.IDMChain` around a trainable copy of zoo model ``base_name``."""

    base = zoo.load(base_name)
    sch = base.config.get("schedule") or {"name": "linear", "kwargs": {}}
    null = base.config.get("null_class", base.config["arch_config"].get("num_classes", 10))
    unet = copy.deepcopy(base.model).requires_grad_(True).train()
    chain = IDMChain(unet, get_schedule(sch["name"], **sch.get("kwargs", {})), steps, ch, blocks, null)
    cfg = {
        "unet_arch": base.config["arch"],
        "unet_config": base.config["arch_config"],
        "schedule": sch,
        "steps": steps,
        "ch": ch,
        "blocks": blocks,
        "null_class": null,
    }
    return chain, cfg


@torch.no_grad()
def evaluate_idm(chain: torch.nn.Module, op: Any, split: str = "test") -> dict[str, float]:
    """PSNR / SSIM of the chain on a digits split (noiseless measurements)."""

    x = digits.load(split).images
    out = chain.eval()(op.A(x), op).clamp(-1, 1)
    return {"psnr": float(psnr(out, x)), "ssim": float(ssim(out, x))}


@register_recipe("idm-cs", "IDM: end-to-end fine-tuned few-step chain for compressed sensing on digits", _args)
def idm_cs_recipe(args: argparse.Namespace) -> dict[str, Any]:

    op = CompressedSensing((1, 8, 8), args.ratio, orthogonal=True, seed=args.op_seed)
    torch.manual_seed(args.seed)
    chain, arch_config = build_from_base(args.base, args.idm_steps, args.ch, args.rev_blocks)
    operator = {"name": "cs", "ratio": args.ratio, "seed": args.op_seed}
    cfg = train_config_from_args(args, arch="idm_cs", arch_config=arch_config, operator=operator)
    data = digits.load("train")
    invertible = not args.plain_backprop

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> torch.Tensor:
        return data.batch(bs, gen)[0]

    def loss_fn(model: torch.nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return (model(op.A(x), op, invertible=invertible) - x).abs().mean()

    res = train(chain, loss_fn, batch_fn, cfg)
    metrics = evaluate_idm(res.ema_model, op)
    log.info("idm-cs ratio %.2f: test PSNR %.2f dB, SSIM %.4f", args.ratio, metrics["psnr"], metrics["ssim"])
    ship(
        args,
        res.ema_model,
        "idm_cs",
        arch_config,
        kind="idm",
        sample_shape=op.in_shape,
        schedule=arch_config["schedule"],
        prediction_type="epsilon",
        metrics=metrics,
        operator=operator,
        base=args.base,
    )
    return metrics
