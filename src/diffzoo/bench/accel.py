"""``diffzoo bench accel``: Faster Diffusion vs DeepCache, PFGM++ per D, DPM-OT's expressway.

1. Faster Diffusion (arXiv 2312.09608) and DeepCache (arXiv 2312.00858) at 50 DDIM steps on the digits UNet
   (CFG 2; FD-digits and conditional accuracy) and on TinySD (1b; CFG 5; the shapes classifier's caption
   accuracy): wall time and speed-up beside the plain sampler (two seeds: the seed-to-seed spread),
   ablations (no prior noise injection, uniform keys, parallel mode), and the relative change of every
   block's features between adjacent steps (the paper's premise), as a plot per model.
2. PFGM++ (arXiv 2302.04265): FD-digits at 35 NFE (Heun) per shipped D, and robustness to per-step noise
   injection ``x += alpha t z`` and to int8-rounded weights (table and plot).
3. DPM-OT (ICCV 2023) on the 8-mode ring (exact denoiser; mode-mixing rate, exact W2 by POT ``emd2``) and on
   digits (3b; low-confidence rate, FD-digits), with a memorisation check, against DDIM and DPM-Solver++ at
   the same NFE.
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
from diffzoo.bench.common import results_dir, section_suffix, wanted_sections
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.schedules import get_schedule
from diffzoo.data import digits, shapes, toy2d
from diffzoo.io import atomic_write_text, format_table
from diffzoo.metrics import digits_accuracy, digits_fd
from diffzoo.metrics.digits import digit_classifier
from diffzoo.models.tinysd import scene_correct
from diffzoo.sampling import get_timesteps, sample
from diffzoo.zoo.latent import load_tinysd

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


CACHE_CONFIGS: list[tuple[str, dict[str, Any] | None, bool]] = [
    ("plain DDIM-50", None, False),
    ("Faster Diffusion (paper keys, injection)", {"method": "faster-diffusion", "keys": "paper"}, True),
    ("FD parallel (paper keys, injection)", {"method": "faster-diffusion", "keys": "paper", "parallel": True}, True),
    ("FD ablation: no injection", {"method": "faster-diffusion", "keys": "paper"}, False),
    ("FD ablation: uniform keys every 5", {"method": "faster-diffusion", "keys": "uniform:5"}, True),
    ("DeepCache (uniform every 5, depth 1)", {"method": "deepcache", "keys": "uniform:5"}, False),
]


def _cache_table(den: Denoiser, ts: Tensor, draw: Any, quality: Any) -> list[dict[str, Any]]:
    """One row per :data:`CACHE_CONFIGS` entry (the plain sampler twice: seeds 0 and 1, the seed-to-seed
    spread). ``draw(denoiser, seed, inject) -> samples`` runs the sampler, ``quality(samples) -> dict``."""
    steps = ts.numel() - 1
    rows: list[dict[str, Any]] = []
    base_t = None
    for name, kw, inject in CACHE_CONFIGS:
        for seed in (0, 1) if kw is None else (0,):
            d = den if kw is None else cached_denoiser(den, ts, **kw)
            x, sec = _timed(lambda d=d, seed=seed, inject=inject: draw(d, seed, inject))
            base_t = sec if base_t is None else base_t
            rows.append(
                {
                    "method": name + (f" (seed {seed})" if kw is None else ""),
                    "full UNet calls": steps if kw is None else len(key_steps(steps, kw["keys"])),
                    "wall s": sec,
                    "speed-up": base_t / sec,
                    **quality(x),
                }
            )
    return rows


def _premise(
    model: Any, den: Denoiser, x: Tensor, ts: Tensor, cond: Any, png: str, title: str, guide: Any = None
) -> list[str]:
    """The paper's premise: relative change of every block's output between adjacent steps, a plot and a
    table with the encoder (down levels + mid) and decoder (up levels) means. ``den`` is the plain model
    denoiser; ``guide(denoiser)`` adds guidance on top of the recording network."""
    rec = FeatureRecorder(model)
    recording = den.with_net(rec)
    sample("ddim", recording if guide is None else guide(recording), x, ts, cond)
    rc = rec.relative_changes()
    names = rec.block_names()
    _line_plot(results_dir() / png, {n: rc[:, k].tolist() for k, n in enumerate(names)}, title)
    feat_rows = [
        {"block": n, "mean rel. change": float(rc[:, k].mean()), "median": float(rc[:, k].median())}
        for k, n in enumerate(names)
    ]
    n_enc = rec.split.num_levels + 1
    enc, dec = float(rc[:, :n_enc].mean()), float(rc[:, n_enc:].mean())
    return [
        "Relative change |f_k - f_{k-1}| / |f_{k-1}| of each block's output between adjacent steps (paper: encoder "
        f"features change less than decoder features); plot: {png}\n",
        format_table(feat_rows),
        "",
        f"Encoder mean {enc:.4g} vs decoder mean {dec:.4g}: the premise "
        f"{'holds' if enc < dec else 'does NOT hold'} on this model.\n",
    ]


PAPER_CACHE = (
    "Paper: SD 1.5 DDIM-50 2.369 s -> 1.407 s (1.68x; abstract: 41% faster), quality 'on par'. Seed-to-seed "
    "spread of the baseline = the two plain rows; a cached row is 'equal quality' when its metric lies within "
    "that spread."
)


@torch.no_grad()
def section_cache(quick: bool, rows_out: list[str]) -> list[dict[str, Any]]:
    zm = zoo.load("digits-unet")
    den = zm.denoiser()
    ts = get_timesteps(den.schedule, 50)
    per = 15 if quick else 100
    labels = torch.arange(10).repeat_interleave(per)
    null = torch.tensor([zm.null_class])

    def draw(d: Denoiser, seed: int, inject: bool) -> Tensor:
        x = torch.randn(labels.shape[0], 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        cb = prior_noise_injection(x, den.schedule) if inject else None
        return sample("ddim", cfg_denoiser(d, 2.0, null), x, ts, labels, callback=cb).clamp(-1, 1)

    rows = _cache_table(den, ts, draw, lambda x: {"FD-digits": digits_fd(x), "accuracy": digits_accuracy(x, labels)})
    x = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    premise = _premise(
        zm.model,
        den,
        x,
        ts,
        torch.arange(10).repeat(2),
        f"bench_accel_features{'_quick' if quick else ''}.png",
        "digits UNet: relative feature change between adjacent DDIM steps",
    )
    rows_out += [
        "## 1. Faster Diffusion vs DeepCache (digits UNet, DDIM-50, CFG 2)\n",
        f"{labels.shape[0]} samples per row. {PAPER_CACHE}\n",
        format_table(rows),
        "",
        *premise,
    ]
    return rows


@torch.no_grad()
def section_cache_tinysd(quick: bool, rows_out: list[str]) -> list[dict[str, Any]]:
    """Faster Diffusion / DeepCache on the latent text-to-image model (TinySD, SD's leading DDIM-50 grid,
    CFG 5): wall time and the shapes classifier's caption accuracy (every cell and the background right)."""
    lm = load_tinysd()
    clf = zoo.load("shapes-classifier").model.eval()
    n = 12 if quick else 128
    scenes = shapes.random_scenes(n, 4242)
    cond = lm.encode_prompt([shapes.caption(sc) for sc in scenes])
    base = lm.denoiser()
    ts = get_timesteps(lm.schedule, 50, "leading", steps_offset=1)
    shape = lm.latent_shape(n, shapes.SIZE, shapes.SIZE)

    def draw(d: Denoiser, seed: int, inject: bool) -> Tensor:
        z = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        cb = prior_noise_injection(z, base.schedule) if inject else None
        guided = cfg_denoiser(d, 5.0, lm.null_embedding(1))
        return lm.decode(sample("ddim", guided, z, ts, cond, callback=cb)).float().clamp(-1, 1)

    def quality(img: Tensor) -> dict[str, Any]:
        return {"caption accuracy": float(scene_correct(clf.predict(img), scenes).double().mean())}

    rows = _cache_table(base, ts, draw, quality)
    z = torch.randn(lm.latent_shape(8, shapes.SIZE, shapes.SIZE), generator=torch.Generator().manual_seed(0))
    premise = _premise(
        lm.unet,
        base,
        z,
        ts,
        cond[:8],
        f"bench_accel_features_tinysd{'_quick' if quick else ''}.png",
        "TinySD UNet: relative feature change between adjacent DDIM steps (CFG batch)",
        guide=lambda d: cfg_denoiser(d, 5.0, lm.null_embedding(1)),
    )
    rows_out += [
        "## 1b. Faster Diffusion vs DeepCache on TinySD (latent, DDIM-50 leading grid, CFG 5)\n",
        f"{n} captions of random shapes scenes (seed 4242); caption accuracy = the shapes classifier finds "
        f"every grid cell and the background as captioned. {PAPER_CACHE}\n",
        format_table(rows),
        "",
        *premise,
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
        row["FD rise at alpha=0.2"] = row["FD alpha=0.2"] - row["FD alpha=0"]
        row["train steps"] = zm.config.get("steps")
        rows.append(row)
    rows.sort(key=lambda r: r["D"])
    if rows:
        _line_plot(
            results_dir() / f"bench_accel_pfgmpp{'_quick' if quick else ''}.png",
            {f"D={r['D']:g}": [r[f"FD alpha={a:g}"] for a in alphas] for r in rows},
            "PFGM++ digits: FD-digits vs injected noise alpha (" + ", ".join(f"{a:g}" for a in alphas) + ")",
        )
    rows_out += [
        "## 2. PFGM++ on digits (Heun, 18 steps = 35 NFE)\n",
        f"{n} samples per cell. Paper: CIFAR-10 FID 1.92 (D=128) vs 1.98 (D=inf); smaller D degrades more slowly "
        "under per-step noise x += alpha t z and under weight quantisation. Plot: bench_accel_pfgmpp*.png.\n",
        format_table(rows) if rows else "(no pfgmpp-digits-* model in the zoo)",
        "",
    ]
    return rows


#: Adam iterations and the cap of the growing Monte-Carlo batch of the OT fit (quick, full): the official
#: cap (1.28M source draws per iteration) costs minutes per iteration on one CPU core, and even 1000
#: iterations at 40k draws against 2000 targets took over half an hour; full mode therefore fits the same
#: 500 targets as quick mode and evaluates more samples.
OT_BUDGET = {True: {"max_iter": 300, "max_batch": 40_000}, False: {"max_iter": 300, "max_batch": 40_000}}


def _ot_budget(quick: bool) -> str:
    b = OT_BUDGET[quick]
    return (
        f"Adam, at most {b['max_iter']} iterations, Monte-Carlo batch 10k doubling up to {b['max_batch'] // 1000}k "
        "(official: up to 1.28M)"
    )


@torch.no_grad()
def section_dpm_ot(quick: bool, rows_out: list[str]) -> list[dict[str, Any]]:
    ds = toy2d.get("ring8")
    sch = get_schedule("linear")
    den = ds.mixture.denoiser(sch)
    g = torch.Generator().manual_seed(0)
    n_t = 500
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
            noised_targets(data, float(a), float(s), g), source="uniform", generator=g, **OT_BUDGET[quick]
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
        f"{n_t} targets, {n} samples; OT fit: {_ot_budget(quick)}; mode mixing = farther than 3 std from every mode; "
        f"W2 to {n} fresh data points "
        "by POT's exact emd2. Paper: high quality within ~10 NFE with less mode mixture (CIFAR-10 / CelebA). "
        "The NN column compares the distance of samples to the clean points behind the OT targets with the "
        "teacher's (a much smaller value would mean retrieval).\n",
        format_table(rows),
        "",
    ]
    return rows


@torch.no_grad()
def section_dpm_ot_digits(quick: bool, rows_out: list[str]) -> list[dict[str, Any]]:
    """DPM-OT on digits: OT from the uniform source to training digits noised to the level ``back`` steps
    before the end of the 50-step DDIM grid, then the digits UNet (unconditional: the null class) for the
    last ``back`` steps; against DDIM / DPM-Solver++ at ``back`` steps and DDIM-50."""
    zm = zoo.load("digits-unet")
    den = zm.denoiser()
    sch = den.schedule
    clf = digit_classifier()
    g = torch.Generator().manual_seed(0)
    train = digits.load("train").images
    n_t = 500
    n = 200 if quick else 1000
    data = train[:n_t]
    null = torch.full((n,), int(zm.null_class))
    full = get_timesteps(sch, 50)

    def metrics(name: str, x: Tensor, nfe: int) -> dict[str, Any]:
        x = x.float().clamp(-1, 1)
        conf = torch.softmax(clf(x), -1).max(-1).values
        return {
            "method": name,
            "NFE": nfe,
            "low-confidence rate": float((conf < 0.5).double().mean()),
            "FD-digits": digits_fd(x),
            "median NN dist to targets' data": float(nearest_distance(x, data).median()),
        }

    rows = []
    for back in (5, 10):
        tail = full[-(back + 1) :]
        a, s = sch.alpha_sigma(tail[:1])
        ot = fit_semi_discrete_ot(
            noised_targets(data, float(a), float(s), g), source="uniform", generator=g, **OT_BUDGET[quick]
        )
        x, _ = dpm_ot_sample(ot, den, tail, n, (1, 8, 8), null, generator=g)
        name = f"DPM-OT (OT to t={float(tail[0]):.0f}, then DDIM)"
        rows.append({**metrics(name, x, back), "OT converged": ot.converged})
        for sampler in ("ddim", "dpmpp_2m"):
            xb = sample(sampler, den, torch.randn(n, 1, 8, 8, generator=g), get_timesteps(sch, back), null)
            rows.append(metrics(sampler, xb, back))
    teacher = sample("ddim", den, torch.randn(n, 1, 8, 8, generator=g), full, null)
    rows.append(metrics("DDIM-50 (teacher)", teacher, 50))
    ot10, best10 = rows[3], min(r["low-confidence rate"] for r in rows[4:6])
    verdict = (
        "holds" if ot10["low-confidence rate"] < best10 else "does NOT hold"
    ) + f" at 10 NFE (DPM-OT {ot10['low-confidence rate']:.3f} vs best baseline {best10:.3f})"
    rows_out += [
        "## 3b. DPM-OT on digits (digits UNet, unconditional)\n",
        f"{n_t} training digits noised to the intermediate level are the OT targets; {n} samples per row; OT fit: "
        f"{_ot_budget(quick)}. "
        "Mode mixing on digits = the held-out classifier's top probability below 0.5 (`low-confidence rate`). "
        "The NN column is the median distance of each sample to its nearest clean digit behind the targets; "
        "far below the teacher's means the expressway retrieves (memorises) its targets. Paper: fewer "
        f"mode-mixing samples at ~10 NFE. Here the claim {verdict}.\n",
        format_table(rows),
        "",
    ]
    return rows


SECTIONS = {
    "1": section_cache,
    "1b": section_cache_tinysd,
    "2": section_pfgmpp,
    "3": section_dpm_ot,
    "3b": section_dpm_ot_digits,
}


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, int(args.threads)))
    parts = [f"# bench accel{' (quick)' if args.quick else ''}\n"]
    t0 = time.perf_counter()
    wanted = wanted_sections(args.sections, SECTIONS)
    for sid, sec in SECTIONS.items():
        if sid not in wanted:
            continue
        s0 = time.perf_counter()
        n0 = len(parts)
        sec(args.quick, parts)
        parts.append(f"({time.perf_counter() - s0:.0f} s)\n")
        print("\n".join(parts[n0:]), flush=True)
    parts.append(f"Total {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(parts) + "\n"
    part = section_suffix(wanted, SECTIONS)
    out = atomic_write_text(results_dir() / f"bench_accel{'_quick' if args.quick else ''}{part}.md", text)
    print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("accel", help="Faster Diffusion vs DeepCache, PFGM++ per D, DPM-OT")
    p.add_argument("--quick", action="store_true", help="small sample counts (< 5 minutes on an idle CPU)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--sections",
        default=None,
        help="comma-separated section ids (1, 1b, 2, 3, 3b; default all); a subset writes bench_accel[_quick]_<ids>.md",
    )
    p.set_defaults(func=run)
