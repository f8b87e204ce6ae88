"""``diffzoo demo``: a tour of the shipped zoo in a few minutes on a laptop CPU.

1. Samples the class-conditional digits model with every sampler at a few step counts (same per-sample
   seeds for every row), writes a PNG grid and prints FD-digits / conditional accuracy per sampler and NFE.
2. Each further capability adds a section when its zoo models are shipped: text-guided editing of a
   real (rendered) image with TinySD, masked discrete diffusion, and inverse problems.

Everything runs offline from ``src/diffzoo/zoo/weights``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from diffzoo.bench.common import format_table

log = logging.getLogger(__name__)
Tensor = torch.Tensor

DIGITS_MODEL = "digits-unet"
DEMO_SAMPLERS = ("ddpm", "ddim", "plms", "pndm", "dpmpp_2m", "euler", "heun")


def digits_section(out_dir: Path, n: int = 200, steps: tuple[int, ...] = (10, 25), guidance: float = 2.0,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Sample the digits model with every sampler; return table rows and write ``digits_samplers.png``."""
    from diffzoo.metrics import digits_accuracy, digits_fd
    from diffzoo.sampling import steps_for_nfe
    from diffzoo.sampling.cli import image_grid, sample_zoo

    rows, grid_rows = [], []
    for nfe_budget in steps:
        for name in DEMO_SAMPLERS:
            k = steps_for_nfe(name, nfe_budget)
            if k is None:
                continue
            t0 = time.perf_counter()
            res = sample_zoo(DIGITS_MODEL, name, k, "uniform", guidance, "all", n, seed)
            wall = time.perf_counter() - t0
            x = res.samples.clamp(-1, 1)
            rows.append({"sampler": name, "steps": k, "NFE": res.nfe, "FD-digits": digits_fd(x),
                         "accuracy": digits_accuracy(x, res.labels), "wall s": wall})
            if nfe_budget == max(steps):
                grid_rows.append(x[:10])
    image_grid(torch.cat(grid_rows), nrow=10).save(out_dir / "digits_samplers.png")
    return rows


def _optional_sections() -> list[tuple[str, Callable[[Path], str]]]:
    """Demo sections of the other capabilities (each returns printable text)."""
    import importlib
    import importlib.util

    out = []
    for mod, title in (("diffzoo.editing.demo", "Text-guided editing with TinySD"),
                       ("diffzoo.discrete.demo", "Masked discrete diffusion"),
                       ("diffzoo.inverse.demo", "Inverse problems")):
        if importlib.util.find_spec(mod) is not None:
            out.append((title, importlib.import_module(mod).demo))
    return out


def run_demo(out_dir: str | Path = "diffzoo-demo", quick: bool = False, seed: int = 0) -> str:
    """Run every demo section; write PNGs under ``out_dir`` and return the printed report."""
    from diffzoo import zoo

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if DIGITS_MODEL not in zoo.names():
        raise FileNotFoundError(f"zoo: model {DIGITS_MODEL!r} is not shipped in {zoo.WEIGHTS_DIR}")
    torch.manual_seed(seed)
    parts = [f"diffzoo demo — zoo models: {', '.join(zoo.names())}", ""]
    t0 = time.perf_counter()
    rows = digits_section(out_dir, n=100 if quick else 200, steps=(10,) if quick else (10, 25), seed=seed)
    parts += [f"## Digits: every sampler on `{DIGITS_MODEL}` (CFG 2.0, same per-sample seeds)", "",
              format_table(rows), "", f"grid: {out_dir / 'digits_samplers.png'} (rows: "
              f"{', '.join(DEMO_SAMPLERS)}; columns: classes 0-9)", ""]
    for title, fn in _optional_sections():
        ts = time.perf_counter()
        parts += [f"## {title}", "", fn(out_dir), f"({time.perf_counter() - ts:.1f} s)", ""]
    parts.append(f"total {time.perf_counter() - t0:.1f} s; outputs in {out_dir}/")
    return "\n".join(parts)


def _run(args: argparse.Namespace) -> int:
    print(run_demo(args.out_dir, args.quick, args.seed))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="tour the shipped zoo: samplers, editing, discrete, inverse problems",
                       description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="diffzoo-demo", help="where PNGs are written (default: ./diffzoo-demo)")
    p.add_argument("--quick", action="store_true", help="fewer samples and step counts")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)
