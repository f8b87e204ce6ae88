"""Training recipes of the forensics family: ``diffzoo train dire-detector | laundering-detector | halluc-toy``.

* ``dire-detector`` -- a :class:`~diffzoo.models.forensics.ForensicCNN` on DIRE maps (Wang et al., ICCV
  2023, arXiv 2303.09295) or, as the baseline, on raw pixels: real vs generated, same format for both
  classes (digits: generated pixels rounded to the real data's 17 levels; shapes: both 8-bit). Digits:
  real = the ``train`` split, generated = ``--generator`` samples; evaluated on the held-out ``test`` split
  vs fresh samples. Shapes: renders vs TinySD samples (DIRE through the VAE).
* ``laundering-detector`` -- the two-stage patch detector of Mandelli et al. (arXiv 2407.10736): stage 1
  real vs fully synthetic (trained *without* laundered images), stage 2 laundered (VAE round trip and
  img2img at strengths 0.1-0.5) vs fully synthetic. Random ``--patch`` crops; image score = top-M mean.
* ``halluc-toy`` -- the DDPM of Aithal et al. (arXiv 2406.09358, official ``train_toy_filter.py``):
  T = 1000, linear betas 0.001..0.2 (``torch.linspace(0.001, 0.2, 1000)``, the official defaults),
  eps-prediction, an MLP (128 hidden, 3 time-conditioned blocks), Adam 1e-3, on a *finite* training set
  of ``--size`` points of the 1-D mixture (modes 1, 2, 3, sigma 0.05) or the 5x5 Gaussian grid.
* ``halluc-shapes`` -- a pixel DDPM on the paper's SIMPLE SHAPES (:mod:`diffzoo.data.simple_shapes`,
  32x32 here instead of 64x64): T = 1000, DDPM's linear betas 1e-4..0.02, eps-prediction, a
  :class:`~diffzoo.models.unet.PatchUNet` (the UNet on 4x4 pixel patches, so it trains and samples on a
  CPU), on a finite training set of ``--size`` images. The official shapes run uses a larger
  guided-diffusion UNet at 64x64; the architecture and resolution here are ours.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.schedules import get_schedule
from diffzoo.data import simple_shapes, toy2d
from diffzoo.forensics.detection import detection_metrics, random_patches, top_m_mean
from diffzoo.models.registry import build
from diffzoo.recipes.registry import add_train_args, final_loss, register_recipe, ship, train_config_from_args
from diffzoo.sampling import ddpm, get_timesteps
from diffzoo.train.trainer import diffusion_loss, train
from diffzoo.zoo.forensics import (
    SHAPES_GENERATOR,
    TRAIN_GENERATOR,
    detector_input,
    generated_digits,
    generated_shapes,
    launder,
    real_digits,
    real_shapes,
    shapes_hallucinations,
    tinysd_samples,
)
from diffzoo.zoo.latent import load_tinysd

log = logging.getLogger(__name__)
Tensor = torch.Tensor

#: The hallucination paper's schedule (official defaults: linear, 0.001 .. 0.2, 1000 steps).
HALLUC_SCHEDULE = {"name": "linear", "kwargs": {"beta_start": 0.001, "beta_end": 0.2}}
#: DDPM's image schedule (Ho et al. 2020) for the SIMPLE SHAPES pixel model.
SHAPES_SCHEDULE = {"name": "linear", "kwargs": {"beta_start": 1e-4, "beta_end": 0.02}}
#: Seeds of the data sets (fixed, so the bench's held-out sets never overlap the training ones).
TRAIN_SEED, EVAL_SEED = 1000, 2000
STRENGTHS = (0.1, 0.2, 0.3, 0.4, 0.5)


def _bce_train(args: argparse.Namespace, x: Tensor, y: Tensor, arch_config: dict[str, Any], augment: Any, **extra: Any):
    cfg = train_config_from_args(args, arch="forensic_cnn", arch_config=arch_config, **extra)
    torch.manual_seed(args.seed)
    model = build("forensic_cnn", **arch_config)

    def batch_fn(step: int, g: torch.Generator, bs: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(x.shape[0], (bs,), generator=g)
        return augment(x[idx], g), y[idx]

    def loss_fn(m: torch.nn.Module, batch: tuple[Tensor, Tensor], g: torch.Generator) -> Tensor:
        return F.binary_cross_entropy_with_logits(m(batch[0]), batch[1])

    return train(model, loss_fn, batch_fn, cfg)


def _flip(x: Tensor, g: torch.Generator) -> Tensor:
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# -------------------------------------------------------------------------------------------------
# DIRE detector
# -------------------------------------------------------------------------------------------------


def _dire_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domain", choices=("digits", "shapes"), default="digits")
    p.add_argument("--input", choices=("dire", "pixels"), default="dire", help="DIRE maps or raw pixels (baseline)")
    p.add_argument("--generator", default=TRAIN_GENERATOR, help="digits: the training generator spec")
    p.add_argument("--n-fake", type=int, default=1500, help="generated training images (default %(default)s)")
    p.add_argument("--n-real", type=int, default=1500, help="shapes: real training renders (digits: train split)")
    p.add_argument("--n-eval", type=int, default=300, help="held-out images per class (default %(default)s)")
    p.add_argument("--no-same-format", action="store_true", help="digits: keep generated pixels continuous")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=2)
    add_train_args(p, steps=600, batch_size=128, lr=2e-3, warmup_steps=50, ema_decay=0.99, ckpt_every=200)


def dire_sets(args: argparse.Namespace, split: str) -> tuple[Tensor, Tensor]:
    """(inputs, labels) of the DIRE detector's ``train`` or held-out ``eval`` set."""
    same = not args.no_same_format
    if args.domain == "digits":
        real = real_digits("train" if split == "train" else "test")
        n_fake = args.n_fake if split == "train" else args.n_eval
        fake = generated_digits(args.generator, n_fake, TRAIN_SEED if split == "train" else EVAL_SEED, same_format=same)
        model = None
    else:
        model = load_tinysd()
        n = args.n_real if split == "train" else args.n_eval
        seed = TRAIN_SEED if split == "train" else EVAL_SEED
        real, _ = real_shapes(n, seed)
        fake = generated_shapes(SHAPES_GENERATOR, args.n_fake if split == "train" else args.n_eval, seed, model)
    x = torch.cat(
        [detector_input(real, args.input, args.domain, model), detector_input(fake, args.input, args.domain, model)]
    )
    y = torch.cat([torch.zeros(real.shape[0]), torch.ones(fake.shape[0])])
    return x, y


@register_recipe("dire-detector", "DIRE (or raw-pixel) real-vs-generated CNN detector (digits or shapes)", _dire_args)
def dire_detector_recipe(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    x, y = dire_sets(args, "train")
    xe, ye = dire_sets(args, "eval")
    data_s = time.perf_counter() - t0
    arch_config = {"in_ch": x.shape[1], "width": args.width, "depth": args.depth}
    res = _bce_train(args, x, y, arch_config, _flip, input=args.input, domain=args.domain)
    with torch.no_grad():
        scores = torch.sigmoid(res.ema_model.eval()(xe))
    metrics = detection_metrics(scores, ye)
    metrics.update(data_wall_s=round(data_s, 1), wall_s=round(time.perf_counter() - t0, 1))
    detector = {
        "type": "dire",
        "input": args.input,
        "domain": args.domain,
        "generator": args.generator if args.domain == "digits" else SHAPES_GENERATOR,
        "same_format": not args.no_same_format,
        "dire_steps": 20,
        "image_shape": list(x.shape[1:]),
    }
    ship(args, res.ema_model, "forensic_cnn", arch_config, kind="classifier", metrics=metrics, detector=detector)
    return metrics


# -------------------------------------------------------------------------------------------------
# laundering detector (two stages)
# -------------------------------------------------------------------------------------------------


def _laund_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", type=int, choices=(1, 2), default=1)
    p.add_argument("--n", type=int, default=600, help="training images per class (default %(default)s)")
    p.add_argument("--patch", type=int, default=16, help="patch size (default %(default)s)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=2)
    add_train_args(p, steps=800, batch_size=128, lr=2e-3, warmup_steps=50, ema_decay=0.99, ckpt_every=200)


def laundering_sets(n: int, seed: int, strengths: tuple[float, ...] = STRENGTHS) -> dict[str, Tensor]:
    """``real`` renders, fully ``synthetic`` TinySD samples (other captions) and ``laundered`` versions of
    the real renders (VAE round trip ``vae`` and img2img ``s0.1`` ... ``s0.5``), all 8-bit."""
    model = load_tinysd()
    real, caps = real_shapes(n, seed)
    _, caps2 = real_shapes(n, seed + 1)
    out = {"real": real, "synthetic": tinysd_samples(model, caps2, seed), "vae": launder(model, real)}
    for s in strengths:
        out[f"s{s:g}"] = launder(model, real, caps, s, seed)
    return out


@register_recipe(
    "laundering-detector", "two-stage patch detector: real vs synthetic, laundered vs synthetic", _laund_args
)
def laundering_detector_recipe(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    strengths = () if args.stage == 1 else STRENGTHS
    tr = laundering_sets(args.n, TRAIN_SEED, strengths)
    ev = laundering_sets(max(100, args.n // 4), EVAL_SEED, strengths)
    if args.stage == 1:
        neg, pos = tr["real"], tr["synthetic"]  # no laundered images in stage-1 training
        eneg, epos = ev["real"], ev["synthetic"]
    else:
        laundered = [tr["vae"]] + [tr[f"s{s:g}"] for s in strengths]
        neg = torch.cat([v[torch.randperm(v.shape[0])[: args.n // len(laundered) + 1]] for v in laundered])
        pos, epos = tr["synthetic"], ev["synthetic"]
        eneg = torch.cat([ev["vae"]] + [ev[f"s{s:g}"] for s in strengths])
    x = torch.cat([neg, pos])
    y = torch.cat([torch.zeros(neg.shape[0]), torch.ones(pos.shape[0])])
    size = args.patch

    def crop(xb: Tensor, g: torch.Generator) -> Tensor:
        return _flip(random_patches(xb, 1, size, g)[:, 0], g)

    arch_config = {"in_ch": 3, "width": args.width, "depth": args.depth}
    res = _bce_train(args, x, y, arch_config, crop, stage=args.stage, patch=size)
    xe = torch.cat([eneg, epos])
    ye = torch.cat([torch.zeros(eneg.shape[0]), torch.ones(epos.shape[0])])
    with torch.no_grad():
        logits = patch_logits(res.ema_model.eval(), xe, size, 64, torch.Generator().manual_seed(21))
    metrics = detection_metrics(top_m_mean(logits, 48), ye, threshold=0.0)
    metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    detector = {
        "type": "laundering",
        "stage": args.stage,
        "patch": size,
        "patches": 64,
        "top_m": 48,
        "image_shape": [3, 32, 32],
    }
    ship(args, res.ema_model, "forensic_cnn", arch_config, kind="classifier", metrics=metrics, detector=detector)
    return metrics


def patch_logits(model: torch.nn.Module, images: Tensor, size: int, num: int, generator: torch.Generator) -> Tensor:
    """Logits ``(B, num)`` of ``num`` random patches per image."""
    p = random_patches(images, num, size, generator)
    return model(p.flatten(0, 1)).view(images.shape[0], num)


# -------------------------------------------------------------------------------------------------
# hallucination toy DDPM
# -------------------------------------------------------------------------------------------------


def _halluc_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=("mixture1d", "grid25"), default="mixture1d")
    p.add_argument("--size", type=int, default=50000, help="finite training-set size (default %(default)s)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--eval-samples", type=int, default=2000)
    add_train_args(p, steps=3000, batch_size=1000, lr=1e-3, warmup_steps=0, ema_decay=0.995, ckpt_every=1000)


def halluc_schedule():
    return get_schedule(HALLUC_SCHEDULE["name"], **HALLUC_SCHEDULE["kwargs"])


def _train_finite_ddpm(
    args: argparse.Namespace, train_set: Tensor, schedule: Any, arch: str, arch_config: dict[str, Any], **extra: Any
):
    """Train ``arch`` with the plain eps loss on a *finite* training set (uniform draws with replacement);
    returns the training result and the EMA model's denoiser."""
    cfg = train_config_from_args(args, arch=arch, arch_config=arch_config, **extra)
    torch.manual_seed(args.seed)
    model = build(arch, **arch_config)

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> Tensor:
        return train_set[torch.randint(train_set.shape[0], (bs,), generator=gen)]

    def loss_fn(m: torch.nn.Module, x0: Tensor, gen: torch.Generator) -> Tensor:
        return diffusion_loss(m, x0, schedule, gen)

    res = train(model, loss_fn, batch_fn, cfg)
    return res, Denoiser(res.ema_model.eval(), schedule, "epsilon")


def _ship_ddpm(args, res, arch: str, arch_config: dict, schedule: dict, metrics: dict, dataset: str) -> None:
    metrics["final_loss"] = final_loss(res)
    ship(
        args,
        res.ema_model,
        arch,
        arch_config,
        kind="diffusion",
        schedule=schedule,
        prediction_type="epsilon",
        metrics=metrics,
        dataset=dataset,
    )


@register_recipe(
    "halluc-toy", "DDPM (T=1000, betas 0.001..0.2) on a finite 1-D / 2-D Gaussian-mixture set", _halluc_args
)
def halluc_toy_recipe(args: argparse.Namespace) -> dict[str, Any]:
    data = toy2d.get(args.dataset)
    g = torch.Generator().manual_seed(args.seed + 7)
    train_set = data.sample(args.size, g).to(torch.float32)
    schedule = halluc_schedule()
    arch_config = {"dim": data.dim, "hidden": args.hidden, "depth": args.depth, "time_every_block": True}
    t0 = time.perf_counter()
    res, den = _train_finite_ddpm(args, train_set, schedule, "mlp", arch_config, dataset=args.dataset, size=args.size)
    with torch.no_grad():
        x = ddpm(
            den,
            torch.randn(args.eval_samples, data.dim, generator=g),
            get_timesteps(schedule, 1000, "leading"),
            generator=g,
        )
    d = torch.cdist(x.double(), data.modes).min(-1).values
    metrics = {
        "frac_between_modes": float((d > 4 * float(data.mixture.stds.max())).double().mean()),
        "eval_samples": args.eval_samples,
        "train_wall_s": round(time.perf_counter() - t0, 1),
    }
    _ship_ddpm(args, res, "mlp", arch_config, HALLUC_SCHEDULE, metrics, f"{args.dataset} (n={args.size})")
    return metrics


# -------------------------------------------------------------------------------------------------
# hallucination: SIMPLE SHAPES pixel DDPM
# -------------------------------------------------------------------------------------------------


def _halluc_shapes_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=5000, help="finite training-set size (default %(default)s)")
    p.add_argument("--ch", type=int, default=32)
    p.add_argument("--patch", type=int, default=4, help="pixel-patch side of the PatchUNet (default %(default)s)")
    p.add_argument("--eval-samples", type=int, default=256)
    p.add_argument("--eval-steps", type=int, default=100, help="ancestral steps of the evaluation samples")
    add_train_args(p, steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995, ckpt_every=500)


@register_recipe(
    "halluc-shapes",
    "pixel DDPM (T=1000) on the hallucination paper's SIMPLE SHAPES (three strips)",
    _halluc_shapes_args,
)
def halluc_shapes_recipe(args: argparse.Namespace) -> dict[str, Any]:
    train_set = simple_shapes.sample(args.size, args.seed + 7)
    schedule = get_schedule(SHAPES_SCHEDULE["name"], **SHAPES_SCHEDULE["kwargs"])
    arch_config = {
        "in_ch": 1,
        "size": simple_shapes.SIZE,
        "patch": args.patch,
        "ch": args.ch,
        "mults": [1, 2],
        "blocks": 1,
        "num_classes": 0,
    }
    t0 = time.perf_counter()
    res, den = _train_finite_ddpm(args, train_set, schedule, "patch_unet", arch_config, size=args.size)
    train_s = time.perf_counter() - t0
    ev = shapes_hallucinations(den, args.eval_samples, args.eval_steps, torch.Generator().manual_seed(args.seed + 11))
    metrics = {
        "frac_hallucinated": float(ev["hallucinated"].double().mean()),
        "frac_empty": float(ev["empty"].double().mean()),
        "eval_samples": args.eval_samples,
        "eval_steps": args.eval_steps,
        "train_wall_s": round(train_s, 1),
        "eval_wall_s": round(time.perf_counter() - t0 - train_s, 1),
    }
    _ship_ddpm(args, res, "patch_unet", arch_config, SHAPES_SCHEDULE, metrics, f"simple_shapes (n={args.size})")
    return metrics
