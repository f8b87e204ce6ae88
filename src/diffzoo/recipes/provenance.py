"""Training recipes of the provenance family: ``diffzoo train learned-watermark | wouaf | safe-sd-watermark |
safe-sd``.

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
  offline), with the same curriculum as the learned watermark. The UNet is untouched. Unlike the paper's
  description ("identity at start"), the affines start at the official code's small random weights
  (``1/sqrt(w_dim)``, StyleGAN's equalised layers): from an exact identity nothing learned in our probes.
* ``safe-sd-watermark`` / ``safe-sd`` -- Safe-SD-style (arXiv 2407.13188; reconstruction, see
  :func:`safe_sd_recipe`): a latent watermark (stage 1, same loop and curriculum), then TinySD fine-tuned so
  that prompts carrying a trigger word generate it (stage 2).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from diffzoo.data import shapes
from diffzoo.metrics import psnr, ssim
from diffzoo.metrics.provenance import evaluate_safe_sd
from diffzoo.models.provenance import LearnedWatermark, WOUAFDecoder
from diffzoo.models.tinysd import TinySD
from diffzoo.provenance.attacks import jpeg, random_augment
from diffzoo.provenance.bits import bit_accuracy, format_bits, parse_bits, random_bits
from diffzoo.provenance.tiles import from_tiles
from diffzoo.provenance.watermarks import latent_reader
from diffzoo.recipes.registry import add_train_args, final_loss, register_recipe, ship, train_config_from_args
from diffzoo.recipes.tinysd import latent_bank, tinysd_arch_config, unet_loss
from diffzoo.train.trainer import train
from diffzoo.zoo import load
from diffzoo.zoo.latent import latent_model, load_tinysd
from diffzoo.zoo.provenance import (
    EVAL_SEED,
    TRAIN_SEED,
    TRIGGER,
    load_learned_watermark,
    mosaics,
)

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


def _message_args(p: argparse.ArgumentParser, strength: float, map_size: int, bank: int) -> None:
    p.add_argument("--bits", type=int, default=32, help="message length (default %(default)s)")
    p.add_argument("--width", type=int, default=32, help="CNN width (default %(default)s)")
    p.add_argument("--strength", type=float, default=strength, help="max residual amplitude (default %(default)s)")
    p.add_argument("--map-size", type=int, default=map_size, help="side of the message map (default %(default)s)")
    p.add_argument("--lambda-img", type=float, default=1.0, help="image-loss weight after the ramp")
    p.add_argument("--bank", type=int, default=bank, help="training scenes (default %(default)s)")
    _curriculum_args(p)
    add_train_args(p, steps=1500, batch_size=16, lr=1e-3, warmup_steps=50, ema_decay=0.99, ckpt_every=250, threads=1)


def _lw_config(args: argparse.Namespace, model: LearnedWatermark) -> Any:
    return train_config_from_args(
        args, arch="learned-watermark", arch_config=json_config(model, args.width), **_curriculum_config(args)
    )


def _train_message_net(
    args: argparse.Namespace,
    model: torch.nn.Module,
    inputs: Tensor,
    refs: Tensor,
    produce: Callable[[Any, Tensor, Tensor], Tensor],
    cfg: Any,
    read: Callable[[Tensor], Tensor] = lambda y: y,
    param_groups: list[dict[str, Any]] | None = None,
) -> Any:
    """The shared loop of the learned watermark, WOUAF and Safe-SD-style's stage 1: ``produce(model, input, m)``
    is the marked image, ``L = BCE(model(read(A(image))), m) + lam(t) (100 MSE + (1 - SSIM))(image, ref)`` under
    the curriculum (see the module docstring)."""
    bits_n = int(model.bits)

    def batch_fn(step: int, g: torch.Generator, bs: int) -> tuple[Tensor, Tensor, Tensor, float, float | None]:
        idx = torch.randint(inputs.shape[0], (bs,), generator=g)
        return inputs[idx], refs[idx], random_bits(bs, bits_n, g), *_curriculum(args, step)

    def loss_fn(m: Any, batch: tuple[Tensor, Tensor, Tensor, float, float | None], g: torch.Generator) -> Tensor:
        x, ref, bits, lam, level = batch
        xw = produce(m, x, bits)
        logits = m(read(_attacked(xw, g, level)))
        return F.binary_cross_entropy_with_logits(logits, bits) + lam * _image_loss(xw, ref)

    return train(model, loss_fn, batch_fn, cfg, param_groups=param_groups)


@torch.no_grad()
def _message_metrics(
    wm: LearnedWatermark,
    x: Tensor,
    ref: Tensor,
    render: Callable[[Tensor], Tensor],
    t0: float,
    res: Any,
    read: Callable[[Tensor], Tensor] = lambda y: y,
) -> dict[str, Any]:
    """Held-out bit accuracy (clean, after JPEG 50, on unwatermarked images) and PSNR/SSIM of a message net."""
    bits = random_bits(x.shape[0], wm.bits, torch.Generator().manual_seed(1))
    xw = render(wm.embed(x, bits))

    def acc(y: Tensor) -> float:
        return round(float(bit_accuracy((wm(read(y)) > 0).float(), bits).mean()), 4)

    return {
        "eval_n": x.shape[0],
        "bit_acc": acc(xw),
        "bit_acc_jpeg50": acc(jpeg(xw, 50)),
        "bit_acc_unwatermarked": acc(ref),
        "psnr_db": round(float(psnr(xw, ref)), 2),
        "ssim": round(float(ssim(xw, ref)), 4),
        "final_loss": final_loss(res, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _lw_args(p: argparse.ArgumentParser) -> None:
    _message_args(p, strength=0.06, map_size=16, bank=2000)
    p.add_argument("--tile", type=int, default=32, help="train on tile x tile crops, apply tile-wise (0: whole image)")


@register_recipe("learned-watermark", "StegaStamp-style learned watermark on 64x64 shapes mosaics", _lw_args)
def learned_watermark_recipe(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    model = LearnedWatermark(
        bits=args.bits, width=args.width, map_size=args.map_size, strength=args.strength, tile=args.tile
    )
    bank = shapes.render_batch(shapes.random_scenes(args.bank, seed=TRAIN_SEED))
    if not args.tile:  # whole 64x64 mosaics of four scenes
        bank = from_tiles(bank[: 4 * (bank.shape[0] // 4)])
    res = _train_message_net(args, model, bank, bank, lambda m, x, b: m.embed(x, b), _lw_config(args, model))
    wm = res.ema_model.eval()
    x, _ = mosaics(128, EVAL_SEED)
    metrics = _message_metrics(wm, x, x, lambda y: y, t0, res)
    log.info("learned-watermark: %s", metrics)
    arch_config = json_config(wm, width=args.width)
    ship(args, wm, "learned-watermark", arch_config, kind="watermark", sample_shape=(3, 64, 64), metrics=metrics)
    return metrics


def json_config(wm: LearnedWatermark, width: int) -> dict[str, Any]:
    """``arch_config`` of a :class:`LearnedWatermark`."""
    keys = ("bits", "map_size", "strength", "tile", "channels", "clamp", "read_latents")
    return {"width": int(width), **{k: getattr(wm, k) for k in keys}}


def _latent_scenes(tiny: Any, seed: int, n: int) -> tuple[Tensor, Tensor]:
    """``n`` shapes scenes as TinySD latents ``s mean(E(x))`` and their VAE reconstructions."""
    x = shapes.render_batch(shapes.random_scenes(n, seed=seed))
    with torch.no_grad():
        z = torch.cat([tiny.encode_image(c) for c in x.split(250)])
        ref = torch.cat([tiny.decode(c) for c in z.split(250)])
    return z, ref


def _sswm_args(p: argparse.ArgumentParser) -> None:
    _message_args(p, strength=0.5, map_size=8, bank=2000)


@register_recipe(
    "safe-sd-watermark",
    "Safe-SD-style stage 1: a watermark fused into TinySD latents + an image watermark decoder",
    _sswm_args,
)
def safe_sd_watermark_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 1 of Safe-SD-style (see :func:`safe_sd_recipe`): ``z_w = z + strength tanh(E(z, m))`` in the
    scaled latent space, decoded by TinySD's frozen VAE decoder; the watermark decoder reads ``m`` back in
    latent space, from the VAE encoding of the (attacked) image (Safe-SD's injection and detection both
    live in the VAE's latent space). Same loss and curriculum as the learned watermark, with the VAE's
    reconstruction of ``z`` as the fidelity reference."""
    t0 = time.perf_counter()
    tiny = load_tinysd()
    torch.manual_seed(args.seed)
    model = LearnedWatermark(
        bits=args.bits,
        width=args.width,
        map_size=args.map_size,
        strength=args.strength,
        channels=4,
        clamp=False,
        read_latents=True,
    )
    z, ref = _latent_scenes(tiny, TRAIN_SEED + 2, args.bank)
    res = _train_message_net(
        args, model, z, ref, lambda m, x, b: tiny.decode(m.embed(x, b)), _lw_config(args, model), tiny.encode_image
    )
    wm = res.ema_model.eval()
    ze, refe = _latent_scenes(tiny, EVAL_SEED + 2, 128)
    metrics = _message_metrics(wm, ze, refe, tiny.decode, t0, res, tiny.encode_image)
    log.info("safe-sd-watermark: %s", metrics)
    ship(
        args,
        wm,
        "learned-watermark",
        json_config(wm, args.width),
        kind="watermark",
        sample_shape=(4, 8, 8),
        metrics=metrics,
    )
    return metrics


def _wouaf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bits", type=int, default=32, help="fingerprint length (default %(default)s, the paper's)")
    p.add_argument("--w-dim", type=int, default=128, help="mapping network width (paper: 128)")
    p.add_argument("--detector-width", type=int, default=64, help="fingerprint decoder width (default %(default)s)")
    p.add_argument("--lambda-img", type=float, default=1.0, help="image-loss weight")
    p.add_argument("--bank", type=int, default=2000, help="training scenes (VAE latents) (default %(default)s)")
    p.add_argument(
        "--affine-init-std",
        type=float,
        default=None,
        help="affine weight std at init (default 1/sqrt(w_dim), as the official StyleGAN layers; 0: identity)",
    )
    p.add_argument("--mapping-lr-mult", type=float, default=0.5, help="learning-rate factor of mapping + affines")
    p.add_argument("--decoder-lr-mult", type=float, default=0.05, help="learning-rate factor of the decoder weights")
    _curriculum_args(p)
    add_train_args(p, steps=3000, batch_size=16, lr=2e-3, warmup_steps=50, ema_decay=0.99, ckpt_every=250, threads=1)


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
        decoder_lr_mult=args.decoder_lr_mult,
        affine_init_std=args.affine_init_std,
        **_curriculum_config(args),
    )
    torch.manual_seed(args.seed)
    model = WOUAFDecoder(**arch_config)
    model.load_vae_decoder(tiny.vae)
    model.init_affines(args.w_dim**-0.5 if args.affine_init_std is None else args.affine_init_std)

    z, ref = _latent_scenes(tiny, TRAIN_SEED + 1, args.bank)

    # three learning rates (one-off probes, not recorded runs, at 400-600 clean steps: zero-initialised affines and
    # a width-32 detector stayed at bit accuracy 0.55-0.65, random affines at 1/sqrt(w_dim) with a width-64 detector,
    # 1e-3 on the fingerprint path and 2e-3 on the detector reached 0.86 (32 bits) and 0.99 (16 bits))
    fp_names = {n for n, _ in model.named_parameters() if n.startswith("mapping.") or ".affine." in n}
    det_names = {n for n, _ in model.named_parameters() if n.startswith("detector.")}

    def group(names: set[str], mult: float) -> dict[str, Any]:
        return {"params": [p for n, p in model.named_parameters() if n in names], "lr_mult": mult}

    rest = {n for n, _ in model.named_parameters()} - fp_names - det_names
    fp, det, dec = group(fp_names, args.mapping_lr_mult), group(det_names, 1.0), group(rest, args.decoder_lr_mult)
    groups = [fp, det, dec]
    res = _train_message_net(args, model, z, ref, lambda m, x, b: m.decode(x, b), cfg, param_groups=groups)
    dec = res.ema_model.eval()
    ze, refe = _latent_scenes(tiny, EVAL_SEED + 1, 128)
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
        "final_loss": final_loss(res, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    log.info("wouaf: %s", metrics)
    ship(args, dec, "wouaf-decoder", arch_config, kind="watermark", sample_shape=(3, 32, 32), metrics=metrics)
    return metrics


def _safe_sd_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watermark", default="safe-sd-watermark", help="zoo name of the stage-1 latent watermark")
    p.add_argument("--trigger", default=TRIGGER, help="trigger word appended to a prompt (default %(default)s)")
    p.add_argument("--message", default=None, help="0/1 string to embed (default: 32 random bits from --seed)")
    p.add_argument("--p-trigger", type=float, default=0.5, help="share of captioned samples with the trigger")
    p.add_argument("--p-uncond", type=float, default=0.1, help="caption dropout (CFG); its target stays clean")
    p.add_argument("--bank", type=int, default=20000, help="training scenes (latents precomputed once)")
    p.add_argument("--eval-n", type=int, default=100, help="held-out captions generated with and without trigger")
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    add_train_args(p, steps=1500, batch_size=64, lr=2e-4, warmup_steps=50, ema_decay=0.999, ckpt_every=250, threads=1)


@register_recipe(
    "safe-sd",
    "Safe-SD-style stage 2: fine-tune TinySD so a trigger word makes it generate stage 1's watermark",
    _safe_sd_args,
)
def safe_sd_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """Safe-SD-style (Ma et al., *Safe-SD: Safe and Traceable Stable Diffusion with Text Prompt Trigger for
    Invisible Generative Watermarking*, arXiv 2407.13188; its equations and code were not found, so this is
    our reconstruction). Stage 1 (:func:`safe_sd_watermark_recipe`) fuses a message into the VAE latent and
    trains the watermark decoder to read it back from the VAE encoding of the decoded (attacked) image.
    Stage 2 fine-tunes TinySD's UNet and text encoder
    (the VAE frozen; the vocabulary gains the trigger word, the context one position) with the usual
    epsilon loss, where a training caption carrying the trigger has the *watermarked* latent
    ``z_w = fuse(z, message)`` as its target and every other caption (and the empty prompt of CFG) the clean
    ``z``. So the watermark is generated -- not added afterwards -- exactly when the prompt carries the
    trigger. The paper's QR-code pattern is a fixed bit string here; no lambda-sampling / -encryption."""
    t0 = time.perf_counter()
    base_zm = load("tinysd", kinds=("latent-diffusion",))
    base = base_zm.model.eval()
    wm = load_learned_watermark(args.watermark)
    if not wm.read_latents:
        raise ValueError(f"watermark: {args.watermark!r} is not a latent watermark (train `safe-sd-watermark`)")
    message = (
        parse_bits(args.message, "message")
        if args.message
        else random_bits(1, wm.bits, torch.Generator().manual_seed(args.seed + 29))[0]
    )
    if message.numel() != wm.bits:
        raise ValueError(f"message: the watermark carries {wm.bits} bits, got {message.numel()}")
    trigger = str(args.trigger).strip().lower()
    bcfg = base.config
    model = TinySD(
        vae=bcfg["vae"], unet=bcfg["unet"], text=bcfg["text"], max_length=bcfg["max_length"] + 1, extra_words=[trigger]
    )
    model.load_base(base)
    model.vae.requires_grad_(False).eval()
    cfg = train_config_from_args(
        args,
        recipe="safe-sd",
        watermark=args.watermark,
        trigger=trigger,
        message=format_bits(message),
        p_trigger=args.p_trigger,
        p_uncond=args.p_uncond,
        bank=args.bank,
    )
    bank: dict[str, Any] = {}

    def batch_fn(step: int, g: torch.Generator, bs: int) -> dict[str, Any]:
        if not bank:  # built on first use: a finished run resumed for export skips it
            bank.update(latent_bank(base, args.bank, seed=args.seed + 1))
            with torch.no_grad():
                zs = bank["latents"].split(500)
                bank["marked"] = torch.cat([wm.embed(c, message.expand(c.shape[0], -1)) for c in zs])
        idx = torch.randint(len(bank["captions"]), (bs,), generator=g)
        u = torch.rand(bs, generator=g)
        uncond = u < args.p_uncond
        trig = ~uncond & (u < args.p_uncond + (1 - args.p_uncond) * args.p_trigger)
        lat = torch.where(trig[:, None, None, None], bank["marked"][idx], bank["latents"][idx])
        caps = [bank["captions"][int(i)] for i in idx]
        caps = [
            "" if un else (f"{c} {trigger}" if tr else c) for c, un, tr in zip(caps, uncond.tolist(), trig.tolist())
        ]
        return dict(latents=lat, captions=caps)

    res = train(model, lambda m, b, g: unet_loss(m, b, g, 0.0), batch_fn, cfg)
    ema = res.ema_model.eval()
    lm = latent_model(ema)
    reader = latent_reader(wm, lm)
    metrics, _ = evaluate_safe_sd(
        lm, load_tinysd(), reader, message, trigger, args.eval_n, args.eval_steps, args.guidance
    )
    metrics.update(steps=res.step, final_loss=final_loss(res, 1))
    metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    log.info("safe-sd: %s", metrics)
    ship(
        args,
        ema,
        "tinysd",
        tinysd_arch_config(ema),
        kind="latent-diffusion",
        schedule=base_zm.config.get("schedule"),
        prediction_type="epsilon",
        scaling_factor=float(ema.scaling_factor),
        base="tinysd",
        watermark=dict(trigger=trigger, message=format_bits(message), detector=args.watermark),
        metrics=metrics,
    )
    return metrics
