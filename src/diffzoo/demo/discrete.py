"""``diffzoo demo`` section for masked discrete diffusion (zoo models ``masked-digits``, ``masked-shapes``).

Samples digits with the first-hitting, ancestral and MaskGIT-confidence samplers (FD-digits, network
calls, wall time; PNG grid), restores box-inpainted test digits with the APS-like posterior sampler,
and does the same on the patch-VQ tokens of shapes scenes (FHS samples; APS-like box inpainting).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from diffzoo import zoo
from diffzoo.data import digits, shapes
from diffzoo.discrete.aps import aps_sample, measure_tokens
from diffzoo.discrete.samplers import CallCounter, first_hitting_sample, sample_digits
from diffzoo.discrete.tokens import token_space
from diffzoo.inverse.operators import get_operator
from diffzoo.io import format_table, save_grid
from diffzoo.metrics.digits import digits_fd
from diffzoo.metrics.image import psnr

MODEL = "masked-digits"


def demo(out_dir: Path, n: int = 100, seed: int = 0) -> str:
    """Run the section, write ``masked_digits.png`` / ``masked_digits_aps.png``, return printable text."""

    if MODEL not in zoo.names():
        return f"(zoo model {MODEL!r} not shipped)"
    model = zoo.load(MODEL).model
    rows, grid = [], []
    for sampler, steps in (("fhs", 64), ("ancestral", 64), ("confidence", 16)):
        c = CallCounter(model)
        t0 = time.perf_counter()
        x = sample_digits(c, n, steps, sampler, torch.Generator().manual_seed(seed))
        img = digits.levels_to_images(x.reshape(n, 64))
        rows.append(
            {
                "sampler": sampler,
                "steps": steps,
                "NFE": c.nfe,
                "FD-digits": digits_fd(img),
                "wall s": time.perf_counter() - t0,
            }
        )
        grid.append(img[:10])
    save_grid(torch.cat(grid), out_dir / "masked_digits.png", nrow=10)
    test = digits.load("test").levels[:10]
    op = get_operator("box_inpaint", (1, 8, 8))
    space = token_space(model)
    y = measure_tokens(test, op, space, 0.05, torch.Generator().manual_seed(seed))
    x = aps_sample(model, op, y, 16, 0.05, generator=torch.Generator().manual_seed(seed))
    gt, rec = space.decode(test).float(), space.decode(x).float()
    seen = op.adjoint(y).float()
    save_grid(torch.cat([gt, seen, rec]), out_dir / "masked_digits_aps.png", nrow=10)
    lines = [
        format_table(rows),
        "",
        f"samples: {out_dir / 'masked_digits.png'} (rows: the samplers above)",
        f"APS-like box inpainting (sigma_y 0.05): PSNR {float(psnr(rec, gt)):.2f} dB; "
        f"{out_dir / 'masked_digits_aps.png'} (rows: truth, observed, restored)",
    ]
    if "masked-shapes" in zoo.names():
        lines.append(shapes_demo(out_dir, seed))
    return "\n".join(lines)


def shapes_demo(out_dir: Path, seed: int = 0, n: int = 8) -> str:
    """FHS samples of ``masked-shapes`` and APS-like restoration of box-inpainted unseen scenes."""

    model = zoo.load("masked-shapes").model
    space = token_space(model)
    t0 = time.perf_counter()
    samples = space.decode(first_hitting_sample(model, n, generator=torch.Generator().manual_seed(seed)))
    sec = time.perf_counter() - t0
    test = space.encode(shapes.render_batch(shapes.random_scenes(n, 10_000 + seed)))
    op = get_operator("box_inpaint", space.image_shape)
    y = measure_tokens(test, op, space, 0.05, torch.Generator().manual_seed(seed))
    rec = space.decode(aps_sample(model, op, y, 16, 0.05, generator=torch.Generator().manual_seed(seed)))
    gt = space.decode(test)
    path = save_grid(torch.cat([samples, gt, op.adjoint(y), rec]).float(), out_dir / "masked_shapes.png", nrow=n, pad=0)
    return (
        f"masked-shapes (patch-VQ tokens): {n} FHS samples in {sec:.1f} s ({space.seq_len} calls); APS-like "
        f"box inpainting of unseen scenes: PSNR {float(psnr(rec, gt, reduction='pooled')):.2f} dB (pooled MSE); "
        f"{path} (rows: samples, truth, observed, restored)"
    )
