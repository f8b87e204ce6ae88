"""``diffzoo bench forensics``: the four forensics papers of issue 14, with each paper's number beside ours.

Tables go to ``docs/results/bench_forensics[_quick].md``; ROC curves, the learned-vs-exact score plot and
sample grids to ``docs/results/bench_forensics*_*.png``.

1. **DIRE** (Wang et al., ICCV 2023, arXiv 2303.09295): the shipped ``dire-digits`` detector (small CNN
   on DIRE maps of the digits UNet, DDIM 20-step inversion + reconstruction) against ``pixels-digits``
   (the same CNN on raw pixels), both trained on ``digits-unet/ddim50`` samples vs the ``train`` split in
   one format, tested on the held-out ``test`` split vs fresh samples of the training generator and of
   other generators (other samplers / step counts, a distilled one-step SlimFlow student, the masked-digits
   model). The *format control*: a
   detector that only measures the distance to the real data's 17 pixel levels, on generated pixels
   rounded to those levels (the same format) or not. Then the same on shapes: ``dire-shapes`` /
   ``pixels-shapes`` (renders vs TinySD DDIM-25; DIRE through the VAE), tested on DDIM-10, CFG 2 and the
   masked-shapes model.
2. **Hallucination** (Aithal et al., NeurIPS 2024, arXiv 2406.09358): the shipped ``halluc-1d`` (and
   ``halluc-grid25``) DDPM; fraction of samples between modes (> 4 sigma from every mode) against the
   number of ancestral steps and the training-set size (``halluc-1d-n500`` / ``-n5000``); the
   x0-variance detector over the last 10 steps (ROC AUC, removed/kept at the threshold keeping 96% of
   in-support samples); the learned vs the exact mixture score; and SIMPLE SHAPES (``halluc-shapes``):
   repeated-shape hallucinations found by the shapes detector, and the same x0-variance filter.
3. **Diff-Protect** (Xue et al., ICLR 2024, arXiv 2311.12832) on TinySD: every method at 16/255, wall
   time and saved-for-backward bytes against AdvDM, the encoder's ``|dz|/|z|`` vs ``|dx|/|x|``, and SDEdit
   mimicry of protected vs clean images at strengths 0.1-0.5 (PSNR/SSIM to the source, shapes classifier).
4. **Laundering** (Mandelli et al. 2024, arXiv 2407.10736): PSNR of the VAE round trip / img2img (how
   invisible laundering is) and, where the zoo ships them, the two-stage patch detectors.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from diffzoo import zoo
from diffzoo.bench.common import results_dir
from diffzoo.data import shapes, toy2d
from diffzoo.forensics.detection import detection_metrics, roc_pr_curves, threshold_for_kept
from diffzoo.forensics.hallucination import between_modes, hallucination_score, sample_with_x0, score_field
from diffzoo.forensics.protect import PROTECT_METHODS, latent_change, protect
from diffzoo.io import atomic_write_text, format_table, save_grid, save_pil
from diffzoo.metrics.image import psnr, ssim
from diffzoo.models.tinysd import scene_correct
from diffzoo.zoo.forensics import (
    SHAPES_GENERATOR,
    TRAIN_GENERATOR,
    detector_probs,
    digits_dire,
    generated_digits,
    generated_shapes,
    launder,
    patch_scores,
    real_digits,
    real_shapes,
    shapes_hallucinations,
    tinysd_samples,
    two_stage,
)
from diffzoo.zoo.latent import load_tinysd

log = logging.getLogger(__name__)
Tensor = torch.Tensor
BENCH_SEED = 3000  # fresh samples: the detectors' training (1000) and held-out (2000) seeds differ
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


# -------------------------------------------------------------------------------------------------
# plots without matplotlib (PIL line plots)
# -------------------------------------------------------------------------------------------------


def line_plot(series: dict[str, tuple[Any, Any]], path: Path, title: str, xlim=None, ylim=None, size=420) -> Path:
    """A minimal line plot of ``name -> (xs, ys)`` with a legend, written through :mod:`diffzoo.io`."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    m = 40
    xs_all = [float(v) for xs, _ in series.values() for v in xs]
    ys_all = [float(v) for _, ys in series.values() for v in ys if math.isfinite(float(v))]
    x0, x1 = xlim or (min(xs_all), max(xs_all))
    y0, y1 = ylim or (min(ys_all), max(ys_all))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(x: float, y: float) -> tuple[float, float]:
        return m + (x - x0) / (x1 - x0) * (size - 2 * m), size - m - (y - y0) / (y1 - y0) * (size - 2 * m)

    d.rectangle([m, m, size - m, size - m], outline="black")
    d.text((m, 8), title, fill="black")
    d.text((m, size - m + 4), f"{x0:.3g}", fill="black")
    d.text((size - m - 20, size - m + 4), f"{x1:.3g}", fill="black")
    d.text((4, size - m - 10), f"{y0:.3g}", fill="black")
    d.text((4, m), f"{y1:.3g}", fill="black")
    for k, (name, (xs, ys)) in enumerate(series.items()):
        c = COLORS[k % len(COLORS)]
        pts = [px(float(a), float(b)) for a, b in zip(xs, ys) if math.isfinite(float(b))]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        d.text((m + 6, m + 6 + 12 * k), name, fill=c)
    return save_pil(img, path)


# -------------------------------------------------------------------------------------------------
# 1. DIRE
# -------------------------------------------------------------------------------------------------


def _has(name: str) -> bool:
    return name in zoo.names()


def level_distance(x: Tensor) -> Tensor:
    """Format-only detector: mean distance of the pixels to the real data's 17 levels (``v/8 - 1``)."""
    v = (x + 1) * 8
    return (v - v.round()).abs().flatten(1).mean(1)


def _detector_rows(
    real: Tensor, fakes: dict[str, Tensor], dets: dict[str, Any], train_gen: str, tinysd=None
) -> tuple[list[dict], dict[str, tuple]]:
    """One row per test generator: each detector's acc / AP / AUC / TPR@1%FPR on ``real`` vs that
    generator's images (the real images are scored once per detector), and the ROC curves."""
    n = real.shape[0]
    p_real = {name: detector_probs(zm, real, tinysd) for name, zm in dets.items()}
    rows, curves = [], {}
    for g, fake in fakes.items():
        row: dict[str, Any] = {"test generator": g + (" (train)" if g == train_gen else "")}
        y = torch.cat([torch.zeros(n), torch.ones(fake.shape[0])])
        for name, zm in dets.items():
            p = torch.cat([p_real[name], detector_probs(zm, fake, tinysd)])
            m = detection_metrics(p, y)
            tag = "DIRE" if zm.config["detector"]["input"] == "dire" else "pixels"
            row.update({f"{tag} acc": m["acc"], f"{tag} AP": m["ap"], f"{tag} AUC": m["auc"]})
            row[f"{tag} TPR@1%FPR"] = m["tpr_at_1fpr"]
            c = roc_pr_curves(p, y)
            curves[f"{tag} {g}"] = (c["fpr"], c["tpr"])
            curves[f"PR {tag} {g}"] = (c["recall"], c["precision"])
        rows.append(row)
    return rows, curves


def _roc_plots(curves: dict[str, tuple], out: Path, stem: str, what: str) -> None:
    """ROC (``<stem>_<tag>_roc.png``) and precision-recall (``<stem>_<tag>_pr.png``) plots per detector."""
    for tag, label in (("DIRE", "DIRE detector"), ("pixels", "raw-pixel detector")):
        for kind, prefix, axes in (("roc", "", "FPR vs TPR"), ("pr", "PR ", "recall vs precision")):
            key = prefix + tag + " "
            sel = {k[len(key) :]: v for k, v in curves.items() if k.startswith(key)}
            if sel:
                title = f"{label} {kind.upper()} ({axes}), {what}"
                line_plot(sel, out / f"{stem}_{tag.lower()}_{kind}.png", title, (0, 1), (0, 1))


def bench_dire(quick: bool, out: Path, prefix: str) -> tuple[str, list[str]]:
    notes: list[str] = []
    real = real_digits("test")[: 100 if quick else 300]
    n = real.shape[0]
    gens = ["digits-unet/ddim50", "digits-unet/ddim10", "digits-unet/ddpm100", "digits-unet/dpmpp_2m20"]
    if quick:
        gens = gens[:1]
    gens += [g for g in ("slimflow-distill-guided/gen1", "masked-digits/fhs") if _has(g.split("/")[0])]
    fakes = {g: generated_digits(g, n, BENCH_SEED) for g in gens}
    dets = {name: zoo.load(name) for name in ("dire-digits", "pixels-digits") if _has(name)}
    if not dets:
        notes.append("DIRE: no shipped digits detectors (train them with the commands in the zoo JSONs).")
    t0 = time.perf_counter()
    d_real = digits_dire(real)
    dire_s = time.perf_counter() - t0
    if dets:
        rows, curves = _detector_rows(real, fakes, dets, TRAIN_GENERATOR)
    else:
        rows, curves = [{"test generator": g} for g in fakes], {}
    for row, fake in zip(rows, fakes.values()):
        row["mean DIRE real"] = float(d_real.mean())
        row["mean DIRE fake"] = float(digits_dire(fake).mean())
    _roc_plots(curves, out, f"{prefix}_dire_digits", "digits")
    save_grid(torch.cat([real[:16]] + [f[:16] for f in fakes.values()]), out / f"{prefix}_dire_samples.png", nrow=16)
    # the format control
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    cont = generated_digits(TRAIN_GENERATOR, n, BENCH_SEED, same_format=False)
    ctrl = []
    for label, fake in (
        ("generated pixels left continuous (PNG vs float)", cont),
        ("rounded to the 17 levels (same format)", fakes[TRAIN_GENERATOR]),
    ):
        m = detection_metrics(level_distance(torch.cat([real, fake])), y, threshold=1e-6)
        ctrl.append({"format of the generated class": label, "format-only detector AUC": m["auc"], "acc": m["acc"]})
    text = [
        "## 1. DIRE: real vs generated images",
        "",
        "### Digits: real held-out digits vs generated digits",
        "",
        f"Real: {n} held-out test digits; generated: {n} fresh samples per generator (seed {BENCH_SEED}),",
        "rounded to the real data's 17 pixel levels (the same format for both classes). DIRE: DDIM inversion +",
        f"reconstruction, 20 steps, digits-unet unconditional (null class); {dire_s:.1f} s for the {n} real",
        f"digits. Detectors trained on {TRAIN_GENERATOR} vs the train split (zoo JSONs: commands, metrics).",
        "",
        format_table(rows),
        "",
        "Paper (DIRE, ResNet-50 on DiffusionForensics): ~100% acc/AP in-domain; trained on ADM (LSUN-B), tested on",
        "SD-v1 (ImageNet) 97.2 / 99.8 acc / AP, ADM (ImageNet) 90.2 / 97.9. Positive class = generated.",
        "",
        "**Format control** (the later finding that DIRE's released model separated JPEG from PNG): a detector",
        "that only measures the distance of the pixels to the 17 levels of the real data.",
        "",
        format_table(ctrl),
        "",
    ]
    sdets = {name: zoo.load(name) for name in ("dire-shapes", "pixels-shapes") if _has(name)}
    if not sdets:
        notes.append("DIRE: no shipped shapes detectors (dire-shapes, pixels-shapes); the TinySD table is missing.")
        return "\n".join(text), notes
    tinysd = load_tinysd()
    ns = 40 if quick else 200
    sreal, _ = real_shapes(ns, BENCH_SEED)
    sgens = [SHAPES_GENERATOR] + ([] if quick else ["tinysd/ddim10", "tinysd-cfg2/ddim25"])
    if _has("masked-shapes"):
        sgens.append("masked-shapes/fhs")
    sfakes = {g: generated_shapes(g, ns, BENCH_SEED, tinysd) for g in sgens}
    srows, scurves = _detector_rows(sreal, sfakes, sdets, SHAPES_GENERATOR, tinysd)
    _roc_plots(scurves, out, f"{prefix}_dire_shapes", "shapes / TinySD")
    plots = f"`{prefix}_dire_{{digits,shapes}}_{{dire,pixels}}_{{roc,pr}}.png`"
    save_grid(torch.cat([sreal[:8]] + [f[:8] for f in sfakes.values()]), out / f"{prefix}_dire_shapes.png", nrow=8)
    text += [
        "### Shapes: renders vs TinySD samples (DIRE through the VAE)",
        "",
        f"Real: {ns} fresh renders; generated: {ns} samples per generator (captions of fresh scenes), all 8-bit.",
        "DIRE: encode, DDIM-20 inversion and reconstruction in TinySD's latent space (empty prompt), decode;",
        f"detectors trained on {SHAPES_GENERATOR} (CFG 5) vs renders. Cross-generator: fewer steps, CFG 2, and",
        f"the masked discrete model (a different generator family). Grid: `{prefix}_dire_shapes.png`;",
        f"ROC and precision-recall curves: {plots}.",
        "",
        format_table(srows),
        "",
    ]
    return "\n".join(text), notes


# -------------------------------------------------------------------------------------------------
# 2. hallucination
# -------------------------------------------------------------------------------------------------


def bench_hallucination(quick: bool, out: Path, prefix: str) -> tuple[str, list[str]]:
    notes: list[str] = []
    rows, det_rows = [], []
    parts = ["## 2. Hallucination by mode interpolation", ""]
    models = [("halluc-1d", "mixture1d"), ("halluc-grid25", "grid25")]
    models += [(f"halluc-1d-n{k}", "mixture1d") for k in (500, 5000)]  # training-set size (halluc-1d: 50k)
    for name, dataset in models:
        if not _has(name):
            notes.append(f"hallucination: zoo model {name} not shipped; its rows are missing.")
            continue
        zm = zoo.load(name)
        size = str(zm.config.get("dataset", ""))
        den = zm.denoiser()
        data = toy2d.get(dataset)
        sigma = float(data.mixture.stds.max())
        n = 1000 if quick else 10000
        main_model = name in ("halluc-1d", "halluc-grid25")
        for steps in ((1000, 250, 100) if not quick else (1000, 100)) if main_model else (1000,):
            g = torch.Generator().manual_seed(BENCH_SEED)
            t0 = time.perf_counter()
            x, x0s = sample_with_x0(den, torch.randn(n, data.dim, generator=g), steps, 10, generator=g)
            bad = between_modes(x.double(), data.modes, sigma)
            row = {"model": name, "training set": size, "ancestral steps": steps, "samples": n}
            row["between modes"] = float(bad.double().mean())
            row["wall s"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            if steps == 1000 and main_model:
                det_rows.append(
                    {"model": name} | _filter_row(x0s, bad) | {"paper: removed / kept": "> 0.95 / 0.96 (shapes)"}
                )
        if name == "halluc-1d":
            xs = torch.linspace(0.5, 3.5, 301, dtype=torch.float64)[:, None]
            exact = data.mixture.denoiser(den.schedule)
            series = {}
            for t in (5.0, 30.0):
                a = float(den.schedule.alpha_sigma(torch.tensor([t], dtype=torch.float64))[0])
                pts = xs * a  # the noisy state around the scaled modes
                series[f"learned t={t:g}"] = (xs[:, 0], score_field(den, pts.float(), t)[:, 0])
                series[f"exact t={t:g}"] = (xs[:, 0], score_field(exact, pts, t)[:, 0])
            line_plot(series, out / f"{prefix}_score_1d.png", "score vs x0-scale position (learned vs exact)")
    shapes_text = _hallucination_shapes(quick, out, prefix, notes)
    parts += [
        "DDPM of the paper (T = 1000, linear betas 0.001..0.2, eps-prediction, MLP 128 x 3) trained on 50k points",
        "(halluc-1d-n500 / -n5000: the same on 500 / 5000 points, the training-set-size ablation);",
        "a sample is a hallucination if it is more than 4 sigma from every mode.",
        "",
        format_table(rows) if rows else "(no shipped models)",
        "",
        "Detector: Hal(x) = variance of the predicted x0 over the last 10 of 1000 ancestral steps; threshold set to",
        "keep 96% of the in-support samples (the paper's operating point).",
        "",
        format_table(det_rows) if det_rows else "(no shipped models)",
        "",
        f"Learned vs exact score (1-D): `{prefix}_score_1d.png`; the exact mixture score jumps between modes where",
        "the learned one is smooth (mode interpolation).",
        "",
        shapes_text,
    ]
    return "\n".join(parts), notes


def _filter_row(x0s: Tensor, bad: Tensor, kept: float = 0.96) -> dict[str, Any]:
    """The x0-variance filter on one set of samples: ROC AUC / AP of ``Hal`` for the hallucinations ``bad``
    and the fraction of them removed at the threshold keeping ``kept`` of the in-support samples."""
    hal = hallucination_score(x0s)
    m = detection_metrics(hal, bad.long()) if 0 < int(bad.sum()) < bad.numel() else None
    thr = threshold_for_kept(hal, ~bad, kept) if bool((~bad).any()) else math.nan
    return {
        "hallucinations": int(bad.sum()),
        "in-support": int((~bad).sum()),
        "Hal ROC AUC": m["auc"] if m else math.nan,
        "Hal AP": m["ap"] if m else math.nan,
        "kept in-support": kept,
        "hallucinations removed": float((hal[bad] > thr).double().mean()) if bool(bad.any()) else math.nan,
    }


def _hallucination_shapes(quick: bool, out: Path, prefix: str, notes: list[str]) -> str:
    """SIMPLE SHAPES: hallucination rate per number of ancestral steps and the x0-variance detector."""
    if not _has("halluc-shapes"):
        notes.append("hallucination: zoo model halluc-shapes not shipped; the SIMPLE SHAPES table is missing.")
        return ""
    zm = zoo.load("halluc-shapes")
    den = zm.denoiser()
    runs = ((100, 256),) if quick else ((100, 2048), (1000, 256))
    rows, det_rows, grid = [], [], None
    for steps, n in runs:
        t0 = time.perf_counter()
        ev = shapes_hallucinations(den, n, steps, torch.Generator().manual_seed(BENCH_SEED))
        bad = ev["hallucinated"]
        rows.append(
            {
                "ancestral steps": steps,
                "samples": n,
                "hallucinated": float(bad.double().mean()),
                "empty": float(ev["empty"].double().mean()),
                "wall s": round(time.perf_counter() - t0, 1),
            }
        )
        det_rows.append(
            {"ancestral steps": steps} | _filter_row(ev["x0s"], bad) | {"paper: removed / kept": "> 0.95 / 0.96"}
        )
        if grid is None:
            order = torch.argsort(bad.long(), descending=True)  # hallucinations first
            grid = ev["samples"][order[:32]]
    save_grid(grid, out / f"{prefix}_halluc_shapes.png", nrow=8)
    return "\n".join(
        [
            "### SIMPLE SHAPES (the paper's image setting)",
            "",
            f"{zm.name}: {zm.config.get('dataset', '')}, 32x32 (paper: 64x64), a pixel DDPM (T = 1000, DDPM's linear",
            "betas, eps-prediction; the UNet runs on 4x4 pixel patches). A sample is a hallucination when the shapes",
            "detector (connected components per strip, kind by fill ratio) finds a repeated shape or a wrong shape in",
            "a strip. Deviation: 100 ancestral steps on the 1000-step grid (1000 steps cost 10x more on the CPU); the",
            "detector uses the last 10 x0 predictions of whichever grid was sampled.",
            "",
            format_table(rows),
            "",
            format_table(det_rows),
            "",
            f"Samples, hallucinations first: `{prefix}_halluc_shapes.png`.",
            "",
        ]
    )


# -------------------------------------------------------------------------------------------------
# 3. Diff-Protect
# -------------------------------------------------------------------------------------------------


def bench_protect(quick: bool, out: Path, prefix: str) -> tuple[str, list[str]]:
    model = load_tinysd()
    scenes = shapes.random_scenes(2 if quick else 8, BENCH_SEED)
    src = shapes.render_batch(scenes)
    caps = [shapes.caption(s) for s in scenes]
    clf = zoo.load("shapes-classifier").model.eval()
    steps = 8 if quick else 100
    step_size = 2 / 255 if quick else 1 / 255  # quick: few steps, still able to reach the 16/255 budget
    strengths = (0.1, 0.3, 0.5) if quick else (0.1, 0.2, 0.3, 0.4, 0.5)
    prot: dict[str, Tensor] = {"clean": src}
    cost, ref = [], None
    for method in PROTECT_METHODS:
        res = protect(model, src, method, steps=steps, step_size=step_size, generator=torch.Generator().manual_seed(0))
        prot[method] = res.image
        ch = latent_change(model, src, res.image)
        row = {
            "method": method,
            "s / step": res.seconds / steps,
            "saved MB / step": res.saved_bytes / 2**20,
            "L-inf (x255)": res.linf * 255,
            "|dx|/|x|": ch["dx_rel"],
            "|dz|/|z|": ch["dz_rel"],
            "ratio": ch["ratio"],
        }
        if method == "advdm+":
            ref = row
        cost.append(row)
    for row in cost:
        row["time vs AdvDM"] = row["s / step"] / ref["s / step"]
        row["memory vs AdvDM"] = row["saved MB / step"] / ref["saved MB / step"]
    mim = []
    grid = [src]
    for name, x in prot.items():
        row: dict[str, Any] = {"image": name}
        for s in strengths:
            edited = launder(model, x, caps, s, seed=7, guidance=5.0)
            row[f"PSNR@{s:g}"] = float(psnr(edited, src))
            row[f"SSIM@{s:g}"] = float(ssim(edited, src))
            row[f"cls ok@{s:g}"] = float(scene_correct(clf.predict(edited), scenes, background=True).double().mean())
            if s == strengths[-1]:
                grid.append(edited)
        mim.append(row)
    k = min(2, src.shape[0])
    save_grid(torch.cat([p[:k] for p in prot.values()]), out / f"{prefix}_protected.png", nrow=k)
    save_grid(torch.cat([g[:k] for g in grid]), out / f"{prefix}_mimicry.png", nrow=k)
    text = "\n".join(
        [
            "## 3. Diff-Protect on TinySD",
            "",
            f"{src.shape[0]} shapes scenes, budget 16/255, step {step_size * 255:.1f}/255, {steps} PGD steps",
            "(paper: 1/255, 100 steps), prompt ''.",
            "Cost: wall time per step and bytes autograd saved for the backward (the activation memory; CPU has no",
            "peak-memory counter). Paper: SDS about halves time and memory against AdvDM.",
            "",
            format_table(cost),
            "",
            "The encoder is the weak point when |dz|/|z| >> |dx|/|x| (ratio column).",
            "",
            "Mimicry: SDEdit (DDIM 25 steps, the scene's caption, CFG 5) of each image at each strength; PSNR/SSIM",
            "to the clean source and the shapes classifier's reading (scene correct) of the output. Lower = the",
            "protection works better. Paper: SDS(-) (minimising the semantic loss) protects best.",
            "",
            format_table(mim),
            "",
            f"Grids: `{prefix}_protected.png` (rows: clean, then each method), `{prefix}_mimicry.png` (SDEdit at the",
            "largest strength).",
            "",
        ]
    )
    return text, []


# -------------------------------------------------------------------------------------------------
# 4. laundering
# -------------------------------------------------------------------------------------------------


def bench_laundering(quick: bool, out: Path, prefix: str) -> tuple[str, list[str]]:
    notes: list[str] = []
    model = load_tinysd()
    n = 48 if quick else 200
    real, caps = real_shapes(n, BENCH_SEED)
    sets = {"real": real, "laundered vae": launder(model, real)}
    strengths = (0.1, 0.3, 0.5) if quick else (0.1, 0.2, 0.3, 0.4, 0.5)
    for s in strengths:
        sets[f"laundered img2img {s:g}"] = launder(model, real, caps, s, seed=BENCH_SEED)
    _, caps2 = real_shapes(n, BENCH_SEED + 1)
    sets["synthetic"] = tinysd_samples(model, caps2, BENCH_SEED)
    rows = []
    have = _has("laundering-stage1") and _has("laundering-stage2")
    if have:
        s1m, s2m = zoo.load("laundering-stage1"), zoo.load("laundering-stage2")
        s1 = {k: patch_scores(s1m, x) for k, x in sets.items()}
        s2 = {k: patch_scores(s2m, x) for k, x in sets.items()}
    else:
        notes.append(
            "laundering: the two-stage detectors are not shipped; only the invisibility of laundering is measured."
        )
    for name, x in sets.items():
        row: dict[str, Any] = {"set": name, "PSNR to real": math.nan, "SSIM to real": math.nan}
        if name.startswith("laundered"):
            row["PSNR to real"] = float(psnr(x, real))
            row["SSIM to real"] = float(ssim(x, real))
        if have:
            truth = "real" if name == "real" else ("synthetic" if name == "synthetic" else "laundered")
            _, _, labels = two_stage(s1m, s2m, x)
            row["stage 1: called synthetic"] = float((s1[name] > 0).double().mean())
            if name != "real":
                y = torch.cat([torch.zeros(n), torch.ones(n)])
                row["stage-1 AUC vs real"] = detection_metrics(torch.cat([s1["real"], s1[name]]), y)["auc"]
            if truth == "laundered":
                y = torch.cat([torch.zeros(n), torch.ones(n)])  # positive = fully synthetic (stage 2's > 0)
                row["stage-2 AUC vs synthetic"] = detection_metrics(torch.cat([s2[name], s2["synthetic"]]), y)["auc"]
            row["two-stage label correct"] = sum(lab == truth for lab in labels) / n
        rows.append(row)
    save_grid(torch.cat([x[:8] for x in sets.values()]), out / f"{prefix}_laundering.png", nrow=8)
    text = "\n".join(
        [
            "## 4. Laundering",
            "",
            f"{n} shapes renders; laundered = TinySD VAE round trip or SDEdit img2img (caption, CFG 5) at each",
            "strength; synthetic = TinySD samples of other captions. All 8-bit. Paper: laundered images are labelled",
            "synthetic by a stage-1 detector trained without them; stage 2 separates laundered from fully synthetic",
            "(paper's headline: stage-1 AUC 0.993 on real vs synthetic). Detectors: patch CNNs (16x16 patches,",
            "64 random patches per image, image score = mean of the top-48 patch logits, threshold 0), trained by",
            "the commands in the zoo JSONs on other renders and captions (seeds 1000 / 2000).",
            "",
            format_table(rows),
            "",
        ]
    )
    return text, notes


SECTIONS = {
    "dire": bench_dire,
    "hallucination": bench_hallucination,
    "protect": bench_protect,
    "laundering": bench_laundering,
}


def run(args: argparse.Namespace) -> int:
    """Run the chosen sections; each writes ``<prefix>_<section>.md``, and ``<prefix>.md`` is assembled from
    every section file present (so sections can be rerun one at a time)."""
    torch.set_num_threads(args.threads)
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    prefix = "bench_forensics_quick" if args.quick else "bench_forensics"
    names = args.sections.split(",")
    for name in names:
        if name not in SECTIONS:
            raise ValueError(f"sections: unknown section {name!r}; expected some of {sorted(SECTIONS)}")
    for name in names:
        t0 = time.perf_counter()
        text, notes = SECTIONS[name](args.quick, out, prefix)
        wall = time.perf_counter() - t0
        body = [text, f"(section wall time {wall:.0f} s, {args.threads} thread(s), `diffzoo bench forensics"]
        body[-1] += f"{' --quick' if args.quick else ''} --sections {name}`)"
        if notes:
            body += ["", "Notes:", ""] + [f"- {n}" for n in notes]
        atomic_write_text(out / f"{prefix}_{name}.md", "\n".join(body) + "\n")
        print(text, flush=True)
    parts = [f"# diffzoo bench forensics{' --quick' if args.quick else ''}", ""]
    for name in SECTIONS:
        f = out / f"{prefix}_{name}.md"
        if f.exists():
            parts += [f.read_text(), ""]
    atomic_write_text(out / f"{prefix}.md", "\n".join(parts))
    print(f"wrote {out / (prefix + '.md')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forensics", help="DIRE, hallucination, Diff-Protect and laundering (issue 14)")
    p.add_argument("--quick", action="store_true", help="small sets (< 5 minutes on 2 idle cores)")
    p.add_argument("--sections", default="dire,hallucination,protect,laundering")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)
