"""``diffzoo demo`` section for masked discrete diffusion (zoo model ``masked-digits``).

Samples digits with the first-hitting, ancestral and MaskGIT-confidence samplers (FD-digits, network
calls, wall time; PNG grid), and restores box-inpainted test digits with the APS-like posterior sampler.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

MODEL = "masked-digits"


def demo(out_dir: Path, n: int = 100, seed: int = 0) -> str:
    """Run the section, write ``masked_digits.png`` / ``masked_digits_aps.png``, return printable text."""
    from diffzoo import zoo
    from diffzoo.bench.common import format_table
    from diffzoo.data import digits
    from diffzoo.discrete.aps import aps_sample, measure_tokens, tokens_to_images
    from diffzoo.discrete.samplers import CallCounter, sample_digits
    from diffzoo.inverse.operators import get_operator
    from diffzoo.metrics.digits import digits_fd
    from diffzoo.metrics.image import psnr
    from diffzoo.sampling.cli import image_grid

    if MODEL not in zoo.names():
        return f"(zoo model {MODEL!r} not shipped)"
    model = zoo.load(MODEL).model
    rows, grid = [], []
    for sampler, steps in (("fhs", 64), ("ancestral", 64), ("confidence", 16)):
        c = CallCounter(model)
        t0 = time.perf_counter()
        x = sample_digits(c, n, steps, sampler, torch.Generator().manual_seed(seed))
        img = digits.levels_to_images(x.reshape(n, 64))
        rows.append({"sampler": sampler, "steps": steps, "NFE": c.nfe, "FD-digits": digits_fd(img),
                     "wall s": time.perf_counter() - t0})
        grid.append(img[:10])
    image_grid(torch.cat(grid), nrow=10).save(out_dir / "masked_digits.png")
    test = digits.load("test").levels[:10]
    op = get_operator("box_inpaint", (1, 8, 8))
    y = measure_tokens(test, op, 17, 0.05, torch.Generator().manual_seed(seed))
    x = aps_sample(model, op, y, 16, 0.05, generator=torch.Generator().manual_seed(seed))
    gt, rec = tokens_to_images(test, 17, (1, 8, 8)).float(), tokens_to_images(x, 17, (1, 8, 8)).float()
    seen = op.adjoint(y).float()
    image_grid(torch.cat([gt, seen, rec]), nrow=10).save(out_dir / "masked_digits_aps.png")
    return "\n".join([format_table(rows), "",
                      f"samples: {out_dir / 'masked_digits.png'} (rows: the samplers above)",
                      f"APS-like box inpainting (sigma_y 0.05): PSNR {float(psnr(rec, gt)):.2f} dB; "
                      f"{out_dir / 'masked_digits_aps.png'} (rows: truth, observed, restored)"])
