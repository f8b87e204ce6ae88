"""``diffzoo invert`` and ``diffzoo edit``: image file in, PNG out.

Models (``--model``):

* a zoo name with a TinySD checkpoint (default ``tinysd``);
* ``tiny-random``: a tiny randomly initialised SD-shaped model built locally (smoke tests, exactness);
* a local directory holding a diffusers ``StableDiffusionPipeline`` (``save_pretrained`` layout, e.g.
  Stable Diffusion 1.x weights already on disk; nothing is downloaded).

Methods: ``diffzoo edit --method`` takes ``infedit`` (DDCM virtual inversion), ``sdedit`` (anchored
initialisation) or any inversion method of :mod:`diffzoo.inversion` (``ddim``, ``edict``, ``ddpm``,
``null-text``, ``direct``...), whose edit pass runs under prompt-to-prompt control (``--p2p``).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

OWN_METHODS = ("infedit", "sdedit")
P2P_MODES = ("replace", "refine", "none")


# -------------------------------------------------------------------------------------------------
# Images and models
# -------------------------------------------------------------------------------------------------


def load_image(path: str | Path) -> torch.Tensor:
    """An RGB image file as a ``(1, 3, H, W)`` float32 tensor in ``[-1, 1]``."""
    from PIL import Image
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image: no such file {str(p)!r}")
    arr = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def save_image(img: torch.Tensor, path: str | Path) -> Path:
    """Write a ``(1, 3, H, W)`` or ``(3, H, W)`` image in ``[-1, 1]`` as PNG (parent folders created)."""
    from PIL import Image

    x = img[0] if img.ndim == 4 else img
    arr = (
        ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    )
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(p)
    return p


def load_model(spec: str, dtype: torch.dtype = torch.float32) -> Any:
    """A :class:`~diffzoo.editing.latent.LatentModel`: zoo name, ``tiny-random`` or a pipeline folder."""
    from diffzoo.editing.latent import LatentModel, tiny_random_latent_model

    if spec == "tiny-random":
        return tiny_random_latent_model(tempfile.mkdtemp(prefix="diffzoo-tok-"), dtype=dtype)
    cast = (lambda m: m) if dtype == torch.float32 else (lambda m: m.to(dtype=dtype))
    if os.path.isdir(spec):
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(
            spec, local_files_only=True, safety_checker=None, requires_safety_checker=False
        )
        return cast(LatentModel.from_diffusers_pipeline(pipe))
    from diffzoo import zoo
    from diffzoo.models.tinysd import load_tinysd

    if spec not in zoo.names():
        raise ValueError(
            f"model: {spec!r} is neither a zoo model ({', '.join(zoo.names()) or 'none shipped'}), "
            "'tiny-random', nor a local diffusers pipeline folder"
        )
    return cast(load_tinysd(spec))


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def make_controller(
    model: Any,
    mode: str,
    source: str,
    target: str,
    num_steps: int,
    *,
    cross: float = 0.8,
    self_: float = 0.4,
    blend_words: list[list[str]] | None = None,
    weights: dict[str, float] | None = None,
    blend: dict[str, Any] | None = None,
) -> Any:
    """A prompt-to-prompt controller for ``[source; target]`` (``None``: mode "none" and no weights).

    ``blend``: local-blend options of the factories (``blend_threshold``, ``blend_normalize``)."""
    from diffzoo.editing import attention as A

    blend = dict(blend or {})
    if weights:
        return A.reweight(
            model.tokenize,
            [source, target],
            num_steps,
            weights,
            cross_replace_steps=cross,
            self_replace_steps=self_,
            blend_words=blend_words,
            **blend,
        )
    if mode == "none":
        return None
    if mode == "replace" and A.prompt_length(model.tokenize, source) != A.prompt_length(
        model.tokenize, target
    ):
        log.info("p2p: token counts differ, using refine instead of replace")
        mode = "refine"
    fn = A.replace if mode == "replace" else A.refine
    return fn(
        model.tokenize,
        [source, target],
        num_steps,
        cross_replace_steps=cross,
        self_replace_steps=self_,
        blend_words=blend_words,
        **blend,
    )


# -------------------------------------------------------------------------------------------------
# Commands
# -------------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="tinysd", help="zoo name, 'tiny-random', or a local diffusers pipeline folder"
    )
    p.add_argument("--image", required=True, help="input image file (RGB; the model's size)")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--steps", type=int, default=50, help="number of sampling / inversion steps")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (>= 1; default: the method's own)",
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)


def cmd_invert(args: argparse.Namespace) -> int:
    """Invert an image with ``--method`` and write its reconstruction; prints the round-trip error."""
    from diffzoo import inversion

    args.method = args.method.replace("-", "_")
    dt = _dtype(args.dtype)
    model = load_model(args.model, dt)
    img = load_image(args.image).to(dt)
    with torch.no_grad():
        z0 = model.encode_image(img)
    res = inversion.invert(
        args.method,
        model,
        img,
        args.prompt,
        num_steps=args.steps,
        guidance=args.guidance,
        dtype=dt,
        generator=_generator(args.seed),
    )
    with torch.no_grad():
        z = inversion.reconstruct(res)
        if z.shape[1] == 3:  # an image came back
            z = model.encode_image(z)
        rec = model.decode(z)
    save_image(rec, args.out)
    err = float((z - z0).abs().max())
    print(f"{args.method}: reconstruction max|z - z0| = {err:.3e} (latent), wrote {args.out}")
    return 0


def run_edit(
    model: Any,
    img: torch.Tensor,
    method: str,
    source: str,
    target: str,
    *,
    steps: int = 50,
    guidance: float | None = None,
    strength: float = 0.7,
    p2p: str = "refine",
    cross: float = 0.8,
    self_: float = 0.4,
    blend_words: list[list[str]] | None = None,
    weights: dict[str, float] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    method_kw: dict | None = None,
) -> torch.Tensor:
    """Edit ``img`` from ``source`` to ``target`` with ``method``; returns the edited image in ``[-1, 1]``.

    ``guidance=None`` uses each method's default scale.
    """
    from diffzoo.editing.anchored import sdedit
    from diffzoo.editing.ddcm import ddcm_edit

    g = _generator(seed)
    if method == "infedit":
        ctl = "unified" if p2p != "none" else None  # InfEdit's own unified attention control
        return ddcm_edit(
            model,
            img,
            source,
            target,
            num_steps=steps,
            strength=strength,
            guidance=2.0 if guidance is None else guidance,
            generator=g,
            dtype=dtype,
            controller=ctl,
            cross_replace_steps=cross,
            self_replace_steps=self_,
            blend_words=blend_words,
        ).image
    if method == "sdedit":
        return sdedit(
            model,
            img,
            target,
            strength=strength,
            num_steps=steps,
            guidance=7.5 if guidance is None else guidance,
            generator=g,
            dtype=dtype,
        ).image
    from diffzoo import inversion

    method = method.replace("-", "_")
    res = inversion.invert(
        method,
        model,
        img,
        source,
        num_steps=steps,
        guidance=guidance,
        dtype=dtype,
        generator=g,
        **(method_kw or {}),
    )
    ctl = make_controller(
        model, p2p, source, target, steps, cross=cross, self_=self_, blend_words=blend_words, weights=weights
    )
    out = inversion.edit(res, target, guidance=guidance, controller=ctl)
    with torch.no_grad():
        return model.decode(out.latents)


def _parse_weights(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    out = {}
    for it in items:
        word, _, val = it.partition("=")
        if not word or not val:
            raise ValueError(f"--reweight: expected WORD=SCALE, got {it!r}")
        out[word] = float(val)
    return out


def cmd_edit(args: argparse.Namespace) -> int:
    dt = _dtype(args.dtype)
    model = load_model(args.model, dt)
    img = load_image(args.image).to(dt)
    blend = None
    if args.blend:
        parts = [w.strip() for w in args.blend.split(",")]
        if len(parts) != 2:
            raise ValueError("--blend: expected 'SOURCE_WORDS,TARGET_WORDS'")
        blend = [p.split() for p in parts]
    out = run_edit(
        model,
        img,
        args.method,
        args.source_prompt,
        args.target_prompt,
        steps=args.steps,
        guidance=args.guidance,
        strength=args.strength,
        p2p=args.p2p,
        cross=args.cross_steps,
        self_=args.self_steps,
        blend_words=blend,
        weights=_parse_weights(args.reweight),
        seed=args.seed,
        dtype=dt,
    )
    save_image(out, args.out)
    print(f"{args.method}: {args.source_prompt!r} -> {args.target_prompt!r}, wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("invert", help="invert an image and write its reconstruction (PNG)")
    _common(p)
    p.add_argument(
        "--method", default="edict", help="inversion method (ddim, edict, ddpm, null-text, direct, ...)"
    )
    p.add_argument("--prompt", required=True, help="caption of the input image")
    p.set_defaults(func=cmd_invert)

    e = sub.add_parser("edit", help="edit an image from a source to a target prompt (PNG)")
    _common(e)
    e.add_argument(
        "--method",
        default="infedit",
        help="infedit | sdedit | an inversion method (ddim, edict, ddpm, null-text, direct, ...)",
    )
    e.add_argument("--source-prompt", required=True)
    e.add_argument("--target-prompt", required=True)
    e.add_argument("--strength", type=float, default=0.7, help="start strength in [0, 1] (infedit, sdedit)")
    e.add_argument(
        "--p2p", choices=P2P_MODES, default="refine", help="prompt-to-prompt control of the edit pass"
    )
    e.add_argument(
        "--cross-steps", type=float, default=0.8, help="fraction of steps with cross-attention injection"
    )
    e.add_argument(
        "--self-steps", type=float, default=0.4, help="fraction of steps with self-attention injection"
    )
    e.add_argument("--blend", default=None, help="local blend words: 'SOURCE_WORDS,TARGET_WORDS'")
    e.add_argument("--reweight", nargs="*", default=None, help="P2P re-weighting: WORD=SCALE ...")
    e.set_defaults(func=cmd_edit)


def demo_edit(out_dir: str | Path, model: str = "tinysd", steps: int = 20, seed: int = 0) -> dict[str, Path]:
    """An editing example for ``diffzoo demo``: a shapes-world scene, one colour edit by InfEdit and
    by Direct Inversion + P2P, written as PNGs (source, ground truth, edits) under ``out_dir``.

    Uses the zoo's TinySD (``model``); returns the written paths.
    """
    from diffzoo.data import shapes

    pair = shapes.edit_pairs(1, seed=seed, kinds=("color",), max_objects=1)[0]
    lm = load_model(model)
    img = pair.source_image[None].float()
    out = Path(out_dir)
    paths = {
        "source": save_image(img, out / "edit_source.png"),
        "ground_truth": save_image(pair.target_image[None], out / "edit_ground_truth.png"),
    }
    blend = None
    obj_words = [w for w in pair.source_caption.split() if w in shapes.SHAPES][:1]
    if obj_words:
        blend = [obj_words, obj_words]
    for method in ("infedit", "direct"):
        edited = run_edit(
            lm,
            img,
            method,
            pair.source_caption,
            pair.target_caption,
            steps=steps,
            p2p="replace",
            blend_words=blend,
            seed=seed,
        )
        paths[method] = save_image(edited, out / f"edit_{method}.png")
    log.info("demo edit %r -> %r written to %s", pair.source_caption, pair.target_caption, out)
    return paths
