"""``diffzoo bench quant``: PTQ4DM, Q-Diffusion (+/- split), QuEST-style and min-max PTQ beside full precision,
the calibration ablation, and real int8 speed / size.

Sections (``--sections``; ``docs/results/bench_quant[_quick][_<ids>].md``, samples in ``bench_quant*_*.png``):

1. speed / size: float32 vs real int8 (torch.ao, x86) vs the simulated model, side by side in one run, with
   the output difference int8 vs simulated, on TinySD's VAE decoder and UNet at batch 16, a random diffusers
   ``UNet2DModel`` (64-128 channels, 32x32), the digits UNet (8x8) and the ``M = 1`` time MLP;
2. digits UNet (zoo ``digits-unet``): FD-digits and conditional accuracy at W8A8 / W4A8 / W4A4 per method;
3. calibration ablation: Q-Diffusion's reconstruction on time-step-aware vs NDTC vs uniform calibration;
4. TinySD (UNet + VAE decoder quantized): caption accuracy by the ``shapes-classifier`` and FD on its
   features vs renders of the true scenes.

Papers' numbers are quoted beside ours; they are on other models and datasets (CIFAR/LSUN/ImageNet FID),
so only the *direction* (how much each method loses against full precision) is comparable.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from diffzoo import zoo
from diffzoo.bench.common import results_dir, section_suffix, wanted_sections
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.random import generators_from_seeds
from diffzoo.data import shapes
from diffzoo.io import atomic_write_text, format_table, save_grid
from diffzoo.metrics import frechet_distance
from diffzoo.metrics.digits import digits_accuracy, digits_fd
from diffzoo.models.tinysd import scene_correct
from diffzoo.quant import CalibSet, quantize
from diffzoo.quant.calib import select
from diffzoo.quant.int8 import lower, observe_outputs, weight_bytes
from diffzoo.quant.layers import QuantAttnProcessor
from diffzoo.quant.model import set_mode
from diffzoo.sampling import get_timesteps, initial_noise, sample
from diffzoo.zoo.latent import load_tinysd
from diffzoo.zoo.quant import diffusion_bank, latent_banks, sample_latent

Tensor = torch.Tensor
SETTINGS = ((8, 8), (4, 8), (4, 4))
METHOD_ROWS = (
    ("minmax", "min-max PTQ", {}),
    ("ptq4dm", "PTQ4DM", {}),
    ("qdiffusion", "Q-Diffusion (no split)", {"split": False}),
    ("qdiffusion", "Q-Diffusion", {}),
    ("quest", "QuEST-style", {}),
)
PAPER = {
    "min-max PTQ": "Q-Diff. README: plain PTQ at 4 bit: FID +>100",
    "PTQ4DM": "IN-64 IDDPM W8A8: FID 21.7 -> 24.3",
    "Q-Diffusion": "4-bit weights: FID change <= 2.34",
    "Q-Diffusion (no split)": "(split ablation: worse at W4)",
    "QuEST-style": "LSUN-Bed FID: FP 2.95, W8A8 3.03, W4A8 3.26, W4A4 5.64",
}


def _digits_eval(model_zm: Any, n: int, steps: int, seed: int = 1) -> tuple[float, float, Tensor]:
    labels = torch.arange(n) % 10
    den = model_zm.denoiser()
    den = cfg_denoiser(den, 2.0, torch.tensor([model_zm.null_class]))
    ts = get_timesteps(den.schedule, steps, "uniform")
    x0 = initial_noise(
        den, (n, *model_zm.sample_shape), ts, generators_from_seeds(range(10**6 * seed, 10**6 * seed + n))
    )
    with torch.no_grad():
        x = sample("ddim", den, x0, ts, labels)
    return digits_fd(x), digits_accuracy(x, labels), x


def _vs_fp(x: Tensor, x_fp: Tensor) -> dict[str, float]:
    """How far quantization moves each sample from the full-precision one drawn from the same noise: the median
    per-sample MSE and the fraction of samples that diverge (per-sample MSE > 0.1: another image)."""
    per = (x - x_fp).pow(2).flatten(1).mean(1)
    return {"med_mse_vs_fp": float(per.median()), "diverged": float((per > 0.1).float().mean())}


def _quantized_digits(
    bank: CalibSet, method: str, wb: int, ab: int, iters: int, n_calib: int, x_fp: Tensor, n_eval: int, steps: int, **kw
) -> tuple[Any, dict[str, float], Tensor, float]:
    """Quantize a fresh ``digits-unet`` and evaluate it: ``(result, metrics, samples, seconds to quantize)``."""
    zm = zoo.load("digits-unet")
    t1 = time.perf_counter()
    res = quantize(zm.model, bank, method, wb, ab, iters=iters, n_calib=n_calib, **kw)
    qs = time.perf_counter() - t1
    fd, acc, x = _digits_eval(zm, n_eval, steps)
    return res, {"fd_digits": fd, "cond_acc": acc, **_vs_fp(x, x_fp)}, x, qs


def _digits_setup(quick: bool) -> tuple[Any, CalibSet, int, int, int]:
    n_eval, steps = (100, 20) if quick else (300, 20)
    iters = 10 if quick else 50
    base = zoo.load("digits-unet")
    bank = diffusion_bank(base.denoiser(), base.sample_shape, 32 if quick else 64, 20, 2.0, base.null_class, 10, 0)
    return base, bank, n_eval, steps, iters


def digits_table(quick: bool, out_png: str) -> tuple[list[dict], dict]:
    """Section 2: every method at every setting on the digits UNet (quick: min-max and Q-Diffusion, W8A8/W4A8)."""
    base, bank, n_eval, steps, iters = _digits_setup(quick)
    settings = SETTINGS[:2] if quick else SETTINGS
    methods = [METHOD_ROWS[0], METHOD_ROWS[3]] if quick else list(METHOD_ROWS)
    t0 = time.perf_counter()
    fd, acc, x_fp = _digits_eval(base, n_eval, steps)
    rows = [
        dict(
            setting="FP32",
            method="full precision",
            fd_digits=fd,
            cond_acc=acc,
            med_mse_vs_fp=0.0,
            diverged=0.0,
            quant_s=0.0,
            calibration="",
            iters=0,
            paper="",
        )
    ]
    panels = {"FP32": x_fp[:20]}
    for wb, ab in settings:
        for key, label, kw in methods:
            n_calib = 128 if quick else 256
            res, metrics, x, qs = _quantized_digits(bank, key, wb, ab, iters, n_calib, x_fp, n_eval, steps, **kw)
            rows.append(
                dict(
                    setting=f"W{wb}A{ab}",
                    method=label,
                    **metrics,
                    quant_s=qs,
                    calibration=res.calibration,
                    iters=res.settings["iters"],
                    paper=PAPER[label],
                )
            )
            panels[f"W{wb}A{ab} {label}"] = x[:20]
            print(format_table(rows[-1:]), flush=True)
    save_grid(torch.cat(list(panels.values())), out_png, nrow=20)
    info = dict(n_eval=n_eval, steps=steps, iters=iters, wall_s=time.perf_counter() - t0)
    return rows, info


def calibration_ablation(quick: bool) -> list[dict]:
    """Section 3: Q-Diffusion's reconstruction on time-step-aware vs NDTC vs uniform calibration rows (W4A8 and
    W4A4; quick: W4A4 only)."""
    base, bank, n_eval, steps, iters = _digits_setup(quick)
    x_fp = _digits_eval(base, n_eval, steps)[2]
    rows = []
    for cal in ("timestep_aware", "ndtc", "uniform"):
        for wb, ab in ((4, 4),) if quick else ((4, 8), (4, 4)):
            n_calib = 128 if quick else 256
            _, metrics, _, _ = _quantized_digits(
                bank, "qdiffusion", wb, ab, iters, n_calib, x_fp, n_eval, steps, calibration=cal
            )
            rows.append(dict(setting=f"W{wb}A{ab}", calibration=cal, **metrics, mean_t=res_t_mean(bank, cal)))
            print(format_table(rows[-1:]), flush=True)
    return rows


def res_t_mean(bank: CalibSet, cal: str) -> float:
    return float(select(bank, cal, 256, torch.Generator().manual_seed(0)).t.mean())


def _tinysd_eval(lm: Any, clf: nn.Module, n: int, steps: int) -> tuple[float, float, Tensor]:
    scenes = shapes.random_scenes(n, 4242)
    imgs = torch.cat(
        [
            sample_latent(lm, [shapes.caption(s) for s in scenes[i : i + 50]], steps, 5.0, 100 + i)
            for i in range(0, n, 50)
        ]
    )
    with torch.no_grad():
        acc = float(scene_correct(clf.predict(imgs), scenes).float().mean())
        feats = lambda im: torch.cat([v.flatten(1) for v in clf(im).values()], 1).double()  # noqa: E731
        fd = float(frechet_distance(feats(imgs), feats(shapes.render_batch(scenes))))
    return acc, fd, imgs


def tinysd_table(quick: bool, out_png: str) -> tuple[list[dict], dict]:
    """Section 4: min-max, Q-Diffusion and QuEST-style on TinySD (UNet and VAE decoder quantized together);
    quick: 32 captions, W8A8 and W4A8, min-max and Q-Diffusion, 5 reconstruction iterations."""
    n, steps, iters = (32, 20, 5) if quick else (200, 20, 50)
    settings = SETTINGS[:2] if quick else SETTINGS
    methods = (METHOD_ROWS[0], METHOD_ROWS[3]) if quick else (METHOD_ROWS[0], METHOD_ROWS[3], METHOD_ROWS[4])
    clf = zoo.load("shapes-classifier").model.eval()
    lm = load_tinysd()
    banks = latent_banks(lm, 16 if quick else 32, 20, 5.0, 0)
    acc, fd, img = _tinysd_eval(lm, clf, n, steps)
    rows = [dict(setting="FP32", method="full precision", caption_acc=acc, fd_clf=fd, quant_s=0.0, paper="")]
    panels = [img[:16]]
    for wb, ab in settings:
        for key, label, kw in methods:
            lm = load_tinysd()
            t1 = time.perf_counter()
            for sub in ("unet", "vae.decoder"):
                net = lm.unet if sub == "unet" else lm.vae.decoder
                quantize(net, banks[sub], key, wb, ab, iters=iters, n_calib=128 if quick else 256, **kw)
            qs = time.perf_counter() - t1
            acc, fd, img = _tinysd_eval(lm, clf, n, steps)
            rows.append(
                dict(setting=f"W{wb}A{ab}", method=label, caption_acc=acc, fd_clf=fd, quant_s=qs, paper=PAPER[label])
            )
            panels.append(img[:16])
            print(format_table(rows[-1:]), flush=True)
    save_grid(torch.cat(panels), out_png, nrow=16)
    return rows, dict(n=n, steps=steps, iters=iters)


SPEED_NOTE = (
    "\n`speedup` = float32 / int8 wall time (best of repeats). int8 = min-max W8A8 (activations 0..127, "
    "fbgemm's reduce_range) on torch.ao quantized conv/linear islands; norms and activations float; attention "
    "matmuls on torch's fused float kernel (`int8_ms`) or, as in the simulation, explicit with fake-quantized "
    "q/k/v/probs (`int8_sim_attn_ms`; nan: no attention). `max_diff_int8_vs_sim` = largest |int8 - simulated| "
    "output difference (the int8 kernels requantize each layer's output to 8 bits, and the lowered attention "
    "is float, neither of which the simulation does); `rel_mse_*_vs_fp` = W8A8 error relative to the output "
    "power. Sizes: weights of the quantized layers, float32 vs packed codes + per-channel scales. Where "
    "`speedup` < 1 int8 does not pay.\n"
)


def _time(fn: Callable[[], Any], repeats: int) -> float:
    with torch.no_grad():
        fn()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
    return best


def _speed_row(name: str, net: nn.Module, bank: CalibSet, batch: CalibSet, repeats: int) -> dict:
    fp = copy.deepcopy(net).eval()
    quantize(net, bank, "minmax", 8, 8, n_calib=64, act_qmax=127, batch_size=16)
    observe_outputs(net, bank.batches(64))
    sizes = weight_bytes(net)
    has_attn = any(isinstance(m, QuantAttnProcessor) for m in net.modules())
    with torch.no_grad():
        set_mode(net, "sim")
        sim_out = batch.call(net)
        t_sim = _time(lambda: batch.call(net), repeats)
        t_qs = float("nan")
        if has_attn:  # int8 islands with the simulated (explicit, fake-quantized) attention matmuls
            qs_net = copy.deepcopy(net)
            lower(qs_net, strict=True, attention="sim")
            t_qs = _time(lambda: batch.call(qs_net), repeats)
            del qs_net
        lower(net, strict=True)  # attention on the fused float kernel
        q_out = batch.call(net)
        t_q = _time(lambda: batch.call(net), repeats)
        fp_out = batch.call(fp)
        t_fp = _time(lambda: batch.call(fp), repeats)
    first = lambda o: o if isinstance(o, Tensor) else o[0] if isinstance(o, tuple) else o.sample  # noqa: E731
    rel = lambda a, b: float((first(a) - first(b)).pow(2).mean() / first(b).pow(2).mean())  # noqa: E731
    return dict(
        model=name,
        input=str(tuple(batch.args[0].shape)),
        fp32_ms=1e3 * t_fp,
        int8_ms=1e3 * t_q,
        int8_sim_attn_ms=1e3 * t_qs,
        sim_ms=1e3 * t_sim,
        speedup=t_fp / t_q,
        max_diff_int8_vs_sim=float((first(q_out) - first(sim_out)).abs().max()),
        rel_mse_sim_vs_fp=rel(sim_out, fp_out),
        rel_mse_int8_vs_fp=rel(q_out, fp_out),
        fp32_kib=sizes["float32"] / 1024,
        packed_kib=sizes["packed"] / 1024,
    )


def _rows(bank: CalibSet, n: int) -> CalibSet:
    return bank.subset(torch.arange(n) % len(bank))


def speed_table(quick: bool) -> list[dict]:
    torch.backends.quantized.engine = "x86"
    repeats = 2 if quick else 10
    rows = []
    lm = load_tinysd()
    banks = latent_banks(lm, 8, 10, 5.0, 0)
    rows.append(
        _speed_row("TinySD VAE decoder", lm.vae.decoder, banks["vae.decoder"], _rows(banks["vae.decoder"], 16), repeats)
    )
    rows.append(_speed_row("TinySD UNet", lm.unet, banks["unet"], _rows(banks["unet"], 16), repeats))
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
    ).eval()
    g = torch.Generator().manual_seed(0)
    calls = [((torch.randn(16, 3, 32, 32, generator=g), torch.full((16,), float(t))), {}) for t in (900, 500, 100)]
    ub = CalibSet.from_calls(calls)
    rows.append(_speed_row("diffusers UNet2DModel (64-128 ch, random)", unet, ub, _rows(ub, 16), repeats))
    base = zoo.load("digits-unet")
    db = diffusion_bank(base.denoiser(), base.sample_shape, 16, 10, 2.0, base.null_class, 10, 0)
    rows.append(_speed_row("digits UNet (8x8)", base.model, db, _rows(db, 32), repeats))
    mlp = nn.Sequential(nn.Linear(64, 256), nn.SiLU(), nn.Linear(256, 256)).eval()
    mb = CalibSet.from_calls([((torch.randn(1, 64, generator=g),), {}) for _ in range(8)])
    rows.append(_speed_row("time MLP, M = 1", mlp, mb, _rows(mb, 1), repeats * 10))
    return rows


def section_speed(quick: bool, suffix: str, parts: list[str]) -> None:
    parts += [
        "## 1. Real int8 (torch.ao x86) vs float32 vs simulated, side by side\n",
        format_table(speed_table(quick)),
        SPEED_NOTE,
    ]


def section_digits(quick: bool, suffix: str, parts: list[str]) -> None:
    rows, info = digits_table(quick, str(results_dir() / f"bench_quant{suffix}_digits.png"))
    parts += [
        "## 2. Digits UNet (zoo `digits-unet`): FD-digits (lower is better) and conditional accuracy\n",
        format_table(rows),
        f"\nDDIM {info['steps']} steps, CFG 2, {info['n_eval']} samples (labels i mod 10), the same seeds for "
        f"every row; reconstruction {info['iters']} iterations per block (papers: 20 000) on a calibration bank "
        "of the model's own FP trajectories. First/last conv keep 8-bit weights. FD on few samples is noisy "
        "(about +-0.3). `med_mse_vs_fp` = median over samples of the mean squared pixel difference (images in "
        "[-1, 1]) to the full-precision sample from the same noise; `diverged` = fraction of samples whose "
        "difference exceeds 0.1 (the sampler ended on another image). "
        f"Samples: `bench_quant{suffix}_digits.png` (one row per setting, table order).\n",
    ]


def section_calibration(quick: bool, suffix: str, parts: list[str]) -> None:
    parts += [
        "## 3. Calibration ablation (Q-Diffusion reconstruction; digits UNet)\n",
        format_table(calibration_ablation(quick)),
        "\nTime-step-aware = Q-Diffusion's rows spread evenly over the sampler's steps; NDTC = PTQ4DM's normal "
        "time-step calibration (time indices from a normal around 0.4 T, the true x_t with its true t; the "
        "released code pairs them wrongly); uniform = uniformly random steps. `mean_t` = mean network time of "
        "the selected rows (999 = pure noise). Same evaluation (and `med_mse_vs_fp`, `diverged`) as section 2.\n",
    ]


def section_tinysd(quick: bool, suffix: str, parts: list[str]) -> None:
    rows, info = tinysd_table(quick, str(results_dir() / f"bench_quant{suffix}_tinysd.png"))
    parts += [
        "## 4. TinySD (UNet + VAE decoder quantized): caption accuracy and FD on classifier features\n",
        format_table(rows),
        f"\n{info['n']} random captions, DDIM {info['steps']} steps, CFG 5; caption accuracy = fraction of "
        "samples the zoo `shapes-classifier` reads as the caption's scene; FD between the classifier's "
        f"features of samples and of renders of the true scenes; reconstruction {info['iters']} iterations per "
        f"block. Samples: `bench_quant{suffix}_tinysd.png` (16 per row, table order).\n",
    ]


#: speed/size, digits methods, calibration ablation, TinySD
SECTION_FNS = {"1": section_speed, "2": section_digits, "3": section_calibration, "4": section_tinysd}
SECTIONS = tuple(SECTION_FNS)
QUICK_SECTIONS = ("1", "2", "3")  # --quick without --sections (TinySD's quick table only on request)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    default = QUICK_SECTIONS if args.quick else SECTIONS
    wanted = wanted_sections(args.sections, SECTIONS) if args.sections else default
    suffix = ("_quick" if args.quick else "") + section_suffix(wanted, default if args.sections is None else SECTIONS)
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    parts = [
        f"# diffzoo bench quant{' --quick' if args.quick else ''}\n",
        f"CPU, {torch.get_num_threads()} thread(s), {platform.processor() or 'cpu'}; a shared 2-core machine (other "
        "jobs may run on the second core): wall times vary run to run, compare within a table only (best of "
        "several repeats).\n",
    ]
    md = out / f"bench_quant{suffix}.md"

    def flush(n0: int, s0: float) -> None:
        parts.append(f"({time.perf_counter() - s0:.0f} s)\n")
        print("\n".join(parts[n0:]), flush=True)
        atomic_write_text(md, "\n".join(parts) + f"\n\n(wall time so far {time.perf_counter() - t0:.0f} s)\n")

    for sid in wanted:
        n0, s0 = len(parts), time.perf_counter()
        SECTION_FNS[sid](args.quick, suffix, parts)
        flush(n0, s0)
    parts.append(f"\nTotal wall time {time.perf_counter() - t0:.0f} s.\n")
    atomic_write_text(md, "\n".join(parts))
    print(f"wrote {md}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quant", help="post-training quantization: PTQ4DM, Q-Diffusion, QuEST, int8 speed")
    p.add_argument(
        "--quick",
        action="store_true",
        help="speed table; digits at W8A8/W4A8 (min-max, Q-Diffusion); calibration ablation at W4A4 (< 5 minutes)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--sections",
        default=None,
        help="comma-separated section ids (1 speed/size, 2 digits methods, 3 calibration ablation, 4 TinySD; "
        "default all, or 1-3 with --quick); a subset writes bench_quant[_quick]_<ids>.md",
    )
    p.set_defaults(func=run)
