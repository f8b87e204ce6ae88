"""``diffzoo sample``: draw samples from a zoo model with any sampler; write a PNG and/or the tensors.

Example::

    diffzoo sample digits-unet --sampler dpmpp_2m --steps 20 --guidance 2 --class-label all -n 64 \\
        --seed 0 --out samples.png --out samples.safetensors

Sample ``i`` uses its own generator seeded ``seed * 1_000_003 + i`` (batch-invariant: the first 16 of 64
samples equal a run with ``-n 16``). ``--out`` may repeat; the format follows the suffix: ``.png``
(an image grid, or a scatter plot for 2-D points), ``.npz`` or ``.safetensors`` (keys ``samples``
and, for conditional models, ``labels``).

Masked (discrete) zoo models (``prediction_type == "masked-x0-logits"``, e.g. ``masked-digits``) take
the samplers ``fhs`` (default; first-hitting, one network call per token, or ``ceil(L / steps)`` tokens
per call when ``--steps`` is given), ``ancestral`` (``--steps`` steps, float64, cached) or ``confidence``
(MaskGIT, ``--steps`` calls); ``--steps`` defaults to the sequence length. ``samples`` are then the
integer token ids ``(B, L)``; ``images`` (``(B, C, H, W)`` in ``[-1, 1]``, decoded by the model's token
space) are saved beside them and drawn in the PNG::

    diffzoo sample masked-digits --sampler fhs -n 64 --seed 0 --out samples.png --out samples.safetensors
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.random import generators_from_seeds
from diffzoo.discrete.samplers import SAMPLERS as MASKED_SAMPLERS
from diffzoo.discrete.samplers import CallCounter, ancestral_sample, confidence_sample, first_hitting_sample
from diffzoo.sampling import SAMPLERS, SPACINGS, STOCHASTIC, get_timesteps, initial_noise, sample

log = logging.getLogger(__name__)
Tensor = torch.Tensor
OUT_SUFFIXES = (".png", ".npz", ".safetensors")
SEED_STRIDE = 1_000_003
MASKED_PREDICTION = "masked-x0-logits"
GAUSSIAN_STEPS = 20


@dataclass
class SampleResult:
    samples: Tensor
    labels: Tensor | None
    nfe: int
    images: Tensor | None = None    # masked models: the decoded token images (B, C, H, W) in [-1, 1]
    seconds: float = 0.0            # wall time of the sampling loop


def is_masked(config: dict[str, Any]) -> bool:
    """Whether a zoo config describes a masked (discrete) diffusion model."""
    return config.get("prediction_type") == MASKED_PREDICTION


def check_sampler(sampler: str, masked: bool) -> None:
    """Masked models take the discrete samplers, Gaussian ones the continuous samplers."""
    valid = MASKED_SAMPLERS if masked else tuple(SAMPLERS)
    if sampler not in valid:
        kind = "a masked (discrete)" if masked else "a Gaussian"
        raise ValueError(f"sampler: {sampler!r} cannot sample {kind} model; expected one of {sorted(valid)}")


def sample_shape(config: dict[str, Any]) -> tuple[int, ...]:
    """The shape of one sample of a zoo model: ``config['sample_shape']``, else from its architecture."""
    if config.get("sample_shape"):
        return tuple(int(v) for v in config["sample_shape"])
    arch, ac = config.get("arch"), config.get("arch_config", {})
    if arch == "mlp":
        return (int(ac.get("dim", 2)),)
    if arch == "digits_unet":
        return (int(ac.get("in_ch", 1)), 8, 8)
    raise ValueError(f"shape: cannot infer the sample shape of arch {arch!r}; pass --shape")


def seeds_for(seed: int, n: int) -> list[int]:
    """Per-sample seeds of a run (sample ``i`` of seed ``s`` always gets the same noise)."""
    return [seed * SEED_STRIDE + i for i in range(n)]


def class_labels(spec: str | None, n: int, num_classes: int | None) -> Tensor | None:
    """``None``; ``"all"`` (0, 1, ..., cycling through the classes) or one integer label for every sample."""
    if spec is None:
        return None
    if num_classes is None:
        raise ValueError("class_label: this model is not class-conditional (no null_class in its config)")
    if spec == "all":
        return torch.arange(n) % num_classes
    try:
        k = int(spec)
    except ValueError:
        raise ValueError(f"class_label: expected an integer or 'all', got {spec!r}") from None
    if not 0 <= k < num_classes:
        raise ValueError(f"class_label: expected a value in [0, {num_classes - 1}], got {k}")
    return torch.full((n,), k, dtype=torch.long)


def guided(den: Denoiser, guidance: float, null_class: int | None, labels: Tensor | None) -> Denoiser:
    """The denoiser with classifier-free guidance ``guidance`` (1 = none) toward ``labels``."""
    if guidance == 1.0:
        return den
    if labels is None or null_class is None:
        raise ValueError("guidance: classifier-free guidance needs a class-conditional model and --class-label")
    return cfg_denoiser(den, guidance, torch.tensor([null_class]))


@torch.no_grad()
def draw(den: Denoiser, shape: Sequence[int], n: int, sampler: str, steps: int, spacing: str = "uniform",
         seed: int = 0, cond: Any = None, dtype: torch.dtype = torch.float32, progress: bool = False,
         **kwargs: Any) -> Tensor:
    """``n`` samples of ``shape`` from ``den`` with a named sampler, per-sample seeded."""
    ts = get_timesteps(den.schedule, steps, spacing)
    x = initial_noise(den, (n, *shape), ts, generators_from_seeds(seeds_for(seed, n)), dtype)
    gens = generators_from_seeds([s + SEED_STRIDE // 2 for s in seeds_for(seed, n)]) if sampler in STOCHASTIC \
        or kwargs.get("eta", 0) > 0 else None
    return sample(sampler, den, x, ts, cond, generator=gens, progress=progress, **kwargs)


def decode_tokens(model: Any, x: Tensor) -> Tensor:
    """Token ids ``(B, L)`` of a masked model -> images ``(B, C, H, W)`` in ``[-1, 1]`` (its token space:
    pixel levels for digits, the patch-VQ codebook for shapes)."""
    from diffzoo.discrete.tokens import token_space

    return token_space(model).decode(x)


@torch.no_grad()
def draw_masked(model: Any, n: int, sampler: str, steps: int | None = None, seed: int = 0) -> tuple[Tensor, int]:
    """``n`` token sequences from a masked model with a discrete sampler, per-sample seeded; returns
    ``(tokens (n, L), NFE)``. ``steps`` (default ``L``): ancestral / confidence steps; for ``fhs`` the
    number of network calls (``ceil(L / steps)`` tokens per call; ``L`` calls = the exact sampler)."""
    check_sampler(sampler, masked=True)
    length = int(model.seq_len)
    steps = length if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    gens = generators_from_seeds(seeds_for(seed, n))
    counter = CallCounter(model)
    if sampler == "fhs":
        x = first_hitting_sample(counter, n, generator=gens, tokens_per_step=math.ceil(length / steps))
    elif sampler == "ancestral":
        x = ancestral_sample(counter, n, steps, generator=gens)
    else:
        x = confidence_sample(counter, n, steps, generator=gens)
    return x, counter.nfe


def sample_masked(zm: Any, sampler: str | None = None, steps: int | None = None, guidance: float = 1.0,
                  class_label: str | None = None, n: int = 16, seed: int = 0, eta: float | None = None,
                  shape: Sequence[int] | None = None, spacing: str = "uniform") -> SampleResult:
    """Sample a loaded masked zoo model (options that only Gaussian models take are refused)."""
    sampler = sampler or "fhs"
    check_sampler(sampler, masked=True)
    if guidance != 1.0:
        raise ValueError("guidance: masked models take no classifier-free guidance (they are unconditional)")
    if class_label is not None:
        raise ValueError("class_label: masked models are unconditional; drop --class-label")
    if eta is not None:
        raise ValueError("eta: only the Gaussian ddim sampler takes eta")
    if shape:
        raise ValueError("shape: the sample shape of a masked model is fixed by its seq_len")
    if spacing != "uniform":
        raise ValueError("spacing: masked samplers use their own time grids; drop --spacing")
    t0 = time.perf_counter()
    x, nfe = draw_masked(zm.model, n, sampler, steps, seed)
    seconds = time.perf_counter() - t0
    return SampleResult(x, None, nfe, images=decode_tokens(zm.model, x), seconds=seconds)


def sample_zoo(name: str, sampler: str | None = None, steps: int | None = None, spacing: str = "uniform",
               guidance: float = 1.0, class_label: str | None = None, n: int = 16, seed: int = 0,
               eta: float | None = None, shape: Sequence[int] | None = None, progress: bool = False) -> SampleResult:
    """Load zoo model ``name`` and draw ``n`` samples (see the module docstring).

    ``sampler`` defaults to ``"dpmpp_2m"`` (Gaussian models) or ``"fhs"`` (masked models); ``steps`` to
    20 (Gaussian) or the sequence length (masked).
    """
    from diffzoo import zoo

    zm = zoo.load(name)
    if is_masked(zm.config):
        return sample_masked(zm, sampler, steps, guidance, class_label, n, seed, eta, shape, spacing)
    sampler = sampler or "dpmpp_2m"
    check_sampler(sampler, masked=False)
    steps = GAUSSIAN_STEPS if steps is None else steps
    null = zm.config.get("null_class")
    labels = class_labels(class_label, n, null)
    den = guided(zm.denoiser(), guidance, null, labels)
    kw = {} if eta is None else {"eta": eta}
    if eta is not None and sampler != "ddim":
        raise ValueError("eta: only the ddim sampler takes eta")
    before = den.nfe
    t0 = time.perf_counter()
    x = draw(den, tuple(shape) if shape else sample_shape(zm.config), n, sampler, steps, spacing, seed, labels,
             progress=progress, **kw)
    return SampleResult(x, labels, den.nfe - before, seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ output
def image_grid(x: Tensor, nrow: int | None = None, pad: int = 1, scale: int = 4) -> Any:
    """A PIL image tiling ``(B, C, H, W)`` samples in ``[-1, 1]`` (C = 1 or 3)."""
    from PIL import Image

    b, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"samples: a PNG grid needs 1 or 3 channels, got {c}")
    nrow = nrow or max(1, round(b ** 0.5))
    rows = (b + nrow - 1) // nrow
    canvas = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    img = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2)
    for i in range(b):
        r, k = divmod(i, nrow)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = img[i]
    arr = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if c == 1 else arr)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def scatter_png(x: Tensor, size: int = 400, lim: float | None = None) -> Any:
    """A PIL scatter plot of 2-D points."""
    from PIL import Image, ImageDraw

    p = x.detach().double().cpu()
    lim = lim or float(p.abs().max().clamp(min=1e-6)) * 1.05
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    uv = ((p / lim + 1) / 2 * (size - 1)).tolist()
    for u, v in uv:
        d.ellipse((u - 1, size - 2 - v, u + 1, size - v), fill=(20, 60, 160))
    return img


def save_samples(path: str | Path, samples: Tensor, labels: Tensor | None = None,
                 images: Tensor | None = None) -> Path:
    """Write samples by suffix: ``.png``, ``.npz`` or ``.safetensors``.

    ``images`` (masked models: the decoded tokens, ``(B, C, H, W)``) is what the PNG draws, and is
    stored beside ``samples`` (the token ids) in the tensor files.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise ValueError(f"out: unsupported file type {path.suffix!r}; expected one of {list(OUT_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        if images is not None:
            image_grid(images).save(path)
        elif samples.ndim == 4:
            image_grid(samples).save(path)
        elif samples.ndim == 2 and samples.shape[1] == 2:
            scatter_png(samples).save(path)
        else:
            raise ValueError(f"out: cannot draw samples of shape {tuple(samples.shape)} as a PNG; use .npz")
    elif suffix == ".npz":
        import numpy as np

        arrays = {"samples": samples.detach().cpu().numpy()}
        if labels is not None:
            arrays["labels"] = labels.cpu().numpy()
        if images is not None:
            arrays["images"] = images.detach().cpu().numpy()
        np.savez(path, **arrays)
    else:
        from safetensors.torch import save_file

        tensors = {"samples": samples.detach().cpu().contiguous()}
        if labels is not None:
            tensors["labels"] = labels.cpu().contiguous()
        if images is not None:
            tensors["images"] = images.detach().cpu().contiguous()
        save_file(tensors, str(path))
    return path


# -------------------------------------------------------------------------------------------------- CLI
def _run(args: argparse.Namespace) -> int:
    for out in args.out:
        if Path(out).suffix.lower() not in OUT_SUFFIXES:
            raise ValueError(f"out: unsupported file type {Path(out).suffix!r}; expected one of {list(OUT_SUFFIXES)}")
    if args.n < 1:
        raise ValueError(f"n: expected a positive number of samples, got {args.n}")
    res = sample_zoo(args.model, args.sampler, args.steps, args.spacing, args.guidance, args.class_label, args.n,
                     args.seed, args.eta, args.shape, progress=args.progress)
    for out in args.out:
        log.info("wrote %s", save_samples(out, res.samples, res.labels, res.images))
    wrote = "".join(f"\nwrote {o}" for o in args.out)
    if res.images is not None:
        sampler = args.sampler or "fhs"
        steps = "" if sampler == "fhs" and args.steps is None else f"{args.steps or res.samples.shape[1]} steps, "
        img = res.images.double()
        print(f"{args.model}: {args.n} token sequences of length {res.samples.shape[1]} with {sampler} "
              f"({steps}NFE {res.nfe}, {res.seconds:.2f} s); image mean {float(img.mean()):.4f}, "
              f"std {float(img.std()):.4f}" + wrote)
        return 0
    x = res.samples.double()
    print(f"{args.model}: {args.n} samples of shape {tuple(x.shape[1:])} with {args.sampler or 'dpmpp_2m'} "
          f"({args.steps or GAUSSIAN_STEPS} steps, {args.spacing}, NFE {res.nfe}, {res.seconds:.2f} s); "
          f"mean {float(x.mean()):.4f}, std {float(x.std()):.4f}" + wrote)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="draw samples from a zoo model", description=__doc__.splitlines()[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="zoo model name (see diffzoo.zoo.names())")
    p.add_argument("--sampler", default=None, choices=sorted(SAMPLERS) + sorted(MASKED_SAMPLERS),
                   help="default: dpmpp_2m (Gaussian models) or fhs (masked models; fhs, ancestral, confidence)")
    p.add_argument("--steps", type=int, default=None,
                   help="number of sampler steps (default: 20; masked models: the sequence length)")
    p.add_argument("--spacing", default="uniform", choices=SPACINGS)
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--class-label", default=None, help="class for conditional models: an integer or 'all'")
    p.add_argument("--eta", type=float, default=None, help="DDIM stochasticity (ddim only)")
    p.add_argument("-n", "--n", type=int, default=16, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs="+", default=None, help="override the per-sample shape")
    p.add_argument("--out", action="append", default=[], help="output file (.png, .npz, .safetensors); repeatable")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=_run)
