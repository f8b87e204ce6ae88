"""``diffzoo bench accel``: Faster Diffusion vs DeepCache, PFGM++ per D, DPM-OT's expressway.

1. Faster Diffusion (arXiv 2312.09608) and DeepCache (arXiv 2312.00858) on the digits UNet at 50 DDIM steps
   with CFG 2: wall time, speed-up, FD-digits and conditional accuracy beside the plain sampler (two seeds:
   the seed-to-seed spread), ablations (no prior noise injection, uniform keys, parallel mode), and the
   relative change of every block's features between adjacent steps (the paper's premise), as a plot.
2. PFGM++ (arXiv 2302.04265): FD-digits at 35 NFE (Heun) per shipped D, and robustness to per-step noise
   injection ``x += alpha t z`` and to int8-rounded weights.
3. DPM-OT (ICCV 2023) on the 8-mode ring (exact denoiser): mode-mixing rate, exact W2 (POT ``emd2``) and a
   memorisation check against DDIM and DPM-Solver++ at the same NFE.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Any

import torch
from PIL import Image, ImageDraw

from diffzoo import zoo
from diffzoo.accel.cache import FeatureRecorder, cached_denoiser, key_steps, prior_noise_injection
from diffzoo.accel.dpm_ot import dpm_ot_sample, fit_semi_discrete_ot, nearest_distance, noised_targets, w2_exact
from diffzoo.accel.pfgmpp import pfgmpp_sample
from diffzoo.bench.common import results_dir
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.schedules import get_schedule
from diffzoo.data import toy2d
from diffzoo.io import atomic_write_text, format_table
from diffzoo.metrics import digits_accuracy, digits_fd
from diffzoo.sampling import get_timesteps, sample

Tensor = torch.Tensor
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194)]


def _line_plot(path: Any, series: dict[str, list[float]], title: str) -> None:
    w, h, pad = 640, 360, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    vals = [v for s in series.values() for v in s if math.isfinite(v)]
    lo, hi = 0.0, max(vals) if vals else 1.0
    n = max(len(s) for s in series.values())
    d.rectangle([pad, pad, w - pad, h - pad], outline="black")
    d.text((pad, 10), f"{title} (max {hi:.3g})", fill="black")
    for k, (name, s) in enumerate(series.items()):
        c = COLORS[k % len(COLORS)]
        pts = [
            (pad + i * (w - 2 * pad) / max(1, n - 1), h - pad - (v - lo) / (hi - lo + 1e-12) * (h - 2 * pad))
            for i, v in enumerate(s)
        ]
        d.line(pts, fill=c, width=2)
        d.text((w - pad - 90, pad + 5 + 12 * k), name, fill=c)
    img.save(path)


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


@torch.no_grad()
def section_cache(quick: bool, rows_out: list[str]) -> list[dict[str, Any]]:
    zm = zoo.load("digits-unet")
    den = zm.denoiser()
    steps = 50
    ts = get_timesteps(den.schedule, steps)
    per = 20 if quick else 100
    labels = torch.arange(10).repeat_interleave(per)
    null = torch.tensor([zm.null_class])

    def run(d: Denoiser, seed: int, inject: bool = False) -> tuple[Tensor, float]:
        x = torch.randn(labels.shape[0], 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        cb = prior_noise_injection(x, den.schedule) if inject else None
        return _timed(lambda: sample("ddim", cfg_denoiser(d, 2.0, null), x, ts, labels, callback=cb).clamp(-1, 1))

    configs: list[tuple[str, dict[str, Any] | None, bool]] = [
        ("plain DDIM-50", None, False),
        ("Faster Diffusion (paper keys, injection)", {"method": "faster-diffusion", "keys": "paper"}, True),
        (
            "FD parallel (paper keys, injection)",
            {"method": "faster-diffusion", "keys": "paper", "parallel": True},
            True,
        ),
        ("FD ablation: no injection", {"method": "faster-diffusion", "keys": "paper"}, False),
        ("FD ablation: uniform keys every 5", {"method": "faster-diffusion", "keys": "uniform:5"}, True),
        ("DeepCache (uniform every 5, depth 1)", {"method": "deepcache", "keys": "uniform:5"}, False),
    ]
    rows = []
    base_t = None
    for name, kw, inject in configs:
        for seed in (0, 1) if kw is None else (0,):
            d = den if kw is None else cached_denoiser(den, ts, **kw)
            x, sec = run(d, seed, inject)
            if kw is None and seed == 0:
                base_t = sec
            nkeys = steps if kw is None else len(key_steps(steps, kw["keys"]))
            rows.append(
                {
                    "method": name + ("" if kw is None else "") + (f" (seed {seed})" if kw is None else ""),
                    "full UNet calls": nkeys,
                    "wall s": sec,
                    "speed-up": (base_t or sec) / sec,
                    "FD-digits": digits_fd(x),
                    "accuracy": digits_accuracy(x, labels),
                }
            )
    # the premise: relative feature change per block between adjacent steps
    rec = FeatureRecorder(zm.model)
    x = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sample("ddim", den.with_net(rec), x, ts, torch.arange(10).repeat(2))
    rc = rec.relative_changes()
    names = rec.block_names()
    _line_plot(
        results_dir() / f"bench_accel_features{'_quick' if quick else ''}.png",
        {n: rc[:, k].tolist() for k, n in enumerate(names)},
        "digits UNet: relative feature change between adjacent DDIM steps",
    )
    feat_rows = [
        {"block": n, "mean rel. change": float(rc[:, k].mean()), "median": float(rc[:, k].median())}
        for k, n in enumerate(names)
    ]
    rows_out += [
        "## 1. Faster Diffusion vs DeepCache (digits UNet, DDIM-50, CFG 2)\n",
        f"{labels.shape[0]} samples per row. Paper: SD 1.5 DDIM-50 2.369 s -> 1.407 s (1.68x; abstract: 41% faster), "
        "quality 'on par'. Seed-to-seed spread of the baseline = the two plain rows.\n",
        format_table(rows),
        "",
        "Relative change |f_k - f_{k-1}| / |f_{k-1}| of each block's output between adjacent steps (paper: encoder "
        "features change less than decoder features); plot: bench_accel_features*.png\n",
        format_table(feat_rows),
        "",
    ]
    return rows


def _int8(model: torch.nn.Module) -> torch.nn.Module:
    m = copy.deepcopy(model)
    for p in m.parameters():
        s = p.abs().max().clamp_min(1e-12) / 127
        p.data = (p.data / s).round().clamp(-127, 127) * s
    return m


@torch.no_grad()
def section_pfgmpp(quick: bool, rows_out: list[str]) -> list[dict[str, Any]]:
    names = [n for n in zoo.names() if n.startswith("pfgmpp-digits-")]
    n = 200 if quick else 1000
    rows = []
    for name in sorted(names):
        zm = zoo.load(name)
        D = float(zm.config["augment_dim"])
        den = zm.denoiser()
        alphas = (0.0, 0.1, 0.2) if quick else (0.0, 0.05, 0.1, 0.15, 0.2)
        row: dict[str, Any] = {"model": name, "D": D}
        for a in alphas:
            zg = torch.Generator().manual_seed(1)

            def cb(dd: dict, a: float = a, zg: torch.Generator = zg) -> Tensor | None:
                if a == 0 or float(dd["s"]) <= 0:
                    return None
                return dd["x"] + a * float(dd["t"]) * torch.randn(dd["x"].shape, generator=zg)

            x = pfgmpp_sample(den, (n, 1, 8, 8), D, 18, generator=torch.Generator().manual_seed(0), callback=cb)
            row[f"FD alpha={a:g}"] = digits_fd(x.clamp(-1, 1))
        q = Denoiser(_int8(zm.model), den.schedule, "sample")
        x = pfgmpp_sample(q, (n, 1, 8, 8), D, 18, generator=torch.Generator().manual_seed(0))
        row["FD int8 weights"] = digits_fd(x.clamp(-1, 1))
        row["train steps"] = zm.config.get("steps")
        rows.append(row)
    rows_out += [
        "## 2. PFGM++ on digits (Heun, 18 steps = 35 NFE)\n",
        f"{n} samples per cell. Paper: CIFAR-10 FID 1.92 (D=128) vs 1.98 (D=inf); smaller D degrades more slowly "
        "under per-step noise x += alpha t z and under weight quantisation.\n",
        format_table(rows) if rows else "(no pfgmpp-digits-* model in the zoo)",
        "",
    ]
    return rows


@torch.no_grad()
def section_dpm_ot(quick: bool, rows_out: list[str]) -> list[dict[str, Any]]:
    ds = toy2d.get("ring8")
    sch = get_schedule("linear")
    den = ds.mixture.denoiser(sch)
    g = torch.Generator().manual_seed(0)
    n_t = 500 if quick else 2000
    n = 500 if quick else 2000
    full = get_timesteps(sch, 50)
    rows = []
    std = float(ds.mixture.stds.reshape(-1)[0]) if hasattr(ds.mixture, "stds") else 0.1
    modes = ds.modes.to(torch.float64)
    ref = ds.sample(n, g).to(torch.float64)

    def metrics(name: str, x: Tensor, nfe: int, train: Tensor | None = None) -> dict[str, Any]:
        x = x.to(torch.float64)
        far = torch.cdist(x, modes).min(1).values > 3 * std
        r = {"method": name, "NFE": nfe, "mode-mixing rate": float(far.double().mean()), "W2 (emd2)": w2_exact(x, ref)}
        if train is not None:
            r["median NN dist to targets' data"] = float(nearest_distance(x, train).median())
        return r

    for back in (5, 10):
        tail = full[-(back + 1) :]
        a, s = sch.alpha_sigma(tail[:1])
        data = ds.sample(n_t, g).to(torch.float64)
        ot = fit_semi_discrete_ot(
            noised_targets(data, float(a), float(s), g), source="uniform", max_iter=300 if quick else 1500, generator=g
        )
        x, _ = dpm_ot_sample(ot, den, tail, n, (2,), generator=g, dtype=torch.float64)
        rows.append(metrics(f"DPM-OT (OT to t={float(tail[0]):.0f}, then DDIM)", x, back, data))
        for sampler in ("ddim", "dpmpp_2m"):
            tsb = get_timesteps(sch, back)
            xb = sample(sampler, den, torch.randn(n, 2, generator=g, dtype=torch.float64), tsb)
            rows.append(metrics(sampler, xb, back, data))
        rows[-3]["OT converged"] = ot.converged
    teacher = sample("ddim", den, torch.randn(n, 2, generator=g, dtype=torch.float64), full)
    rows.append(metrics("DDIM-50 (teacher)", teacher, 50, data))
    rows_out += [
        "## 3. DPM-OT on the 8-mode ring (exact denoiser)\n",
        f"{n_t} targets, {n} samples; mode mixing = farther than 3 std from every mode; W2 to {n} fresh data points "
        "by POT's exact emd2. Paper: high quality within ~10 NFE with less mode mixture (CIFAR-10 / CelebA). "
        "The NN column compares the distance of samples to the clean points behind the OT targets with the "
        "teacher's (a much smaller value would mean retrieval).\n",
        format_table(rows),
        "",
    ]
    return rows


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, int(args.threads)))
    parts = [f"# bench accel{' (quick)' if args.quick else ''}\n"]
    t0 = time.perf_counter()
    for sec in (section_cache, section_pfgmpp, section_dpm_ot):
        s0 = time.perf_counter()
        sec(args.quick, parts)
        parts.append(f"({time.perf_counter() - s0:.0f} s)\n")
    parts.append(f"Total {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(parts) + "\n"
    out = atomic_write_text(results_dir() / f"bench_accel{'_quick' if args.quick else ''}.md", text)
    print(text)
    print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("accel", help="Faster Diffusion vs DeepCache, PFGM++ per D, DPM-OT")
    p.add_argument("--quick", action="store_true", help="small sample counts (< 5 minutes on an idle CPU)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)
