"""Training recipes of the shapes world: ``diffzoo train tinysd-vae | tinysd-unet | shapes-classifier``.

TinySD is trained in Stable Diffusion's two stages (Rombach et al. 2022, Sec. 3):

1. ``tinysd-vae``: the ``AutoencoderKL`` on rendered scenes, loss ``||D(z) - x||^2 + w_KL KL(q(z|x) || N(0, I))``
   with ``z ~ q(z|x)`` (a small KL weight, as SD's KL-regularised autoencoder); afterwards the latent
   scale ``s = 1 / std(mean(E(x)))`` over a fixed set of scenes (SD's ``scaling_factor``, Sec. 4.3.2).
2. ``tinysd-unet``: the UNet and the text encoder jointly, on frozen VAE latents ``z0 = s mean(E(x))``
   of training captions (held-out (colour, shape, position) triples never seen), with DDPM's epsilon
   loss ``||eps - eps_theta(alpha_t z0 + sigma_t eps, t, tau(c))||^2``, ``t ~ U{0..999}`` on SD's
   scaled-linear schedule and the caption replaced by ``""`` with probability 10% (classifier-free
   guidance, Ho & Salimans 2022, Sec. 3.2).

``shapes-classifier`` trains :class:`~diffzoo.models.tinysd.ShapesClassifier` on rendered scenes with
noise/blur/colour-jitter augmentation (so it also reads decoded samples).

All three take the shared options of :func:`~diffzoo.recipes.registry.add_train_args` and run through
:func:`diffzoo.train.train` (resumable safetensors checkpoints in ``--out-dir``). ``tinysd-vae`` writes its
VAE to ``OUT_DIR/vae.safetensors`` (a component file, never the zoo); ``tinysd-unet`` and
``shapes-classifier`` ship to the zoo with ``--zoo-name NAME`` only, with the exact command (for
``tinysd``: the VAE's recorded commands ``&&`` this one), seed, steps and metrics in the JSON.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from diffzoo import zoo
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.random import generators_from_seeds, randn
from diffzoo.data import shapes
from diffzoo.io import atomic_save_safetensors, read_safetensors, save_grid
from diffzoo.models.tinysd import ShapesClassifier, TinySD, scene_correct, tinysd_schedule
from diffzoo.recipes.registry import (
    add_train_args,
    command_line,
    final_loss,
    register_recipe,
    ship,
    train_config_from_args,
)
from diffzoo.sampling.ddim import ddim
from diffzoo.sampling.timesteps import get_timesteps
from diffzoo.train.trainer import train
from diffzoo.zoo.latent import latent_model

log = logging.getLogger(__name__)
Tensor = torch.Tensor


# -------------------------------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------------------------------


def scene_batch(
    generator: torch.Generator, batch_size: int, split: str = "all", heldout_fraction: float = 0.1
) -> list[shapes.Scene]:
    """``batch_size`` random scenes of ``split`` drawn with ``generator`` (rejection on the split)."""
    out: list[shapes.Scene] = []
    while len(out) < batch_size:
        s = shapes.random_scene(generator)
        if split == "all" or shapes.is_heldout(shapes.caption(s), heldout_fraction) == (split == "heldout"):
            out.append(s)
    return out


def augment(img: Tensor, generator: torch.Generator) -> Tensor:
    """Classifier augmentation: random 3x3 box blur mix, per-image brightness/contrast jitter and
    Gaussian noise of std U(0, 0.2) (images in [-1, 1]); rendered scenes stay the labels' truth."""
    b = img.shape[0]
    u = torch.rand(b, 4, generator=generator)
    blur = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    w = (u[:, 0] * 0.7).view(b, 1, 1, 1)
    x = (1 - w) * img + w * blur
    x = x * (0.85 + 0.3 * u[:, 1]).view(b, 1, 1, 1) + (u[:, 2] - 0.5).view(b, 1, 1, 1) * 0.2
    x = x + (0.2 * u[:, 3]).view(b, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    return x.clamp(-1, 1)


# -------------------------------------------------------------------------------------------------
# Losses
# -------------------------------------------------------------------------------------------------


def vae_loss(vae: torch.nn.Module, batch: Tensor, generator: torch.Generator, kl_weight: float) -> Tensor:
    """``mean ||D(z) - x||^2 + kl_weight * mean KL(q(z|x) || N(0, I))`` with ``z = mu + std * n``."""
    post = vae.encode(batch).latent_dist
    z = post.mean + post.std * randn(post.mean.shape, generator, post.mean.dtype).to(batch.device)
    rec = vae.decode(z).sample
    kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar)
    return F.mse_loss(rec, batch) + kl_weight * kl.mean()


def unet_loss(model: TinySD, batch: dict[str, Any], generator: torch.Generator, p_uncond: float) -> Tensor:
    """DDPM epsilon loss on latents with caption dropout (``""`` with probability ``p_uncond``)."""
    z0 = batch["latents"]
    b = z0.shape[0]
    sched = tinysd_schedule()
    t = torch.randint(0, sched.num_train_timesteps, (b,), generator=generator)
    a, s = sched.alpha_sigma(t.to(torch.float64))
    eps = randn(z0.shape, generator, z0.dtype).to(z0.device)
    zt = a.to(z0).view(b, 1, 1, 1) * z0 + s.to(z0).view(b, 1, 1, 1) * eps
    drop = (torch.rand(b, generator=generator) < p_uncond).tolist()
    prompts = ["" if d else c for d, c in zip(drop, batch["captions"])]
    cond = model.encode_text(prompts)
    return F.mse_loss(model(zt, t.to(z0.device), cond), eps)


def classifier_loss(clf: ShapesClassifier, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
    out = clf(augment(batch["images"], generator))
    return F.cross_entropy(out["cells"].flatten(0, 1), batch["cells"].flatten()) + F.cross_entropy(
        out["background"], batch["background"]
    )


# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------


def _train_args(
    p: argparse.ArgumentParser, steps: int, batch_size: int, lr: float, out_dir: str, ema_decay: float
) -> None:
    """The shared options with this file's defaults (warm-up 100, checkpoints every 200 steps, log every 50)."""
    add_train_args(
        p,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=0.0,
        warmup_steps=100,
        ema_decay=ema_decay,
        grad_clip=1.0,
        ckpt_every=200,
        log_every=50,
        out_dir=out_dir,
    )


def save_component(path: str | Path, module: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``module``'s state dict (+ JSON meta in the header) atomically as safetensors."""

    return atomic_save_safetensors(dict(module.state_dict()), path, meta)


def load_component(path: str | Path, module: torch.nn.Module) -> dict[str, Any]:
    """Load a :func:`save_component` file into ``module`` (strict); returns its JSON meta."""

    tensors, meta = read_safetensors(path)
    module.load_state_dict(tensors, strict=True)
    return meta


# -------------------------------------------------------------------------------------------------
# Recipe: tinysd-vae
# -------------------------------------------------------------------------------------------------


def _vae_args(p: argparse.ArgumentParser) -> None:
    _train_args(p, steps=2000, batch_size=32, lr=1e-3, out_dir="runs/tinysd-vae", ema_decay=0.99)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument(
        "--decoder-only-from",
        default=None,
        help="stage-1 VAE file: fine-tune only its decoder (encoder, latents and scale unchanged), "
        "as SD's ft-MSE decoder; the UNet trained on its latents stays valid",
    )


@torch.no_grad()
def latent_scale(vae: torch.nn.Module, n: int = 512, seed: int = 12345) -> float:
    """``1 / std`` of posterior-mean latents of ``n`` fixed scenes (SD's scaling_factor recipe)."""
    imgs = shapes.render_batch(shapes.random_scenes(n, seed))
    z = torch.cat([vae.encode(imgs[i : i + 128]).latent_dist.mean for i in range(0, n, 128)])
    return float(1.0 / z.std())


@torch.no_grad()
def reconstruction_psnr(vae: torch.nn.Module, n: int = 256, seed: int = 999) -> float:
    """Mean PSNR (dB, images in [0, 1]) of ``D(mean E(x))`` on ``n`` fresh scenes."""
    imgs = shapes.render_batch(shapes.random_scenes(n, seed))
    rec = torch.cat(
        [vae.decode(vae.encode(imgs[i : i + 128]).latent_dist.mean).sample.clamp(-1, 1) for i in range(0, n, 128)]
    )
    mse = ((rec - imgs) / 2).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp(min=1e-12))).mean())


@register_recipe("tinysd-vae", "TinySD stage 1: AutoencoderKL 32x32x3 -> 8x8x4 on shapes scenes", _vae_args)
def train_tinysd_vae(args: argparse.Namespace) -> dict:

    if args.zoo_name:
        raise ValueError(
            "zoo-name: tinysd-vae writes its VAE to OUT_DIR/vae.safetensors, not to the zoo; ship "
            "the text-to-image model with `diffzoo train tinysd-unet --vae FILE --zoo-name NAME`"
        )
    kl_w = float(args.kl_weight)
    cfg = train_config_from_args(args, recipe="tinysd-vae", kl_weight=kl_w)
    model = TinySD()
    vae = model.vae
    base_meta: dict[str, Any] | None = None
    if args.decoder_only_from:
        base_meta = load_component(args.decoder_only_from, vae)
        for mod in (vae.encoder, vae.quant_conv):
            mod.requires_grad_(False)

    def sample_batch(step: int, g: torch.Generator, bs: int) -> Tensor:
        return shapes.render_batch(scene_batch(g, bs))

    t0 = time.time()
    res = train(vae, lambda m, b, g: vae_loss(m, b, g, kl_w), sample_batch, cfg)
    ema = res.ema_model.eval()
    scale = latent_scale(ema) if base_meta is None else float(base_meta["scaling_factor"])
    metrics = dict(
        recon_psnr_db=round(reconstruction_psnr(ema), 3),
        scaling_factor=scale,
        steps=res.step,
        final_loss=final_loss(res, 50),
        wall_s=round(time.time() - t0, 1),
    )
    cmd = command_line() if base_meta is None else f"{base_meta.get('train_command', '')} && {command_line()}"
    meta = dict(
        stage="tinysd-vae" if base_meta is None else "tinysd-vae (decoder fine-tuned)",
        config=model.config["vae"],
        scaling_factor=scale,
        seed=args.seed,
        steps=res.step,
        train_command=cmd,
        metrics=metrics,
        base_metrics=(base_meta or {}).get("metrics"),
    )
    save_component(Path(args.out_dir) / "vae.safetensors", ema, meta)
    log.info("tinysd-vae: %s", metrics)
    return metrics


# -------------------------------------------------------------------------------------------------
# Recipe: tinysd-unet
# -------------------------------------------------------------------------------------------------


def _unet_args(p: argparse.ArgumentParser) -> None:
    _train_args(p, steps=6000, batch_size=64, lr=5e-4, out_dir="runs/tinysd-unet", ema_decay=0.999)
    p.add_argument("--vae", default="runs/tinysd-vae/vae.safetensors", help="stage-1 VAE file")
    p.add_argument("--p-uncond", type=float, default=0.1, help="caption dropout probability (CFG)")
    p.add_argument("--bank", type=int, default=40000, help="training scenes (latents precomputed once)")
    p.add_argument("--unet-channels", type=int, nargs="+", default=[48, 96])
    p.add_argument("--eval-n", type=int, default=200, help="held-out captions sampled for the metric")
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--classifier", default="shapes-classifier", help="zoo name of the attribute classifier")
    p.add_argument("--png", default=None, help="write held-out truth/sample pairs to this PNG")
    p.add_argument(
        "--decoder",
        default=None,
        help="a decoder-fine-tuned VAE file (same encoder) to ship instead of --vae's decoder",
    )


@torch.no_grad()
def latent_bank(model: TinySD, n: int, seed: int) -> dict[str, Any]:
    """``n`` training-split scenes (no held-out triple): captions and latents ``s mean(E(x))``."""
    g = torch.Generator().manual_seed(int(seed))
    scenes = scene_batch(g, n, split="train")
    caps = [shapes.caption(s) for s in scenes]
    lat = []
    for i in range(0, n, 256):
        lat.append(model.encode_latents(shapes.render_batch(scenes[i : i + 256])))
    return dict(captions=caps, latents=torch.cat(lat))


@register_recipe(
    "tinysd-unet", "TinySD stage 2: UNet + CLIP text encoder on frozen VAE latents (eps, CFG dropout)", _unet_args
)
def train_tinysd_unet(args: argparse.Namespace) -> dict:

    p_uncond = float(args.p_uncond)
    cfg = train_config_from_args(args, recipe="tinysd-unet", p_uncond=p_uncond, vae=str(args.vae), bank=args.bank)
    if not Path(args.vae).is_file():
        raise FileNotFoundError(
            f"vae: no such file {args.vae!r} (train it first: `diffzoo train tinysd-vae "
            "--out-dir DIR` writes DIR/vae.safetensors)"
        )
    model = TinySD(unet=dict(block_out_channels=tuple(args.unet_channels)))
    vmeta = load_component(args.vae, model.vae)
    model.scaling_factor.fill_(float(vmeta["scaling_factor"]))
    model.vae.requires_grad_(False).eval()
    bank: dict[str, Any] = {}

    def sample_batch(step: int, g: torch.Generator, bs: int) -> dict[str, Any]:
        if not bank:  # built on first use: a finished run resumed for export/evaluation skips it
            bank.update(latent_bank(model, args.bank, seed=args.seed + 1))
        idx = torch.randint(len(bank["captions"]), (bs,), generator=g)
        return dict(latents=bank["latents"][idx], captions=[bank["captions"][int(i)] for i in idx])

    t0 = time.time()
    res = train(model, lambda m, b, g: unet_loss(m, b, g, p_uncond), sample_batch, cfg)
    ema = res.ema_model.eval()
    if args.decoder:
        vmeta = swap_decoder(ema, args.decoder)
    metrics: dict[str, Any] = dict(
        steps=res.step,
        final_loss=final_loss(res),
        train_wall_s=round(time.time() - t0, 1),
        vae=vmeta.get("metrics"),
    )
    if args.eval_n > 0:
        metrics.update(
            evaluate_tinysd(
                ema,
                classifier_name=args.classifier,
                n=args.eval_n,
                num_steps=args.eval_steps,
                guidance=args.guidance,
                seed=args.seed,
                png=args.png,
            )
        )
    sch = tinysd_schedule()
    ship(
        args,
        ema,
        "tinysd",
        tinysd_arch_config(model),
        kind="latent-diffusion",
        steps=res.step,
        train_command="diffzoo train tinysd-vae " + _vae_command(vmeta) + " && " + command_line(),
        schedule=dict(name="scaled_linear", kwargs=dict(final_alpha_cumprod=sch.final_alpha_cumprod)),
        prediction_type="epsilon",
        scaling_factor=float(ema.scaling_factor),
        metrics=metrics,
    )
    log.info("tinysd-unet: %s", metrics)
    return metrics


def swap_decoder(model: TinySD, path: str) -> dict[str, Any]:
    """Load a decoder-fine-tuned VAE into ``model`` after checking its encoder is bit-identical (so
    the UNet's latents are unchanged); returns the file's meta."""

    tensors, meta = read_safetensors(path)
    own = model.vae.state_dict()
    enc = [k for k in own if k.startswith(("encoder.", "quant_conv."))]
    changed = [k for k in enc if not torch.equal(own[k], tensors[k])]
    if changed:
        raise ValueError(f"decoder: {path} has a different encoder ({changed[0]} ...); the UNet's latents would change")
    model.vae.load_state_dict(tensors, strict=True)
    return meta


def _vae_command(vmeta: dict[str, Any]) -> str:
    cmd = str(vmeta.get("train_command", ""))
    return cmd.split("diffzoo train tinysd-vae", 1)[-1].strip() if "tinysd-vae" in cmd else ""


def tinysd_arch_config(model: TinySD) -> dict[str, Any]:
    """The JSON-ready ``arch_config`` of a TinySD (what :func:`diffzoo.zoo.load` rebuilds it from)."""
    c = model.config
    out = dict(
        vae={k: list(v) if isinstance(v, tuple) else v for k, v in c["vae"].items()},
        unet={k: list(v) if isinstance(v, tuple) else v for k, v in c["unet"].items()},
        text=dict(c["text"]),
        max_length=c["max_length"],
    )
    if c.get("extra_words"):
        out["extra_words"] = list(c["extra_words"])
    return out


# -------------------------------------------------------------------------------------------------
# Evaluation: held-out captions -> DDIM + CFG samples -> classifier
# -------------------------------------------------------------------------------------------------


def heldout_captions(n: int, seed: int = 2024) -> list[shapes.Scene]:
    """``n`` deterministic held-out scenes (each has a (colour, shape, position) triple never trained on)."""
    g = torch.Generator().manual_seed(int(seed))
    return scene_batch(g, n, split="heldout")


@torch.no_grad()
def sample_tinysd(
    model: TinySD, prompts: Sequence[str], num_steps: int = 50, guidance: float = 5.0, seed: int = 0, batch: int = 50
) -> Tensor:
    """Images (B, 3, 32, 32) in [-1, 1] for ``prompts``: DDIM (eta 0, ``num_steps`` uniform steps)
    with classifier-free guidance ``guidance`` on the null prompt, per-sample seeds ``seed + i``."""

    lm = latent_model(model)
    den = cfg_denoiser(lm.denoiser(), guidance, lm.null_embedding(1))
    ts = get_timesteps(lm.schedule, num_steps, "leading", steps_offset=1)
    out = []
    for i in range(0, len(prompts), batch):
        ps = list(prompts[i : i + batch])
        cond = lm.encode_prompt(ps)
        x = randn(
            lm.latent_shape(len(ps), shapes.SIZE, shapes.SIZE),
            generators_from_seeds(range(seed + i, seed + i + len(ps))),
        )
        out.append(lm.decode(ddim(den, x, ts, cond)))
    return torch.cat(out)


@torch.no_grad()
def evaluate_tinysd(
    model: TinySD,
    classifier_name: str = "shapes-classifier",
    n: int = 200,
    num_steps: int = 50,
    guidance: float = 5.0,
    seed: int = 0,
    classifier: ShapesClassifier | None = None,
    png: str | None = None,
) -> dict[str, Any]:
    """Fraction of held-out-caption samples the attribute classifier finds fully correct (every grid
    cell's shape+colour or emptiness, and the background), overall and per object count; also the
    same criterion on VAE reconstructions of the true scenes (the ceiling the decoder allows).
    ``png``: write the first 16 ground-truth renders (top row) above their samples (bottom row)."""
    if classifier is None:
        classifier = zoo.load(classifier_name).model
    classifier = classifier.eval()
    scenes = heldout_captions(n)
    t0 = time.time()
    imgs = sample_tinysd(model, [shapes.caption(s) for s in scenes], num_steps, guidance, seed)
    ok = scene_correct(classifier.predict(imgs), scenes)
    ok_obj = scene_correct(classifier.predict(imgs), scenes, background=False)
    counts = torch.tensor([len(s.objects) for s in scenes])
    lm = latent_model(model)
    recon = lm.decode(lm.encode_image(shapes.render_batch(scenes)))
    recon_ok = scene_correct(classifier.predict(recon), scenes)
    res: dict[str, Any] = dict(
        heldout_correct=float(ok.float().mean()),
        heldout_objects_correct=float(ok_obj.float().mean()),
        eval_n=n,
        guidance=guidance,
        num_steps=num_steps,
        eval_sampler=f"ddim {num_steps} steps (leading, offset 1), cfg {guidance}",
        first16_correct=ok[:16].tolist(),
        eval_wall_s=round(time.time() - t0, 1),
        vae_recon_correct=float(recon_ok.float().mean()),
    )
    if png:
        save_grid(torch.cat([shapes.render_batch(scenes[:16]), imgs[:16]]), png, nrow=16, pad=0)
    for k in (1, 2, 3):
        sel = counts == k
        if bool(sel.any()):
            res[f"heldout_correct_{k}obj"] = float(ok[sel].float().mean())
    return res


# -------------------------------------------------------------------------------------------------
# Recipe: shapes-classifier
# -------------------------------------------------------------------------------------------------


def _clf_args(p: argparse.ArgumentParser) -> None:
    _train_args(p, steps=1500, batch_size=64, lr=2e-3, out_dir="runs/shapes-classifier", ema_decay=0.99)
    p.add_argument("--width", type=int, default=16)


@torch.no_grad()
def classifier_accuracy(
    clf: ShapesClassifier, n: int = 2000, seed: int = 4242, augmented: bool = False
) -> dict[str, float]:
    """Accuracy on ``n`` fresh rendered scenes: per cell, per background, and whole scene."""
    g = torch.Generator().manual_seed(seed)
    scenes = shapes.random_scenes(n, seed)
    imgs = shapes.render_batch(scenes)
    if augmented:
        imgs = augment(imgs, g)
    pred = {
        k: torch.cat([clf.predict(imgs[i : i + 500])[k] for i in range(0, n, 500)]) for k in ("cells", "background")
    }
    want = torch.stack([shapes.labels(s)["cells"] for s in scenes])
    bg = torch.tensor([shapes.BACKGROUNDS.index(s.background) for s in scenes])
    return dict(
        cell_acc=float((pred["cells"] == want).float().mean()),
        background_acc=float((pred["background"] == bg).float().mean()),
        scene_acc=float(scene_correct(pred, scenes).float().mean()),
    )


@register_recipe(
    "shapes-classifier", "CNN attribute classifier (per-cell shape+colour, background) for shapes scenes", _clf_args
)
def train_shapes_classifier(args: argparse.Namespace) -> dict:

    cfg = train_config_from_args(args, recipe="shapes-classifier")
    clf = ShapesClassifier(width=args.width)

    def sample_batch(step: int, g: torch.Generator, bs: int) -> dict[str, Tensor]:
        scenes = scene_batch(g, bs)
        lab = [shapes.labels(s) for s in scenes]
        return dict(
            images=shapes.render_batch(scenes),
            cells=torch.stack([x["cells"] for x in lab]),
            background=torch.stack([x["background"] for x in lab]),
        )

    t0 = time.time()
    res = train(clf, classifier_loss, sample_batch, cfg)
    ema = res.ema_model.eval()
    metrics = dict(
        clean=classifier_accuracy(ema),
        augmented=classifier_accuracy(ema, augmented=True),
        steps=res.step,
        wall_s=round(time.time() - t0, 1),
    )
    ship(args, ema, "shapes-classifier", dict(width=args.width), kind="classifier", steps=res.step, metrics=metrics)
    return metrics
