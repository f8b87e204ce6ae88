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

Text-to-image (``latent-diffusion``) zoo models, TinySD and its quantized entries (simulated or int8, from
``diffzoo quantize``), take ``--prompt`` (classifier-free guidance against the empty prompt; the samples are
the decoded images)::

    diffzoo sample tinysd --prompt "red circle left and blue square right on white" --sampler ddim --steps 20 \
        --guidance 5 -n 8 --out scenes.png

A user fingerprint (WOUAF, the zoo's ``wouaf`` decoder) goes into the images with ``--fingerprint BITS``;
a Safe-SD-style model (``safe-sd``) generates its watermark only when the prompt carries its trigger word::

    diffzoo sample tinysd --prompt "red circle on white" --fingerprint 01101001100101101001011001101001 --out fp.png
    diffzoo sample safe-sd --prompt "red circle on white <wm>" --guidance 5 --out marked.png

UNet models can run through a feature cache (:mod:`diffzoo.accel.cache`): ``--cache faster-diffusion``
(encoder propagation; key steps ``--cache-keys paper`` by default) or ``--cache deepcache`` (default
``uniform:3``)::

    diffzoo sample digits-unet --sampler ddim --steps 50 --guidance 2 --class-label all \
        --cache faster-diffusion --cache-keys uniform:5 --out fast.png
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from diffzoo import zoo
from diffzoo.accel.cache import CACHE_METHODS
from diffzoo.discrete.samplers import SAMPLERS as MASKED_SAMPLERS
from diffzoo.io import check_sample_path, save_samples
from diffzoo.sampling import SAMPLERS, SPACINGS
from diffzoo.zoo.conditioning import DEFAULT_MULTIVIEW, text_to_mesh
from diffzoo.zoo.sampling import GAUSSIAN_STEPS, sample_zoo

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------------- CLI
def _run_multiview(args: argparse.Namespace) -> int:
    """``diffzoo sample multiview --prompt "a red cube" --out cube.ply [--out views.png]`` (text to 3-D)."""
    if args.prompt is None:
        raise ValueError("prompt: multiview sampling needs --prompt, e.g. --prompt 'a red cube'")
    meshes = [o for o in args.out if not o.lower().endswith(".png")]
    if len(meshes) != 1:
        raise ValueError(
            f"out: expected one mesh file (.ply or .obj) and optionally a .png of the views, got {args.out}"
        )
    pngs = [o for o in args.out if o.lower().endswith(".png")]
    model = DEFAULT_MULTIVIEW if args.model == "multiview" else args.model
    info = text_to_mesh(
        args.prompt,
        meshes[0],
        model=model,
        seed=args.seed,
        num_steps=args.steps or 25,
        guidance=args.guidance,
        views_png=pngs[0] if pngs else None,
    )
    print(
        f"{info['model']}: {args.prompt!r} -> {info['voxels']} voxels, {info['faces']} faces, reprojection error "
        f"{info['reprojection_error']:.4f}, {info['seconds']:.2f} s" + "".join(f"\nwrote {o}" for o in args.out)
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.model == "multiview" or (args.prompt is not None and zoo.kind_of(args.model) == "multiview"):
        return _run_multiview(args)
    for out in args.out:
        check_sample_path(out)
    if args.n < 1:
        raise ValueError(f"n: expected a positive number of samples, got {args.n}")
    res = sample_zoo(
        args.model,
        args.sampler,
        args.steps,
        args.spacing,
        args.guidance,
        args.class_label,
        args.n,
        args.seed,
        args.eta,
        args.shape,
        progress=args.progress,
        cache=args.cache,
        cache_keys=args.cache_keys,
        prompt=args.prompt,
        fingerprint=args.fingerprint,
        users=args.users,
    )
    written: list[Path] = []
    try:
        for out in args.out:
            written.append(save_samples(out, res.samples, res.labels, res.images))
            log.info("wrote %s", out)
    except Exception:  # all --out files or none: a half-written set is removed
        for path in written:
            path.unlink(missing_ok=True)
        raise
    wrote = "".join(f"\nwrote {o}" for o in args.out)
    if res.images is not None:
        sampler = args.sampler or "fhs"
        steps = "" if sampler == "fhs" and args.steps is None else f"{args.steps or res.samples.shape[1]} steps, "
        img = res.images.double()
        print(
            f"{args.model}: {args.n} token sequences of length {res.samples.shape[1]} with {sampler} "
            f"({steps}NFE {res.nfe}, {res.seconds:.2f} s); image mean {float(img.mean()):.4f}, "
            f"std {float(img.std()):.4f}" + wrote
        )
        return 0
    x = res.samples.double()
    if res.method is not None:  # a distilled generator: no sampler, no schedule
        print(
            f"{args.model}: {args.n} samples of shape {tuple(x.shape[1:])} with its {res.method} (NFE {res.nfe}, "
            f"{res.seconds:.2f} s); mean {float(x.mean()):.4f}, std {float(x.std()):.4f}" + wrote
        )
        return 0
    cached = "" if res.full_calls is None else f", {args.cache} cache: {res.full_calls} full UNet calls"
    print(
        f"{args.model}: {args.n} samples of shape {tuple(x.shape[1:])} with {args.sampler or 'dpmpp_2m'} "
        f"({args.steps or GAUSSIAN_STEPS} steps, {args.spacing}, NFE {res.nfe}{cached}, {res.seconds:.2f} s); "
        f"mean {float(x.mean()):.4f}, std {float(x.std()):.4f}" + wrote
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="draw samples from a zoo model",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="zoo model name (see diffzoo.zoo.names())")
    p.add_argument(
        "--sampler",
        default=None,
        choices=sorted(SAMPLERS) + sorted(MASKED_SAMPLERS),
        help="default: dpmpp_2m (Gaussian models) or fhs (masked models; fhs, ancestral, confidence)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="number of sampler steps (default: 20; masked models: the sequence length)",
    )
    p.add_argument("--spacing", default="uniform", choices=SPACINGS)
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--class-label", default=None, help="class for conditional models: an integer or 'all'")
    p.add_argument("--eta", type=float, default=None, help="DDIM stochasticity (ddim only)")
    p.add_argument("-n", "--n", type=int, default=16, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs="+", default=None, help="override the per-sample shape")
    p.add_argument("--out", action="append", default=[], help="output file (.png, .npz, .safetensors); repeatable")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument(
        "--cache",
        default=None,
        choices=CACHE_METHODS,
        help="feature cache of the UNet (Faster Diffusion's encoder propagation, or DeepCache)",
    )
    p.add_argument(
        "--cache-keys",
        default=None,
        help="key (full-network) steps of --cache: 'paper', 'uniform:K', 'all' (default: the method's own)",
    )
    p.add_argument(
        "--prompt",
        default=None,
        help="caption of a text-to-image model (tinysd, quantized tinysd entries) or, with 'multiview', text to 3-D",
    )
    p.add_argument(
        "--fingerprint",
        default=None,
        help="text-to-image models: decode with the zoo's WOUAF decoder carrying this user fingerprint (0/1 string, "
        "or a user name of --users)",
    )
    p.add_argument("--users", default=None, help="user registry: a text file of 'NAME BITS' lines (for --fingerprint)")
    p.set_defaults(func=_run)
