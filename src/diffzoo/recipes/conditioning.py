"""``diffzoo train multiview`` and ``diffzoo train tryon``: the networks of the conditioning analogues.

* ``multiview`` -- :class:`~diffzoo.models.multiview.MultiViewUNet` on the exact K = 4 view normal+depth
  renders of random primitives (:mod:`diffzoo.data.primitives3d`), text-conditional (caption tokens,
  dropped to the null token with ``--caption-dropout`` for classifier-free guidance); ``--attention
  joint`` (the Direct2.5-style cross-view attention) or ``independent`` (the baseline: same network,
  each view attends only to itself). Ships kind ``multiview``.
* ``tryon`` -- :class:`~diffzoo.models.tryon.TryonUNet` with ``--mode concat|adapter|reference|full``
  (the IDM-VTON-style conditioning switches) on :mod:`diffzoo.data.tryon`; the epsilon loss is averaged
  over the masked region only (outside it the result is the person, pasted back exactly). Ships kind ``tryon``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch

from diffzoo.conditioning.tryon import make_cond, masked_diffusion_loss
from diffzoo.core.schedules import get_schedule
from diffzoo.data import primitives3d, tryon
from diffzoo.models.multiview import MultiViewUNet
from diffzoo.models.tryon import MODES, TryonUNet
from diffzoo.recipes.registry import add_train_args, final_loss, register_recipe, ship, train_config_from_args
from diffzoo.train.trainer import diffusion_loss, train

log = logging.getLogger(__name__)

SCHEDULE = {"name": "linear", "kwargs": {}}


# ------------------------------------------------------------------------------------------- multiview
def _mv_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attention", choices=("joint", "independent"), default="joint", help="cross-view or per-view")
    p.add_argument("--ch", type=int, default=16, help="base width")
    p.add_argument("--emb-dim", type=int, default=64, help="time/text embedding width")
    p.add_argument("--n-train", type=int, default=2000, help="number of rendered training objects")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the training objects")
    p.add_argument("--prediction-type", choices=("epsilon", "sample"), default="sample", help="network target")
    p.add_argument("--caption-dropout", type=float, default=0.1, help="probability of the null caption")
    add_train_args(p, steps=1500, batch_size=8, lr=1e-3, warmup_steps=50, ema_decay=0.995, ckpt_every=250, log_every=50)


@register_recipe(
    "multiview", "Direct2.5-style joint (or independent) K-view normal+depth denoiser on 3-D primitives", _mv_args
)
def multiview_recipe(args: argparse.Namespace) -> dict[str, Any]:
    data = primitives3d.make_dataset(args.n_train, args.data_seed)
    arch_config = {
        "views": primitives3d.NUM_VIEWS,
        "in_ch": 4,
        "res": primitives3d.RESOLUTION,
        "ch": args.ch,
        "emb_dim": args.emb_dim,
        "vocab_size": len(primitives3d.VOCAB),
        "num_tokens": primitives3d.NUM_TOKENS,
        "joint": args.attention == "joint",
    }
    cfg = train_config_from_args(args, arch="multiview_unet", arch_config=arch_config)
    torch.manual_seed(args.seed)
    model = MultiViewUNet(**arch_config)
    schedule = get_schedule(SCHEDULE["name"])

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
        return data.batch(bs, gen)

    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        x, tok = batch
        drop = torch.rand(tok.shape[0], generator=gen) < args.caption_dropout
        tok = torch.where(drop[:, None].to(tok.device), torch.zeros_like(tok), tok)
        return diffusion_loss(m, x, schedule, gen, cond=tok, prediction_type=args.prediction_type)

    res = train(model, loss_fn, batch_fn, cfg)
    metrics = {"final_loss": final_loss(res), "n_train": args.n_train}
    log.info("multiview (%s): final loss %.4f", args.attention, metrics["final_loss"])
    ship(
        args,
        res.ema_model,
        "multiview_unet",
        arch_config,
        kind="multiview",
        schedule=SCHEDULE,
        prediction_type=args.prediction_type,
        metrics=metrics,
        dataset=f"primitives3d(n={args.n_train}, seed={args.data_seed})",
    )
    return metrics


# ---------------------------------------------------------------------------------------------- tryon
def _tryon_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=MODES, default="full", help="garment conditioning switch")
    p.add_argument("--ch", type=int, default=16, help="base width")
    p.add_argument("--emb-dim", type=int, default=64, help="time embedding width")
    p.add_argument("--prediction-type", choices=("epsilon", "sample"), default="sample", help="network target")
    p.add_argument("--n-train", type=int, default=4000, help="number of person/garment training pairs")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the training pairs")
    add_train_args(
        p, steps=1200, batch_size=16, lr=1e-3, warmup_steps=50, ema_decay=0.995, ckpt_every=200, log_every=50
    )


@register_recipe(
    "tryon", "IDM-VTON-style try-on UNet (--mode concat|adapter|reference|full) on the try-on world", _tryon_args
)
def tryon_recipe(args: argparse.Namespace) -> dict[str, Any]:
    data = tryon.make_dataset(args.n_train, args.data_seed)
    arch_config = {
        "mode": args.mode,
        "canvas": tryon.CANVAS,
        "garment": tryon.GARMENT,
        "ch": args.ch,
        "emb_dim": args.emb_dim,
        "caption_vocab": len(tryon.CAPTION_VOCAB),
        "caption_len": 4,
    }
    cfg = train_config_from_args(args, arch="tryon_unet", arch_config=arch_config)
    torch.manual_seed(args.seed)
    model = TryonUNet(**arch_config)
    schedule = get_schedule(SCHEDULE["name"])

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> dict[str, torch.Tensor]:
        return data.batch(bs, gen)

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        cond = make_cond(batch["person"], batch["mask"], batch["garment"], batch["tokens"])
        return masked_diffusion_loss(m, batch["target"], cond, schedule, gen, args.prediction_type)

    res = train(model, loss_fn, batch_fn, cfg)
    metrics = {
        "final_loss": final_loss(res),
        "n_train": args.n_train,
        "params": sum(p.numel() for p in model.parameters()),
        "params_used": model.used_parameters(),
    }
    log.info("tryon (%s): final loss %.4f", args.mode, metrics["final_loss"])
    ship(
        args,
        res.ema_model,
        "tryon_unet",
        arch_config,
        kind="tryon",
        schedule=SCHEDULE,
        prediction_type=args.prediction_type,
        metrics=metrics,
        dataset=f"tryon(n={args.n_train}, seed={args.data_seed})",
    )
    return metrics
