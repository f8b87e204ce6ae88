"""Training recipes of the distilled students (``diffzoo distill METHOD`` = ``diffzoo train distill-METHOD``)
and of the held-out judge of the distillation benchmark.

* ``digits-judge-mlp``: :class:`~diffzoo.models.judge.DigitMLPClassifier` (an MLP, seed 1): the second,
  held-out feature extractor of the distillation benchmark (FD under it = "held-out FD").
* ``distill-boot``: BOOT (arXiv 2306.05544, :mod:`diffzoo.distill.boot`), a one-step data-free student of
  the digits UNet (kind ``generator``, type ``signal``).
* ``distill-slimflow``: SlimFlow (arXiv 2407.12718, :mod:`diffzoo.distill.slimflow`): ``--stage reflow``
  trains a small rectified flow on the teacher's coupling (``--anneal`` on/off), ``--stage distill`` a
  one-step student from a reflow student (``--guided`` on/off).
* ``distill-sign``: SIGN-style idempotent distillation (arXiv 2509.21470, :mod:`diffzoo.distill.sign`;
  ``--method ign`` trains the adversarial IGN baseline with the same network and budget): a class-conditional
  DigitsUNet ``f`` (kind ``generator``, type ``idempotent``, sampled by iterating ``f``).
* ``distill-mmd``: MMD-DDM (arXiv 2301.07969, :mod:`diffzoo.distill.mmd`): fine-tunes the teacher through
  its ``T'``-step DDIM chain (kind ``diffusion``).

Every student recipe loads its teacher from the zoo (``--teacher``, kind ``diffusion``, class-conditional),
runs it with classifier-free guidance ``--guidance`` (the teacher's own evaluation scale), trains with
the shared trainer (resumable from ``--out-dir``), evaluates FD-digits / held-out FD / conditional accuracy
of 500 class-balanced samples and, with ``--zoo-name``, ships the EMA student with its command line.
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffzoo import zoo
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.data import digits
from diffzoo.distill.boot import boot_grid, boot_loss
from diffzoo.distill.common import check_steps, teacher_pairs
from diffzoo.distill.generate import generate
from diffzoo.distill.mmd import mmd_ddm_loss
from diffzoo.distill.sign import ADAM_BETAS, LOSSES, NoiseBank, idempotent_loss, idempotent_unet_config
from diffzoo.distill.slimflow import anneal_beta, distill_loss, reflow_loss, straightness
from diffzoo.distill.spectral import spectral_distill_loss
from diffzoo.io import atomic_save_safetensors, read_safetensors
from diffzoo.metrics import digits_accuracy, digits_fd
from diffzoo.models.registry import build
from diffzoo.recipes.foundation import classifier_accuracy, shift_augment
from diffzoo.recipes.registry import add_train_args, final_loss, register_recipe, ship, train_config_from_args
from diffzoo.sampling import ddim, get_timesteps
from diffzoo.train.trainer import train

log = logging.getLogger(__name__)
Tensor = torch.Tensor
JUDGE = "digits-judge-mlp"
SAMPLE_SHAPE = (1, 8, 8)


# -------------------------------------------------------------------------------------------------
# the held-out judge
# -------------------------------------------------------------------------------------------------


def _judge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--feat-dim", type=int, default=64)
    add_train_args(p, steps=1500, batch_size=128, lr=2e-3, warmup_steps=100, ema_decay=0.995, ckpt_every=500, seed=1)


@register_recipe("digits-judge-mlp", "held-out MLP classifier of 8x8 digits (second judge of distill)", _judge_args)
def digits_judge_recipe(args: argparse.Namespace) -> dict[str, Any]:
    train_set = digits.load("train")
    arch_config = {"hidden": args.hidden, "feat_dim": args.feat_dim}

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> tuple[Tensor, Tensor]:
        x, y = train_set.batch(bs, gen)
        return shift_augment(x, gen), y

    def loss_fn(model: torch.nn.Module, batch: tuple[Tensor, Tensor], gen: torch.Generator) -> Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    cfg = train_config_from_args(args, arch="digit_mlp_classifier", arch_config=arch_config)
    torch.manual_seed(args.seed)
    res = train(build("digit_mlp_classifier", **arch_config), loss_fn, batch_fn, cfg)
    metrics = {
        "test_accuracy": classifier_accuracy(res.ema_model, "test"),
        "train_accuracy": classifier_accuracy(res.ema_model, "train"),
    }
    ship(args, res.ema_model, "digit_mlp_classifier", arch_config, kind="classifier", metrics=metrics)
    return metrics


# -------------------------------------------------------------------------------------------------
# shared helpers of the student recipes
# -------------------------------------------------------------------------------------------------


def load_teacher(name: str, guidance: float) -> tuple[zoo.ZooModel, Denoiser]:
    """A class-conditional Gaussian zoo teacher and its (guided) denoiser; anything else -> ``teacher:`` error."""
    zm = zoo.load(name, kinds=("diffusion",), arg="teacher")
    if zm.null_class is None:
        raise ValueError(f"teacher: zoo model {name!r} is not class-conditional (no null_class in its JSON)")
    if tuple(zm.sample_shape) != SAMPLE_SHAPE:
        raise ValueError(f"teacher: expected a digits model of sample shape {SAMPLE_SHAPE}, got {zm.sample_shape}")
    den = zm.denoiser()
    return zm, (den if guidance == 1.0 else cfg_denoiser(den, guidance, torch.tensor([zm.null_class])))


def judge() -> torch.nn.Module | None:
    """The held-out MLP judge when it is shipped (``None`` before ``diffzoo train digits-judge-mlp``)."""
    return zoo.load(JUDGE, kinds=("classifier",)).model if JUDGE in zoo.names() else None


def balanced_labels(per_class: int) -> Tensor:
    return torch.arange(10).repeat_interleave(per_class)


@torch.no_grad()
def evaluate_samples(sample_fn: Callable[[Tensor, Tensor], Tensor], per_class: int = 50, seed: int = 0) -> dict:
    """FD-digits, held-out FD and conditional accuracy of ``sample_fn(noise, labels)`` on ``10 * per_class``
    class-balanced draws (``per_class = 0``: no evaluation)."""
    if per_class <= 0:
        return {}
    labels = balanced_labels(per_class)
    z = torch.randn(labels.shape[0], *SAMPLE_SHAPE, generator=torch.Generator().manual_seed(seed))
    x = sample_fn(z, labels).clamp(-1, 1)
    out = {"fd_digits": digits_fd(x), "cond_accuracy": digits_accuracy(x, labels), "eval_samples": len(labels)}
    j = judge()
    if j is not None:
        out["fd_judge"] = digits_fd(x, j)
    return out


def ship_generator(
    args: argparse.Namespace,
    res: Any,
    teacher: Any,
    arch: str,
    arch_config: dict,
    spec: dict,
    extra_metrics: dict | None = None,
) -> dict:
    """Evaluate the EMA student of ``res`` as the generator ``spec`` (:func:`evaluate_samples`), add the
    final loss and ``extra_metrics``, and ship it (kind ``generator``) with its teacher's null class."""
    metrics = evaluate_samples(lambda z, c: generate(res.ema_model.eval(), z, c, spec=spec), args.eval_per_class)
    metrics.update(extra_metrics or {})
    metrics["final_loss"] = final_loss(res, 50)
    ship(
        args,
        res.ema_model,
        arch,
        arch_config,
        kind="generator",
        sample_shape=SAMPLE_SHAPE,
        generator=spec,
        teacher=args.teacher,
        null_class=teacher.null_class,
        metrics=metrics,
    )
    return metrics


def ship_diffusion_student(
    args: argparse.Namespace,
    res: Any,
    teacher: zoo.ZooModel,
    arch: str,
    arch_config: dict,
    metrics: dict,
    teacher_name: str | None,
    loss_window: int = 50,
) -> dict:
    """Ship the EMA student of ``res`` as a diffusion model on ``teacher``'s schedule, prediction type and
    null class (kind ``diffusion``), with ``final_loss`` added to ``metrics``."""
    metrics["final_loss"] = final_loss(res, loss_window)
    ship(
        args,
        res.ema_model,
        arch,
        arch_config,
        kind="diffusion",
        schedule=teacher.config["schedule"],
        prediction_type=teacher.prediction_type,
        null_class=teacher.null_class,
        teacher=teacher_name,
        metrics=metrics,
    )
    return metrics


def _student_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default="digits-unet", help="zoo name of the teacher (kind diffusion)")
    p.add_argument("--guidance", type=float, default=2.0, help="the teacher's CFG scale (default %(default)s)")
    p.add_argument("--eval-per-class", type=int, default=50, help="evaluation samples per class (0 = none)")


def _labels(gen: torch.Generator, bs: int) -> Tensor:
    return torch.randint(10, (bs,), generator=gen)


# -------------------------------------------------------------------------------------------------
# BOOT
# -------------------------------------------------------------------------------------------------


def _boot_args(p: argparse.ArgumentParser) -> None:
    _student_args(p)
    p.add_argument("--grid-steps", type=int, default=16, help="DDIM grid of the Signal-ODE bootstrapping")
    p.add_argument("--weight", default="delta", choices=("delta", "none"), help="1/Delta^2 or uniform")
    p.add_argument("--boundary-weight", type=float, default=1.0)
    p.add_argument(
        "--clip-x0", type=float, default=1.0, help="clamp the teacher's x0 to [-c, c] in the targets (0 = exact DDIM)"
    )
    p.add_argument(
        "--student-ch", type=int, default=0, help="student width (0 = the teacher's arch, initialised from it)"
    )
    add_train_args(
        p, steps=2000, batch_size=64, lr=2e-4, warmup_steps=100, ema_decay=0.995, ckpt_every=250, log_every=50
    )


def _student_from_teacher(zm: zoo.ZooModel, ch: int) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """A trainable copy of the teacher (``ch = 0``) or a fresh DigitsUNet of width ``ch``."""
    if ch <= 0:
        return copy.deepcopy(zm.model).requires_grad_(True).train(), zm.config["arch"], dict(zm.config["arch_config"])
    cfg = {"ch": ch, "blocks": 1, "mults": [1, 2], "num_classes": 10, "emb_dim": 4 * ch}
    return build("digits_unet", **cfg), "digits_unet", cfg


@register_recipe("distill-boot", "BOOT: data-free one-step student by Signal-ODE bootstrapping", _boot_args)
def boot_recipe(args: argparse.Namespace) -> dict[str, Any]:
    zm, teacher = load_teacher(args.teacher, args.guidance)
    grid = boot_grid(teacher, args.grid_steps)
    torch.manual_seed(args.seed)
    student, arch, arch_config = _student_from_teacher(zm, args.student_ch)
    cfg = train_config_from_args(args, arch=arch, arch_config=arch_config, method="boot", teacher=args.teacher)

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> tuple[Tensor, Tensor]:
        return torch.randn(bs, *SAMPLE_SHAPE, generator=gen), _labels(gen, bs)  # noise and labels only

    def loss_fn(model: torch.nn.Module, batch: tuple[Tensor, Tensor], gen: torch.Generator) -> Tensor:
        eps, y = batch
        return boot_loss(
            model,
            teacher,
            eps,
            y,
            grid,
            gen,
            weight=args.weight,
            boundary_weight=args.boundary_weight,
            clip=args.clip_x0 if args.clip_x0 > 0 else None,
        )

    res = train(student, loss_fn, batch_fn, cfg)
    return ship_generator(args, res, zm, arch, arch_config, {"type": "signal", "time": float(grid[-1]), "steps": 1})


# -------------------------------------------------------------------------------------------------
# SlimFlow
# -------------------------------------------------------------------------------------------------


def _slimflow_args(p: argparse.ArgumentParser) -> None:
    _student_args(p)
    p.add_argument("--stage", choices=("reflow", "distill"), default="reflow")
    p.add_argument("--anneal-steps", type=int, default=0, help="reflow: K of beta = 1 - min(1, k/K); 0 = plain reflow")
    p.add_argument("--init", default=None, help="distill: zoo name of the (small) 2-rectified flow to start from")
    p.add_argument("--guided", action="store_true", help="distill: add the flow-guided 2-step term")
    p.add_argument("--student-ch", type=int, default=8, help="reflow: width of the small student (~1/4 params at 8)")
    p.add_argument("--pairs", type=int, default=2048, help="teacher noise -> sample pairs")
    p.add_argument("--pair-steps", type=int, default=25, help="DDIM steps of the teacher coupling")
    p.add_argument("--pairs-cache", default=None, help="safetensors cache of the pairs (default OUT_DIR/pairs)")
    add_train_args(
        p, steps=1500, batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995, ckpt_every=250, log_every=50
    )


def slim_unet_config(ch: int) -> dict[str, Any]:
    """A slim DigitsUNet on rectified-flow time ``t in [0, 1]`` (``time_scale`` 999 = the teacher's range)."""
    return {"ch": ch, "blocks": 1, "mults": [1, 2], "num_classes": 10, "emb_dim": 4 * ch, "time_scale": 999.0}


def coupling_pairs(teacher: Denoiser, n: int, steps: int, seed: int, cache: str | None) -> tuple[Tensor, ...]:
    """``(z0, z1, labels)``: ``n`` teacher pairs (class-balanced labels), cached in ``cache`` when given."""
    meta = {"n": n, "steps": steps, "seed": seed}
    if cache and Path(cache).is_file():
        t, m = read_safetensors(cache)
        if {k: m.get(k) for k in meta} == meta:
            return t["z0"], t["z1"], t["labels"]
        log.warning("%s: pairs of another configuration %s; regenerating", cache, m)
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, *SAMPLE_SHAPE, generator=g)
    labels = torch.arange(n) % 10
    z1 = teacher_pairs(teacher, z0, labels, steps).clamp(-1, 1)
    if cache:
        atomic_save_safetensors({"z0": z0, "z1": z1, "labels": labels}, cache, meta)
    return z0, z1, labels


def load_student(name: str, kinds: tuple[str, ...], arg: str) -> zoo.ZooModel:
    """A student checkpoint from the zoo; a wrong kind, or weights that do not fit the architecture its JSON
    names, is a one-line ``ValueError`` naming ``arg``."""
    try:
        return zoo.load(name, kinds=kinds, arg=arg)
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith(f"{arg}:") else f"{arg}: {e}") from None


@register_recipe(
    "distill-slimflow", "SlimFlow: annealing reflow / flow-guided distillation (small students)", _slimflow_args
)
def slimflow_recipe(args: argparse.Namespace) -> dict[str, Any]:
    zm, teacher = load_teacher(args.teacher, args.guidance)
    if args.stage == "distill" and not args.init:
        raise ValueError("init: --stage distill needs --init, the zoo name of a reflow student")
    cache = args.pairs_cache or (str(Path(args.out_dir) / "pairs.safetensors") if args.out_dir else None)
    z0s, z1s, ys = coupling_pairs(teacher, args.pairs, args.pair_steps, args.seed, cache)
    flow = None
    if args.stage == "reflow":
        arch, arch_config = "digits_unet", slim_unet_config(args.student_ch)
        torch.manual_seed(args.seed)
        student = build(arch, **arch_config)
    else:
        init = load_student(args.init, ("generator",), "init")
        if (init.config.get("generator") or {}).get("type") != "flow":
            raise ValueError(f"init: zoo model {args.init!r} is not a rectified-flow student")
        arch, arch_config = init.config["arch"], dict(init.config["arch_config"])
        flow = init.model
        student = copy.deepcopy(init.model).requires_grad_(True).train()
    cfg = train_config_from_args(
        args, arch=arch, arch_config=arch_config, method=f"slimflow-{args.stage}", teacher=args.teacher
    )

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        idx = torch.randint(z0s.shape[0], (bs,), generator=gen)
        return z0s[idx], z1s[idx], ys[idx], torch.tensor(step)

    def loss_fn(model: torch.nn.Module, batch: tuple[Tensor, ...], gen: torch.Generator) -> Tensor:
        z0, z1, y, step = batch
        if args.stage == "reflow":
            return reflow_loss(model, z0, z1, y, gen, anneal_beta(int(step), args.anneal_steps))
        return distill_loss(model, z0, z1, y, gen, flow=flow, guided=args.guided)

    res = train(student, loss_fn, batch_fn, cfg)
    extra = {}
    if args.stage == "reflow" and args.eval_per_class > 0:
        extra["straightness"] = straightness(res.ema_model, z0s[:256], z1s[:256], ys[:256])
    return ship_generator(args, res, zm, arch, arch_config, {"type": "flow", "steps": 1}, extra)


# -------------------------------------------------------------------------------------------------
# SIGN-style idempotent distillation (and the IGN baseline)
# -------------------------------------------------------------------------------------------------


def _sign_args(p: argparse.ArgumentParser) -> None:
    _student_args(p)
    p.add_argument("--method", choices=LOSSES, default="sign", help="sign: teacher-supervised; ign: adversarial")
    p.add_argument("--student-ch", type=int, default=16, help="width of the idempotent DigitsUNet f")
    p.add_argument("--teacher-steps", type=int, default=25, help="DDIM steps of the teacher's ODE endpoints")
    p.add_argument("--bank", type=int, default=4096, help="fixed noise bank (teacher endpoints computed once)")
    p.add_argument("--score-t-max", type=float, default=0.3, help="re-noising range of the score term")
    p.add_argument("--sample-steps", type=int, default=1, help="applications of f of the shipped generator")
    add_train_args(
        p, steps=600, batch_size=128, lr=5e-4, warmup_steps=0, ema_decay=0.995, grad_clip=0.0, ckpt_every=100
    )


@register_recipe("distill-sign", "SIGN-style idempotent generator distilled from the teacher (or IGN)", _sign_args)
def sign_recipe(args: argparse.Namespace) -> dict[str, Any]:
    zm, teacher = load_teacher(args.teacher, args.guidance)
    check_steps(args.sample_steps, "sample_steps")
    arch, arch_config = "digits_unet", idempotent_unet_config(args.student_ch, num_classes=10)
    torch.manual_seed(args.seed)
    f = build(arch, **arch_config)
    train_set = digits.load("train")
    bank = NoiseBank(
        train_set.batch,
        args.bank,
        torch.Generator().manual_seed(args.seed),
        teacher if args.method == "sign" else None,
        args.teacher_steps,
    )
    cfg = train_config_from_args(args, arch=arch, arch_config=arch_config, method=args.method, teacher=args.teacher)

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> tuple[Any, ...]:
        return (*train_set.batch(bs, gen), *bank.draw(bs, gen))

    def loss_fn(model: torch.nn.Module, batch: tuple[Any, ...], gen: torch.Generator) -> Tensor:
        x, cx, z, cz, target = batch
        return idempotent_loss(model, args.method, x, cx, z, cz, target, teacher, gen, args.score_t_max)

    groups = [{"params": list(f.parameters()), "lr_mult": 1.0, "betas": ADAM_BETAS}]
    res = train(f, loss_fn, batch_fn, cfg, param_groups=groups)
    spec = {"type": "idempotent", "steps": args.sample_steps, "method": args.method}
    return ship_generator(args, res, zm, arch, arch_config, spec)


# -------------------------------------------------------------------------------------------------
# MMD-DDM
# -------------------------------------------------------------------------------------------------


def _mmd_args(p: argparse.ArgumentParser) -> None:
    _student_args(p)
    p.add_argument("--tprime", type=int, default=5, help="T': DDIM steps of the fine-tuned sampler (>= 1)")
    p.add_argument("--features", default="digits-classifier", help="zoo classifier whose penultimate layer is phi")
    p.add_argument("--grad-checkpoint", action="store_true", help="recompute each DDIM step in the backward pass")
    add_train_args(
        p, steps=300, batch_size=64, lr=5e-6, warmup_steps=0, ema_decay=0.0, grad_clip=0.5, ckpt_every=50, log_every=10
    )


@torch.no_grad()
def ddim_eval(model: torch.nn.Module, zm: zoo.ZooModel, guidance: float, steps: int, per_class: int) -> dict:
    """The evaluation of :func:`evaluate_samples` for ``steps``-step DDIM of ``model`` (teacher-shaped)."""
    den = Denoiser(model.eval(), zm.schedule, zm.prediction_type)
    den = den if guidance == 1.0 else cfg_denoiser(den, guidance, torch.tensor([zm.null_class]))
    ts = get_timesteps(den.schedule, steps)
    return evaluate_samples(lambda z, c: ddim(den, z, ts, c), per_class)


@register_recipe("distill-mmd", "MMD-DDM: fine-tune the teacher through its T'-step DDIM chain", _mmd_args)
def mmd_recipe(args: argparse.Namespace) -> dict[str, Any]:
    zm, _ = load_teacher(args.teacher, args.guidance)
    check_steps(args.tprime, "tprime")
    phi = zoo.load(args.features, kinds=("classifier",), arg="features").model
    train_set = digits.load("train")
    student = copy.deepcopy(zm.model).requires_grad_(True).train()
    arch, arch_config = zm.config["arch"], dict(zm.config["arch_config"])
    cfg = train_config_from_args(
        args, arch=arch, arch_config=arch_config, method="mmd-ddm", teacher=args.teacher, tprime=args.tprime
    )
    ts = get_timesteps(zm.schedule, args.tprime)

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> tuple[Tensor, Tensor, Tensor]:
        real, _ = train_set.batch(bs, gen)
        return torch.randn(bs, *SAMPLE_SHAPE, generator=gen), _labels(gen, bs), real

    def loss_fn(model: torch.nn.Module, batch: tuple[Tensor, Tensor, Tensor], gen: torch.Generator) -> Tensor:
        noise, y, real = batch
        den = Denoiser(model, zm.schedule, zm.prediction_type)
        den = den if args.guidance == 1.0 else cfg_denoiser(den, args.guidance, torch.tensor([zm.null_class]))
        return mmd_ddm_loss(den, noise, y, ts, phi.features, real, grad_checkpoint=args.grad_checkpoint).float()

    res = train(student, loss_fn, batch_fn, cfg)
    metrics: dict[str, Any] = {"tprime": args.tprime}
    for steps in sorted({args.tprime, 50}):
        for who, net in (("teacher", zm.model), ("student", res.ema_model)):
            for k, v in ddim_eval(net, zm, args.guidance, steps, args.eval_per_class).items():
                metrics[f"{who}_ddim{steps}_{k}"] = v
    return ship_diffusion_student(args, res, zm, arch, arch_config, metrics, args.teacher, loss_window=20)


# -------------------------------------------------------------------------------------------------
# Spectral Diffusion (-style)
# -------------------------------------------------------------------------------------------------

SPECTRAL_ARMS = {
    "plain": {"wavelet": False, "distill": False},  # slim UNet, strided conv / nearest upsampling, L_DDPM
    "wavelet": {"wavelet": True, "distill": False},  # + wavelet gating, L_DDPM
    "spectral": {"wavelet": True, "distill": True},  # + spectrum-aware distillation from the teacher
}


def _spectral_args(p: argparse.ArgumentParser) -> None:
    _student_args(p)
    p.add_argument("--arm", choices=sorted(SPECTRAL_ARMS), default="spectral")
    p.add_argument("--student-ch", type=int, default=8)
    p.add_argument("--lambda-spatial", type=float, default=0.1)
    p.add_argument("--lambda-freq", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=-1.0, help="spectral weight exponent |F(x0)|^alpha")
    p.add_argument("--label-dropout", type=float, default=0.1)
    add_train_args(
        p, steps=1500, batch_size=64, lr=2e-3, warmup_steps=100, ema_decay=0.995, ckpt_every=250, log_every=50
    )


@register_recipe(
    "distill-spectral", "Spectral Diffusion-style: wavelet-gated slim UNet (+ spectral distill)", _spectral_args
)
def spectral_recipe(args: argparse.Namespace) -> dict[str, Any]:
    zm, _ = load_teacher(args.teacher, 1.0)
    teacher = zm.denoiser()
    arm = SPECTRAL_ARMS[args.arm]
    arch = "wavelet_unet"
    arch_config = {**slim_unet_config(args.student_ch), "time_scale": 1.0, "wavelet": arm["wavelet"]}
    torch.manual_seed(args.seed)
    student = build(arch, **arch_config)
    train_set = digits.load("train")
    lam_s, lam_f = (args.lambda_spatial, args.lambda_freq) if arm["distill"] else (0.0, 0.0)
    cfg = train_config_from_args(args, arch=arch, arch_config=arch_config, method=f"spectral-{args.arm}")

    def batch_fn(step: int, gen: torch.Generator, bs: int) -> tuple[Tensor, Tensor]:
        return train_set.batch(bs, gen)

    def loss_fn(model: torch.nn.Module, batch: tuple[Tensor, Tensor], gen: torch.Generator) -> Tensor:
        x, y = batch
        drop = torch.rand(y.shape[0], generator=gen) < args.label_dropout
        y = torch.where(drop, torch.full_like(y, zm.null_class), y)
        return spectral_distill_loss(
            model, teacher, x, y, gen, lambda_spatial=lam_s, lambda_freq=lam_f, alpha=args.alpha
        )

    res = train(student, loss_fn, batch_fn, cfg)
    metrics = ddim_eval(res.ema_model, zm, args.guidance, 25, args.eval_per_class)
    teacher_name = args.teacher if arm["distill"] else None
    return ship_diffusion_student(args, res, zm, arch, arch_config, metrics, teacher_name)
