"""``diffzoo demo``: a tour of the shipped zoo in a few minutes on a laptop CPU.

1. Samples the class-conditional digits model with every sampler at a few step counts (same per-sample
   seeds for every row), writes a PNG grid and prints FD-digits / conditional accuracy per sampler and NFE.
2. Each further capability adds a section when its zoo models are shipped: text-guided editing of a
   real (rendered) image with TinySD, masked discrete diffusion, and inverse problems.

Everything runs offline from ``src/diffzoo/zoo/weights``.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from diffzoo import zoo
from diffzoo.core.random import generators_from_seeds
from diffzoo.data import digits, shapes
from diffzoo.demo.discrete import demo as discrete_section
from diffzoo.editing import edit_image, reconstruct_image
from diffzoo.inverse import get_operator, measurement_error, posterior_sample
from diffzoo.io import format_table, save_grid, save_image
from diffzoo.metrics import digits_accuracy, digits_fd, psnr
from diffzoo.sampling import steps_for_nfe
from diffzoo.zoo.latent import load_latent_model
from diffzoo.zoo.sampling import sample_zoo

log = logging.getLogger(__name__)
Tensor = torch.Tensor

DIGITS_MODEL = "digits-unet"
DEMO_SAMPLERS = ("ddpm", "ddim", "plms", "pndm", "dpmpp_2m", "euler", "heun")


def digits_section(
    out_dir: Path, n: int = 200, steps: tuple[int, ...] = (15, 25), guidance: float = 2.0, seed: int = 0
) -> tuple[list[dict[str, Any]], list[str]]:
    """Sample the digits model with every sampler at each NFE budget in ``steps`` (samplers whose minimum
    NFE exceeds a budget are skipped); return table rows and the grid's row names, and write
    ``digits_samplers.png`` (one row per sampler at the largest budget, one column per class)."""

    rows, grid_rows, grid_names = [], [], []
    for nfe_budget in steps:
        for name in DEMO_SAMPLERS:
            k = steps_for_nfe(name, nfe_budget)
            if k is None:
                continue
            t0 = time.perf_counter()
            res = sample_zoo(DIGITS_MODEL, name, k, "uniform", guidance, "all", n, seed)
            wall = time.perf_counter() - t0
            x = res.samples.clamp(-1, 1)
            rows.append(
                {
                    "sampler": name,
                    "steps": k,
                    "NFE": res.nfe,
                    "FD-digits": digits_fd(x),
                    "accuracy": digits_accuracy(x, res.labels),
                    "wall s": wall,
                }
            )
            if nfe_budget == max(steps):
                grid_rows.append(x[:10])
                grid_names.append(name)
    save_grid(torch.cat(grid_rows), out_dir / "digits_samplers.png", nrow=10)
    return rows, grid_names


def demo_edit(out_dir: str | Path, model: str = "tinysd", steps: int = 20, seed: int = 0) -> dict[str, Path]:
    """An editing example for ``diffzoo demo``: a shapes-world scene, one colour edit by InfEdit and
    by Direct Inversion + P2P, written as PNGs (source, ground truth, edits) under ``out_dir``.

    Uses the zoo's TinySD (``model``); returns the written paths.
    """
    pair = shapes.edit_pairs(1, seed=seed, kinds=("color",), max_objects=1)[0]
    lm = load_latent_model(model)
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
        edited = edit_image(
            method,
            lm,
            img,
            pair.source_caption,
            pair.target_caption,
            num_steps=steps,
            p2p="replace",
            blend_words=blend,
            seed=seed,
        )
        paths[method] = save_image(edited.image, out / f"edit_{method}.png")
    log.info("demo edit %r -> %r written to %s", pair.source_caption, pair.target_caption, out)
    return paths


def editing_section(out_dir: Path, steps: int = 20, seed: int = 0) -> str:
    """Edit a rendered shapes scene with TinySD (InfEdit, Direct Inversion + P2P) and check EDICT's
    exact round trip on the same image."""

    if "tinysd" not in zoo.names():
        return "(zoo model 'tinysd' not shipped)"
    paths = demo_edit(out_dir, "tinysd", steps=steps, seed=seed)
    pair = shapes.edit_pairs(1, seed=seed, kinds=("color",), max_objects=1)[0]
    lm = load_latent_model("tinysd")
    rec = reconstruct_image(
        "edict",
        lm,
        pair.source_image[None].float(),
        pair.source_caption,
        num_steps=steps,
        dtype=torch.float64,
        decode=False,
    )
    lines = [f"edit: {pair.source_caption!r} -> {pair.target_caption!r}"]
    lines += [f"  {k}: {v}" for k, v in paths.items()]
    lines.append(
        f"EDICT round trip ({steps} steps, guidance {rec.guidance:g}, float64 states): "
        f"max |z0 - z0_rec| = {rec.reconstruction_error:.2e}"
    )
    return "\n".join(lines)


def inverse_section(out_dir: Path, n: int = 16, steps: int = 50, seed: int = 0) -> str:
    """Restore held-out test digits from box-inpainting and 25% compressed-sensing measurements with the
    digits prior: pseudo-inverse vs DDNM vs DPS (PSNR and measurement consistency ||Ax - y||)."""

    den = zoo.load(DIGITS_MODEL).denoiser()
    x = digits.load("test").images[:n].float()
    rows, grid = [], [x]
    for op_name in ("box_inpaint", "cs"):
        op = get_operator(op_name, (1, 8, 8), ratio=0.25, seed=seed)
        y = op(x)
        for method in ("pinv", "ddnm", "dps"):
            t0 = time.perf_counter()
            out = posterior_sample(
                method, den, op, y, steps, generator=generators_from_seeds(range(seed, seed + n)), zeta=1.0
            )
            rows.append(
                {
                    "operator": op_name,
                    "method": method,
                    "steps": 0 if method == "pinv" else steps,
                    "PSNR dB": float(psnr(out.clamp(-1, 1), x)),
                    "‖Ax-y‖": float(measurement_error(op, out, y).mean()),
                    "wall s": time.perf_counter() - t0,
                }
            )
            grid.append(out.clamp(-1, 1))
    save_grid(torch.cat(grid), out_dir / "inverse_restorations.png", nrow=n)
    return (
        format_table(rows) + f"\n\ngrid: {out_dir / 'inverse_restorations.png'} (rows: ground truth, then "
        "box_inpaint pinv/ddnm/dps, cs-25% pinv/ddnm/dps)"
    )


def _sections(quick: bool, seed: int) -> list[tuple[str, Callable[[Path], str]]]:
    """Demo sections of the other capabilities (each returns printable text)."""

    n = 50 if quick else 100
    return [
        ("Text-guided editing of a rendered image with TinySD", partial(editing_section, seed=seed)),
        ("Masked discrete diffusion", partial(discrete_section, n=n, seed=seed)),
        ("Inverse problems on held-out digits", partial(inverse_section, n=n // 5, seed=seed)),
    ]


def run_demo(out_dir: str | Path = "diffzoo-demo", quick: bool = False, seed: int = 0) -> str:
    """Run every demo section; write PNGs under ``out_dir`` and return the printed report."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if DIGITS_MODEL not in zoo.names():
        raise FileNotFoundError(f"zoo: model {DIGITS_MODEL!r} is not shipped in {zoo.WEIGHTS_DIR}")
    torch.manual_seed(seed)
    parts = [f"diffzoo demo — zoo models: {', '.join(zoo.names())}", ""]
    t0 = time.perf_counter()
    rows, grid_names = digits_section(out_dir, n=100 if quick else 200, steps=(15,) if quick else (15, 25), seed=seed)
    parts += [
        f"## Digits: every sampler on `{DIGITS_MODEL}` (CFG 2.0, same per-sample seeds)",
        "",
        format_table(rows),
        "",
        f"grid: {out_dir / 'digits_samplers.png'} (rows: {', '.join(grid_names)}; columns: classes 0-9)",
        "",
    ]
    for title, fn in _sections(quick, seed):
        ts = time.perf_counter()
        parts += [f"## {title}", "", fn(out_dir), f"({time.perf_counter() - ts:.1f} s)", ""]
    parts.append(f"total {time.perf_counter() - t0:.1f} s; outputs in {out_dir}/")
    return "\n".join(parts)
