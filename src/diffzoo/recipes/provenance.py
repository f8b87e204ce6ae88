"""Training recipes of the provenance family: ``diffzoo train learned-watermark | wouaf``.

* ``learned-watermark`` -- the StegaStamp-style encoder/decoder (:class:`~diffzoo.models.provenance.
  LearnedWatermark`, arXiv 1904.05343) on 32x32 shapes scenes (``--tile 32``: applied tile-wise to the
  64x64 mosaics; evaluated on mosaics): ``L = BCE(D(A(E(x, m))), m) +
  lam(t) (100 MSE + (1 - SSIM))`` with ``A`` one random differentiable attack per batch
  (:func:`~diffzoo.provenance.attacks.random_augment`: differentiable JPEG, blur, noise, resize, crop,
  rotation, brightness). StegaStamp's curriculum: the first ``--clean-steps`` steps train the message alone
  (no attack, no image loss: with both from the start the bit accuracy stays at chance, measured), then the
  attack strength (``level``) and the image weight ramp linearly from 0 over ``--attack-ramp-steps`` and
  ``--ramp-steps``. No LPIPS (its weights are not available offline) and no critic.
* ``wouaf`` -- WOUAF (arXiv 2306.04744, official ``kylemin/WOUAF``): TinySD's VAE decoder, modulated by
  a 32-bit fingerprint, with the mapping network and a fingerprint decoder, trained on VAE latents of
  real shapes scenes: ``L = BCE(F(A(D_phi(z))), phi) + lam (100 MSE + (1 - SSIM))`` against the
  *unmodulated* decoder's output (the paper's LPIPS term is replaced by MSE + SSIM: no LPIPS weights
  offline), with the same curriculum as the learned watermark. The UNet is untouched.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from diffzoo.data import shapes
from diffzoo.metrics import psnr, ssim
from diffzoo.models.provenance import LearnedWatermark, WOUAFDecoder
from diffzoo.provenance.attacks import jpeg, random_augment
from diffzoo.provenance.bits import bit_accuracy, random_bits
from diffzoo.provenance.tiles import from_tiles
from diffzoo.recipes.registry import add_train_args, register_recipe, ship, train_config_from_args
from diffzoo.train.trainer import train
from diffzoo.zoo import load
from diffzoo.zoo.latent import load_tinysd
from diffzoo.zoo.provenance import EVAL_SEED, TRAIN_SEED, mosaics

log = logging.getLogger(__name__)
Tensor = torch.Tensor


def _image_loss(y: Tensor, ref: Tensor) -> Tensor:
    return 100 * F.mse_loss(y, ref) + (1 - ssim(y, ref))


def _curriculum_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clean-steps", type=int, default=400, help="first steps without attacks or image loss")
    p.add_argument("--ramp-steps", type=int, default=400, help="steps of the linear image-loss ramp after those")
    p.add_argument("--attack-ramp-steps", type=int, default=600, help="steps of the attack-strength ramp after those")


def _curriculum(args: argparse.Namespace, step: int) -> tuple[float, float | None]:
    """StegaStamp's curriculum: ``(image-loss weight, attack level or None)`` at ``step``: the message alone
    for ``--clean-steps``, then both ramped in linearly (see the module docstring)."""

    def ramp(steps: int) -> float:
        return min(1.0, max(0.0, (step - args.clean_steps) / max(1, steps)))

    level = ramp(args.attack_ramp_steps) if step >= args.clean_steps else None
    return args.lambda_img * ramp(args.ramp_steps), level


def _attacked(x: Tensor, g: torch.Generator, level: float | None) -> Tensor:
    return x if level is None else random_augment(x, g, level=level)


def _curriculum_config(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("lambda_img", "clean_steps", "ramp_steps", "attack_ramp_steps")
    return {k: getattr(args, k) for k in keys}


def _lw_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bits", type=int, default=32, help="message length (default %(default)s)")
    p.add_argument("--width", type=int, default=32, help="CNN width (default %(default)s)")
    p.add_argument("--strength", type=float, default=0.06, help="max residual amplitude in [-1,1] units")
    p.add_argument("--lambda-img", type=float, default=1.0, help="image-loss weight after the ramp")
    p.add_argument("--bank", type=int, default=2000, help="32x32 training tiles (default %(default)s)")
    p.add_argument("--tile", type=int, default=32, help="train on tile x tile crops, apply tile-wise (0: whole image)")
    _curriculum_args(p)
    add_train_args(p, steps=1500, batch_size=16, lr=1e-3, warmup_steps=50, ema_decay=0.99, ckpt_every=250, threads=1)


@register_recipe("learned-watermark", "StegaStamp-style learned watermark on 64x64 shapes mosaics", _lw_args)
def learned_watermark_recipe(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    arch_config = dict(bits=args.bits, width=args.width, strength=args.strength, tile=args.tile)
    cfg = train_config_from_args(args, arch="learned-watermark", arch_config=arch_config, **_curriculum_config(args))
    torch.manual_seed(args.seed)
    model = LearnedWatermark(**arch_config)
    bank = shapes.render_batch(shapes.random_scenes(args.bank, seed=TRAIN_SEED))

    def batch_fn(step: int, g: torch.Generator, bs: int) -> tuple[Tensor, Tensor, float, float | None]:
        if args.tile:  # single 32x32 scenes: the network is applied tile-wise to larger images
            idx = torch.randint(bank.shape[0], (bs,), generator=g)
            x = bank[idx]
        else:
            x = from_tiles(bank[torch.randint(bank.shape[0], (4 * bs,), generator=g)])
        return x, random_bits(bs, args.bits, g), *_curriculum(args, step)

    def loss_fn(m: LearnedWatermark, batch: tuple[Tensor, Tensor, float, float | None], g: torch.Generator) -> Tensor:
        x, bits, lam, level = batch
        xw = m.embed(x, bits)
        logits = m(_attacked(xw, g, level))
        return F.binary_cross_entropy_with_logits(logits, bits) + lam * _image_loss(xw, x)

    res = train(model, loss_fn, batch_fn, cfg)
    wm = res.ema_model.eval()
    x, _ = mosaics(128, EVAL_SEED)
    bits = random_bits(128, args.bits, torch.Generator().manual_seed(1))
    with torch.no_grad():
        xw = wm.embed(x, bits)
        acc = bit_accuracy((wm(xw) > 0).float(), bits)
        acc_jpeg = bit_accuracy((wm(jpeg(xw, 50)) > 0).float(), bits)
        acc_neg = bit_accuracy((wm(x) > 0).float(), bits)
    metrics = {
        "eval_n": 128,
        "bit_acc": round(float(acc.mean()), 4),
        "bit_acc_jpeg50": round(float(acc_jpeg.mean()), 4),
        "bit_acc_unwatermarked": round(float(acc_neg.mean()), 4),
        "psnr_db": round(float(psnr(xw, x)), 2),
        "ssim": round(float(ssim(xw, x)), 4),
        "final_loss": float(res.losses[-1]) if res.losses else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    log.info("learned-watermark: %s", metrics)
    ship(args, wm, "learned-watermark", arch_config, kind="watermark", sample_shape=(3, 64, 64), metrics=metrics)
    return metrics


def _wouaf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bits", type=int, default=32, help="fingerprint length (default %(default)s, the paper's)")
    p.add_argument("--w-dim", type=int, default=128, help="mapping network width (paper: 128)")
    p.add_argument("--detector-width", type=int, default=32)
    p.add_argument("--lambda-img", type=float, default=1.0, help="image-loss weight")
    p.add_argument("--bank", type=int, default=2000, help="training scenes (VAE latents) (default %(default)s)")
    p.add_argument("--mapping-lr-mult", type=float, default=10.0, help="learning-rate factor of the mapping network")
    _curriculum_args(p)
    add_train_args(p, steps=1500, batch_size=16, lr=5e-4, warmup_steps=50, ema_decay=0.99, ckpt_every=250, threads=1)


@register_recipe("wouaf", "WOUAF: fingerprint-modulated TinySD VAE decoder + fingerprint decoder", _wouaf_args)
def wouaf_recipe(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    tiny = load_tinysd()
    vae_cfg = dict(load("tinysd").config["arch_config"]["vae"])
    arch_config = dict(
        vae=vae_cfg,
        bits=args.bits,
        w_dim=args.w_dim,
        detector_width=args.detector_width,
        scaling_factor=tiny.scaling_factor,
    )
    cfg = train_config_from_args(
        args,
        arch="wouaf-decoder",
        arch_config=arch_config,
        mapping_lr_mult=args.mapping_lr_mult,
        **_curriculum_config(args),
    )
    torch.manual_seed(args.seed)
    model = WOUAFDecoder(**arch_config)
    model.load_vae_decoder(tiny.vae)

    def latents(seed: int, n: int) -> tuple[Tensor, Tensor]:
        x = shapes.render_batch(shapes.random_scenes(n, seed=seed))
        with torch.no_grad():
            z = torch.cat([tiny.encode_image(c) for c in x.split(250)])
            ref = torch.cat([tiny.decode(c) for c in z.split(250)])
        return z, ref

    z, ref = latents(TRAIN_SEED + 1, args.bank)

    def batch_fn(step: int, g: torch.Generator, bs: int) -> tuple[Tensor, Tensor, Tensor, float, float | None]:
        idx = torch.randint(z.shape[0], (bs,), generator=g)
        return z[idx], ref[idx], random_bits(bs, args.bits, g), *_curriculum(args, step)

    def loss_fn(
        m: WOUAFDecoder, batch: tuple[Tensor, Tensor, Tensor, float, float | None], g: torch.Generator
    ) -> Tensor:
        zb, rb, phi, lam, level = batch
        xh = m.decode(zb, phi)
        logits = m(_attacked(xh, g, level))
        return F.binary_cross_entropy_with_logits(logits, phi) + lam * _image_loss(xh, rb)

    # the fingerprint path (mapping network + per-layer affines, zero-initialised: identity modulation) learns
    # faster than the pretrained decoder weights may move (a one-off 300-step probe, not a recorded run: bit
    # accuracy 0.62 with 5e-3 on it and 5e-4 on the rest, 0.53 with 2e-3 on everything)
    fp_names = {n for n, _ in model.named_parameters() if n.startswith("mapping.") or ".affine." in n}
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in fp_names], "lr_mult": args.mapping_lr_mult},
        {"params": [p for n, p in model.named_parameters() if n not in fp_names], "lr_mult": 1.0},
    ]
    res = train(model, loss_fn, batch_fn, cfg, param_groups=groups)
    dec = res.ema_model.eval()
    ze, refe = latents(EVAL_SEED + 1, 128)
    phi = random_bits(128, args.bits, torch.Generator().manual_seed(2))
    with torch.no_grad():
        xh = dec.decode(ze, phi)
        acc = bit_accuracy((dec(xh) > 0).float(), phi)
        acc_jpeg = bit_accuracy((dec(jpeg(xh, 50)) > 0).float(), phi)
        acc_plain = bit_accuracy((dec(refe) > 0).float(), phi)
    metrics = {
        "eval_n": 128,
        "bit_acc": round(float(acc.mean()), 4),
        "bit_acc_jpeg50": round(float(acc_jpeg.mean()), 4),
        "bit_acc_unmodulated": round(float(acc_plain.mean()), 4),
        "psnr_vs_unmodulated_db": round(float(psnr(xh, refe)), 2),
        "ssim_vs_unmodulated": round(float(ssim(xh, refe)), 4),
        "final_loss": float(res.losses[-1]) if res.losses else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    log.info("wouaf: %s", metrics)
    ship(args, dec, "wouaf-decoder", arch_config, kind="watermark", sample_shape=(3, 32, 32), metrics=metrics)
    return metrics
