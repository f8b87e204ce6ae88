"""``diffzoo bench discrete``: masked discrete diffusion (zoo models ``masked-digits`` and ``masked-shapes``).

Tables (written to ``docs/results/bench_discrete[_quick].md``, posterior samples to ``bench_discrete*.png``):

1. **FHS vs ancestral** (Zheng et al. arXiv 2409.02908): network calls, wall time and sample quality
   (FD-digits from the held-out classifier where the zoo has it; MMD^2 to the test split in pixel
   space; per-sample token entropy) of the first-hitting sampler against the ancestral sampler with
   and without caching, beside the paper's "~20x" speed-up.
2. **Float precision**: the same cached ancestral sampler with float32 vs float64 categorical draws as
   the step count grows (paper: fp32 lowers token entropy, more so with more steps), on the digits
   model (17 levels) and on an exact i.i.d. Zipf oracle at a text-like vocabulary
   (:mod:`diffzoo.discrete.precision`).
3. **LSD / LSD+** (arXiv 2509.19962, :mod:`diffzoo.discrete.lsd_paper`): quality against NFE of the plain
   Euler sampler, parallel FHS, LSD, LSD+, the earlier trajectory-MMD variant and the 256-step teacher, on
   digits (FD-digits) and on the countdown task (zoo ``masked-countdown``, exact error rate).
4. **APS posterior sampling** (arXiv 2510.02291): APS-I / APS-II as the authors describe them
   (APS-style: quantized expectation fitted at test time, anchored remasking; with and without the
   Theorem 3.2 KL term), the earlier APS-like reconstruction and the prior-confidence sampler, vs
   replacement, SMC and split-Gibbs baselines on five operators with measurement noise
   ``sigma_y = 0.05``, on test digits and (5.) on unseen shapes scenes in ``masked-shapes``' patch-VQ
   token space (classifier-checked); with the paper's ablation ordering checked per task.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from diffzoo import zoo
from diffzoo.bench.common import results_dir, section_suffix, wanted_sections
from diffzoo.data import countdown, digits, shapes
from diffzoo.data.digits import levels_to_images
from diffzoo.discrete import CallCounter, JointOracle, ancestral_sample, first_hitting_sample
from diffzoo.discrete.aps import (
    aps_sample,
    aps_style_sample,
    measure_tokens,
    replacement_sample,
    smc_sample,
    split_gibbs_sample,
)
from diffzoo.discrete.lsd import student_sample, teacher_trajectories, train_lsd
from diffzoo.discrete.lsd_paper import CoupledNoise, lsd_sample, teacher_caches, train_lsd_paper
from diffzoo.discrete.masked import model_seq_len
from diffzoo.discrete.precision import precision_table
from diffzoo.discrete.tokens import token_space
from diffzoo.inverse.operators import get_operator
from diffzoo.inverse.posterior import measurement_error
from diffzoo.io import atomic_write_text, format_table
from diffzoo.metrics.digits import digits_accuracy, digits_fd
from diffzoo.metrics.distances import mmd
from diffzoo.metrics.image import psnr, ssim
from diffzoo.models.tinysd import scene_correct

log = logging.getLogger(__name__)
Tensor = torch.Tensor
SIGMA_Y = 0.05
TASKS = ("box_inpaint", "random_inpaint", "sr", "gaussian_blur", "saturation")
QUICK_TASKS = ("box_inpaint", "sr", "saturation")  # quick mode: one inpainting, one linear, the nonlinear operator


# ----------------------------------------------------------------------------------------- helpers
def _images(x: Tensor) -> Tensor:

    return levels_to_images(x.reshape(-1, 64))


def _fd(x: Tensor) -> float | None:
    """FD-digits, or ``None`` when the zoo has no digits classifier yet."""
    try:
        return digits_fd(_images(x))
    except (ValueError, FileNotFoundError, ImportError) as e:  # classifier not shipped
        log.warning("FD-digits unavailable: %s", e)
        return None


def _mmd_test(x: Tensor) -> float:

    return float(mmd(_images(x).flatten(1).double(), digits.load("test").images.flatten(1).double()))


def token_entropy(x: Tensor, vocab: int = 17) -> float:
    """Mean over samples of the entropy (nats) of the sample's own token histogram (the paper's measure)."""
    counts = torch.nn.functional.one_hot(x.reshape(x.shape[0], -1), vocab).sum(1).double()
    p = counts / counts.sum(1, keepdim=True)
    return float(-(p * torch.log(p.clamp_min(1e-300))).sum(1).mean())


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _quality(x: Tensor) -> dict[str, Any]:
    return {"FD-digits": _fd(x), "MMD2 (test)": _mmd_test(x), "token entropy": token_entropy(x)}


def load_model(name: str) -> torch.nn.Module:

    m = zoo.load(name).model
    m.eval()
    return m


# ------------------------------------------------------------------------------------------ tables
def oracle_law_table(quick: bool) -> list[dict]:
    """Chi-square test of each sampler's output law against a known joint (3 tokens x 3 levels, correlated)."""
    from scipy import stats

    oracle = JointOracle(torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) ** 3)
    n = 6000 if quick else 20000
    runs = [
        ("FHS", lambda g: first_hitting_sample(oracle, n, generator=g)),
        (
            "FHS, 3 tokens per call (parallel)",
            lambda g: first_hitting_sample(oracle, n, generator=g, tokens_per_step=3),
        ),
    ]
    runs += [
        (f"ancestral, {k} steps", (lambda k: lambda g: ancestral_sample(oracle, n, k, generator=g))(k))
        for k in (1, 4, 32, 256)
    ]
    if not quick:  # one test at 20k samples can fail by chance (1 in 100 at p < 0.01); 100x more samples settle it
        runs.insert(1, ("FHS", lambda g: first_hitting_sample(oracle, 2_000_000, generator=g)))
    rows = []
    for name, fn in runs:
        x = fn(torch.Generator().manual_seed(2))
        m = x.shape[0]
        counts = torch.bincount(oracle.state_index(x), minlength=27).double()
        res = stats.chisquare(counts.numpy(), (oracle.joint * m).numpy())
        tv = 0.5 * float((counts / m - oracle.joint).abs().sum())
        expected = (
            "exact"
            if name == "FHS"
            else "near-exact (many-step limit)"
            if "256" in name
            else ("biased (independent unmasking)" if "1 steps" in name or "parallel" in name else "")
        )
        rows.append(
            {
                "sampler": name,
                "samples": m,
                "chi2": float(res.statistic),
                "p-value": float(res.pvalue),
                "TV to true law": tv,
                "expected": expected,
            }
        )
    return rows


def fhs_vs_ancestral(model, quick: bool) -> list[dict]:

    n = 32 if quick else 200
    rows = []
    c = CallCounter(model)
    x, sec = _timed(lambda: first_hitting_sample(c, n, generator=torch.Generator().manual_seed(0)))
    fhs_sec = sec
    rows.append(
        {
            "sampler": "FHS (exact)",
            "steps": 64,
            "cache": "-",
            "NFE": c.nfe,
            "net evals/sample": c.rows / n,
            "wall s": sec,
            **_quality(x),
            "speed-up of FHS": 1.0,
            "paper": "FHS ~20x faster than ancestral",
        }
    )

    real = digits.load("train").levels[torch.randperm(1497, generator=torch.Generator().manual_seed(0))[:n]]
    rows.append(
        {
            "sampler": f"real digits (train split, n={n})",
            "steps": "",
            "cache": "",
            "NFE": 0,
            "net evals/sample": 0,
            "wall s": 0.0,
            **_quality(real),
            "speed-up of FHS": None,
            "paper": "",
        }
    )
    for k in (2, 4):
        c = CallCounter(model)
        x, sec = _timed(
            lambda: first_hitting_sample(c, n, generator=torch.Generator().manual_seed(0), tokens_per_step=k)
        )
        rows.append(
            {
                "sampler": f"FHS parallel, {k} tokens/call",
                "steps": 64 // k,
                "cache": "-",
                "NFE": c.nfe,
                "net evals/sample": c.rows / n,
                "wall s": sec,
                **_quality(x),
                "speed-up of FHS": sec / fhs_sec,
                "paper": "",
            }
        )
    settings = (
        [(64, True), (128, False)]
        if quick
        else [(64, True), (1024, True), (4096, True), (64, False), (256, False), (1024, False)]
    )
    for steps, cache in settings:
        c = CallCounter(model)
        x, sec = _timed(lambda: ancestral_sample(c, n, steps, generator=torch.Generator().manual_seed(0), cache=cache))
        rows.append(
            {
                "sampler": "ancestral",
                "steps": steps,
                "cache": "yes" if cache else "no",
                "NFE": c.nfe,
                "net evals/sample": c.rows / n,
                "wall s": sec,
                **_quality(x),
                "speed-up of FHS": sec / fhs_sec,
                "paper": "",
            }
        )
    return rows


class TailCounter:
    """Ancestral-sampler callback: how often unmasked tokens are drawn from the model's tail (p < ``thr``),
    against the exact expectation ``sum_{k: p_k < thr} p_k`` over the same unmask events."""

    def __init__(self, thr: float = 1e-3) -> None:
        self.thr, self.drawn, self.expected = thr, 0.0, 0.0

    def __call__(self, d: dict) -> None:
        newly = d["prev"] != d["x"]
        if not bool(newly.any()):
            return
        p = d["probs"][newly]  # (m, K) predictive probs of the unmasked
        tok = d["x"][newly]
        self.drawn += float((p.gather(1, tok[:, None])[:, 0] < self.thr).sum())
        self.expected += float(torch.where(p < self.thr, p, torch.zeros_like(p)).sum())

    def ratio(self) -> float:
        return self.drawn / self.expected if self.expected > 0 else float("nan")


def precision_effect(model, quick: bool) -> list[dict]:

    n = 32 if quick else 200
    ref = token_entropy(digits.load("test").levels)
    rows = []
    for steps in (64, 1024) if quick else (64, 1024, 8192):
        row: dict[str, Any] = {"steps": steps}
        for prec in ("float64", "float32"):
            tail = TailCounter()
            x = ancestral_sample(
                model, n, steps, generator=torch.Generator().manual_seed(1), precision=prec, callback=tail
            )
            row[f"entropy {prec}"] = token_entropy(x)
            row[f"MMD2 {prec}"] = _mmd_test(x)
            row[f"tail drawn/expected {prec}"] = tail.ratio()
            row[f"tail expected {prec}"] = tail.expected
        row["test-set entropy"] = ref
        row["paper"] = "fp32 entropy drops as steps grow; fp64 does not"
        rows.append(row)
    return rows


def _precision_oracle(quick: bool) -> list[dict]:

    return precision_table(quick)


LSD_TEACHER_STEPS = 256  # the paper's (and official code's) default teacher NFE


def _fmt(v: Tensor) -> str:
    return " ".join(f"{float(a):.2f}" for a in v.detach())


def lsd_rows(
    model,
    quality: Callable[[Tensor], dict[str, Any]],
    nfes: tuple[int, ...],
    quick: bool,
    teacher_steps: int,
    mmd_nfes: tuple[int, ...] = (),
    exact_fhs: bool = True,
    n_eval: int | None = None,
    n_eval_quick: int = 64,
    quick_train: tuple[int, int, int] = (32, 8, 16),
    train: tuple[int, int, int] | None = None,
) -> list[dict]:
    """Quality vs NFE of plain Euler (= ancestral here), parallel FHS, LSD, LSD+ (paper's form), the
    trajectory-MMD ablation and the ``teacher_steps``-step Euler teacher, on one masked model.

    ``train``: (teacher rollouts cached, Adam iterations, batch) of the coefficient training (quick mode:
    ``quick_train``)."""
    model.requires_grad_(False)
    length = model_seq_len(model)
    n_eval = (n_eval_quick if quick else 400) if n_eval is None else n_eval
    n_train, iters, batch = (quick_train if quick else (128, 40, 32)) if train is None else train
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    train_noise = CoupledNoise.draw(n_train, length, gen(11))
    (caches, teach_sec) = _timed(lambda: teacher_caches(model, nfes, train_noise, teacher_steps))
    rows = []

    def row(name: str, nfe: int, x: Tensor, phi: str = "", times: str = "", sec: float = 0.0) -> None:
        rows.append({"sampler": name, "NFE": nfe, **quality(x), "phi": phi, "times": times, "train s": sec})

    row(f"teacher (Euler, N={teacher_steps})", teacher_steps, lsd_sample(model, teacher_steps, n_eval, gen(9)))
    if exact_fhs:
        row("FHS (exact, 1 token/call)", length, first_hitting_sample(model, n_eval, generator=gen(9)))
    for m in nfes:
        row("plain Euler / ancestral", m, lsd_sample(model, m, n_eval, gen(9)))
        if length % m == 0:
            x = first_hitting_sample(model, n_eval, generator=gen(9), tokens_per_step=length // m)
            row(f"FHS parallel ({length // m} tokens/call)", m, x)
        for name, kw in (("LSD", {}), ("LSD+", {"learn_times": True})):
            res = train_lsd_paper(model, m, caches[m], iters=iters, batch=batch, **kw)
            st = res.student
            sec = res.seconds + teach_sec * (teacher_steps // len(nfes)) / teacher_steps
            row(name, m, lsd_sample(model, st, n_eval, gen(9)), _fmt(st.phi), _fmt(st.times()), sec)
        if m in mmd_nfes:
            teacher = teacher_trajectories(model, 4 * batch, gen(5))
            res, sec = _timed(
                lambda: train_lsd(model, m, iters=iters, batch=batch, lr=0.02, teacher=teacher, teacher_batch=4 * batch)
            )
            st = res.student
            x = student_sample(model, st, n_eval, generator=gen(9))
            row("trajectory-MMD (ablation)", m, x, _fmt(st.phi), _fmt(st.times()), sec)
    return rows


#: full-mode coefficient training (teacher rollouts cached, Adam iterations, batch) of 3a (digits) and 3b
#: (countdown): sized so that NFE 8-64 fit about 15 CPU minutes each (the paper trains on a GPU).
LSD_FULL_TRAIN = ((64, 20, 16), (32, 20, 8))


def lsd_table(model, quick: bool) -> list[dict]:
    """Section 3a: LSD/LSD+ on the digits model (FD-digits etc.)."""
    nfes = (8,) if quick else (8, 16, 32, 64)
    teacher = 64 if quick else LSD_TEACHER_STEPS
    train = None if quick else LSD_FULL_TRAIN[0]
    return lsd_rows(model, _quality, nfes, quick, teacher, mmd_nfes=(8,), n_eval_quick=64, train=train)


def _countdown_quality(x: Tensor) -> dict[str, Any]:
    return {"error rate": countdown.error_rate(x), "seq. error rate": countdown.sequence_error_rate(x)}


def lsd_countdown_table(quick: bool) -> list[dict]:
    """Section 3b: LSD/LSD+ on the zoo ``masked-countdown`` model (exact error rate)."""
    model = load_model("masked-countdown")
    nfes = (8,) if quick else (8, 16, 32, 64)
    teacher = 64 if quick else LSD_TEACHER_STEPS
    return lsd_rows(
        model,
        _countdown_quality,
        nfes,
        quick,
        teacher,
        mmd_nfes=(),
        exact_fhs=not quick,
        quick_train=(16, 6, 8),
        n_eval=32 if quick else 128,
        train=None if quick else LSD_FULL_TRAIN[1],
    )


LSD_NOTE = (
    "LSD: one scalar phi per step multiplying the concrete score alpha/(1-alpha) p(x0|x_t) in the Euler step "
    "(the paper's form phi*score; the official code's score^phi is `form=\"code\"`, not used here); L2 loss "
    "against the cached scores of the plain Euler teacher (same per-token noise) at the student times, relaxed "
    "start (Hamming <= 5% of L); LSD+ adds learned step sizes (`times`: the learned grid) matched on step x "
    "score. For a masked model phi*score only rescales how many tokens a step reveals. The last step reveals "
    "every remaining token, so its phi cannot change samples. `train s`: coefficient training time plus this "
    "NFE's share of the teacher run, 1 CPU thread (paper: ~5 min on one RTX 4090 for LSD+ on SEDD). "
    "trajectory-MMD: the earlier reconstruction (`discrete/lsd.py`, phi = logit scale, MMD to FHS states). "
    "Plain Euler equals MDLM ancestral sampling for the linear schedule."
)


APS_STEPS = 16  # reverse steps (network calls) of every masked posterior sampler (MMaDA: 15)
APS_KL = 0.01  # kl_weight of the "+ KL" rows (chosen from {0.1, 0.01} on the quick digits set)
APS_SSIM = 0.3  # perceptual_weight of the "+ SSIM" rows


def aps_inner(quick: bool) -> tuple[int, float]:
    """Inner Adam steps per reverse step and learning rate of the APS-style rows: the authors' 100 (full) or 25
    (quick), at the same ``steps * lr`` budget."""
    return (25, 0.4) if quick else (100, 0.1)


def ssim_loss(op) -> Callable[[Tensor, Tensor], Tensor]:
    """APS's perceptual term with SSIM in place of LPIPS (no LPIPS weights here): ``1 - SSIM(A(x), y)`` per sample.
    Vector measurements (inpainting) are compared as zero-filled images ``A^T y``."""

    def loss(pred: Tensor, y: Tensor) -> Tensor:
        if pred.dim() == 2:
            pred, y = op.adjoint(pred), op.adjoint(y)
        return 1.0 - ssim(pred, y, reduction="none")

    return loss


def aps_methods(model, space, quick: bool, steps: int = APS_STEPS) -> list[tuple[str, Callable, int, int | str]]:
    """The posterior samplers compared per task: (name, fn(op, y, generator), network calls per sample, inner steps).

    APS-I / APS-II: :func:`~diffzoo.discrete.aps.aps_style_sample` (the authors' description; L1 measurement
    loss, optionally + the Theorem 3.2 KL or + an SSIM perceptual term); APS-like: the earlier reconstruction
    :func:`~diffzoo.discrete.aps.aps_sample`; ``prior confidence``: the same cosine schedule with tokens and
    order from the prior (MaskGIT, choice temperature 0) -- the sampler APS's anchoring replaces."""

    kw = dict(sigma_y=SIGMA_Y, space=space)
    length = space.seq_len
    inner, lr = aps_inner(quick)

    def style(variant: str, kl: float = 0.0, perceptual: bool = False) -> Callable:
        return lambda op, y, g: aps_style_sample(
            model,
            op,
            y,
            steps,
            variant,
            inner,
            lr,
            kl_weight=kl,
            perceptual=ssim_loss(op) if perceptual else None,
            perceptual_weight=APS_SSIM,
            generator=g,
            space=space,
        )

    rows = [("APS-I", style("I"), steps, inner)]
    if not quick:
        rows.append(("APS-I + KL", style("I", APS_KL), steps, inner))
    rows += [("APS-II", style("II"), steps, inner), ("APS-II + KL", style("II", APS_KL), steps, inner)]
    if not quick:
        rows.append(("APS-II + SSIM", style("II", perceptual=True), steps, inner))
    rows += [
        ("APS-like", lambda op, y, g: aps_sample(model, op, y, steps, generator=g, **kw), steps, 3),
    ]
    if not quick:
        rows.append(
            (
                "APS-like, no anchoring",
                lambda op, y, g: aps_sample(model, op, y, steps, anchor=False, generator=g, **kw),
                steps,
                3,
            )
        )
    rows += [
        (
            "prior confidence (eta=0)",
            lambda op, y, g: aps_sample(model, op, y, steps, eta=0.0, generator=g, **kw),
            steps,
            "-",
        ),
        ("replacement", lambda op, y, g: replacement_sample(model, op, y, generator=g, space=space), length, "-"),
        ("SMC (8 particles)", lambda op, y, g: smc_sample(model, op, y, steps, 8, generator=g, **kw), steps * 8, "-"),
        ("split-Gibbs", lambda op, y, g: split_gibbs_sample(model, op, y, 8, generator=g, **kw), length + 8, "-"),
    ]
    return rows


def posterior_rows(
    model,
    space,
    x0: Tensor,
    tasks,
    scorer: Callable[[Tensor], float | None],
    truth: Tensor,
    quick: bool,
    op_kwargs: dict | None = None,
) -> tuple[list[dict], dict]:
    """Every method on every task for clean tokens ``x0``: PSNR/SSIM to ``truth`` (the decoded tokens),
    token accuracy, measurement residual, ``scorer`` (classifier accuracy), NFE, inner steps and wall time."""

    rows, panels = [], {}
    for task in QUICK_TASKS if quick else tasks:
        op = get_operator(task, space.image_shape, **(op_kwargs or {}).get(task, {}))
        y = measure_tokens(x0, op, space, SIGMA_Y, torch.Generator().manual_seed(3))
        panels[task] = {"ground truth": truth.float()}
        for name, fn, nfe, inner in aps_methods(model, space, quick):
            if name == "replacement" and not hasattr(op, "mask"):
                continue
            x, sec = _timed(lambda: fn(op, y, torch.Generator().manual_seed(4)))
            img = space.decode(x).float()
            panels[task][name] = img
            rows.append(
                {
                    "task": task,
                    "method": name,
                    "PSNR": float(psnr(img, truth.float(), reduction="pooled")),
                    "SSIM": float(ssim(img, truth.float())),
                    "token acc": float((x == x0).float().mean()),
                    "residual ||y-Ax||": float(measurement_error(op, img.double(), y).mean()),
                    "noise level ||n||": SIGMA_Y * math.sqrt(math.prod(op.meas_shape())),
                    "class acc": scorer(img),
                    "net evals/sample": nfe,
                    "inner steps": inner,
                    "wall s": sec,
                }
            )
    return rows, panels


def _ranking(values: dict[str, float]) -> str:
    """``{"II": 3, "I": 2, "prior": 2}`` -> ``"II > I = prior"`` (best first)."""
    items = sorted(values.items(), key=lambda kv: -kv[1])
    out = items[0][0]
    for (_, prev), (name, v) in zip(items, items[1:]):
        out += f" {'=' if v == prev else '>'} {name}"
    return out


ORDERING = (("II", "APS-II"), ("I", "APS-I"), ("prior", "prior confidence (eta=0)"))


def aps_ordering(rows: list[dict]) -> list[dict]:
    """The paper's ablation ordering (APS-II > APS-I > prior-confidence sampler) per task: the measured ranking of
    the three on PSNR, SSIM and class acc, and whether PSNR and SSIM both follow the paper's ordering."""

    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        by = {r["method"]: r for r in rows if r["task"] == task}
        row: dict[str, Any] = {"task": task}
        for metric in ("PSNR", "SSIM", "class acc"):
            vals = {short: by[name][metric] for short, name in ORDERING}
            row[metric] = _ranking(vals) if None not in vals.values() else "-"
        row["paper's ordering (PSNR and SSIM)"] = (
            "holds" if all(row[m] == "II > I > prior" for m in ("PSNR", "SSIM")) else "no"
        )
        out.append(row)
    return out


def aps_table(model, quick: bool) -> tuple[list[dict], dict]:
    """APS-I/II, APS-like and baselines on test digits (64 pixel-level tokens)."""

    n = 8 if quick else 16
    test = digits.load("test")
    x0, labels = test.levels[:n], test.labels[:n]
    space = token_space(model)
    return posterior_rows(model, space, x0, TASKS, lambda img: _class_acc(img, labels), space.decode(x0), quick)


def shapes_aps_table(quick: bool) -> tuple[list[dict], dict, dict]:
    """APS-I/II, APS-like and baselines on unseen shapes scenes tokenised by ``masked-shapes``' patch VQ.

    ``class acc``: fraction of reconstructions whose every grid cell and background the zoo
    ``shapes-classifier`` reads as the true scene's. Also returns the tokenizer's own ceiling.
    """

    model = load_model("masked-shapes")
    space = token_space(model)
    n = 4 if quick else 8
    scenes = shapes.random_scenes(n, 424242)
    real = shapes.render_batch(scenes)
    x0 = space.encode(real)
    clf = zoo.load("shapes-classifier").model.eval()

    def scorer(img: Tensor) -> float:
        with torch.no_grad():
            return float(scene_correct(clf.predict(img.float()), scenes).float().mean())

    rows, panels = posterior_rows(
        model, space, x0, TASKS, scorer, space.decode(x0), quick, {"sr": {"factor": 4}, "gaussian_blur": {"sigma": 1.5}}
    )
    ceiling = {
        "VQ tokenizer PSNR to the true render": float(psnr(space.decode(x0).float(), real, reduction="pooled")),
        "classifier on true renders": scorer(real),
        "classifier on tokenised truth": scorer(space.decode(x0)),
    }
    return rows, panels, ceiling


def _class_acc(img: Tensor, labels: Tensor) -> float | None:
    try:
        return digits_accuracy(img, labels)
    except (ValueError, FileNotFoundError):
        return None


def save_png(panels: dict, path, scale: int = 4) -> None:
    """A grid: one block per task, one row per method (table order), 8 images per row (grey or RGB)."""

    rows = []
    for methods in panels.values():
        for img in methods.values():
            x = img[:8].clamp(-1, 1).expand(-1, 3, -1, -1) if img.shape[1] == 1 else img[:8].clamp(-1, 1)
            tiles = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            tiles = np.pad(tiles, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=255)
            rows.append(np.concatenate(list(tiles), axis=1))
        rows.append(np.full((4, *rows[-1].shape[1:]), 128, np.uint8))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


# ---------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    suffix = "_quick" if args.quick else ""
    parts = [
        f"# diffzoo bench discrete{' --quick' if args.quick else ''}\n",
        f"Model: zoo `{args.model}`; CPU, {torch.get_num_threads()} thread(s), {platform.processor() or 'cpu'}."
        " Wall times were measured on a shared, heavily loaded 2-core machine: compare within a table only.\n",
    ]
    sections = [
        (
            "0. Output law vs a known joint (exact oracle denoiser)",
            lambda: oracle_law_table(args.quick),
            "Chi-square over the 27 outcomes (26 degrees of freedom); a small p-value rejects the true law. FHS is "
            "exact (under the true law, p is uniform: p < 0.01 happens once in 100 runs); ancestral converges to it "
            "as steps grow; one step (all tokens at once) samples the product of marginals.",
        ),
        (
            "1. First-hitting vs ancestral sampling",
            lambda: fhs_vs_ancestral(model, args.quick),
            "`speed-up of FHS` = wall time of the row / wall time of FHS. NFE = batched network calls; "
            "net evals/sample = sequences evaluated per sample (cached ancestral re-evaluates only rows that changed).",
        ),
        (
            "2. Float32 vs float64 categorical sampling (cached ancestral)",
            lambda: precision_effect(model, args.quick),
            "Token entropy = mean entropy (nats) of each sample's own 17-level histogram. `tail drawn/expected` = "
            "tokens drawn with model probability < 1e-3, divided by the exact expected count over the same unmask "
            "events (`tail expected`; 1 = unbiased; < 1 = the tail is under-sampled, i.e. a lower effective "
            "temperature). The digits model puts little mass below 1e-3, so its entropy barely moves; see 2b for a "
            "text-like vocabulary.",
        ),
        (
            "2b. Float32 vs float64 at a text-like vocabulary (exact i.i.d. Zipf oracle)",
            lambda: _precision_oracle(args.quick),
            "The oracle predicts the same Zipf law at every masked position, so a correct sampler's tokens are i.i.d. "
            "Zipf: `true entropy` / `true tail mass` are exact. NLL = mean oracle negative log-likelihood of the "
            "sampled "
            "tokens (log generative perplexity). Paper: fp32 lowers entropy and perplexity, more with more steps.",
        ),
        (
            "3a. LSD / LSD+ (the paper's score-scaled Euler students) on digits: quality vs NFE",
            lambda: lsd_table(model, args.quick),
            LSD_NOTE
            + (
                " Quick mode: NFE 8 only, teacher N = 64 (full: 256), 64 samples (FD on 64 samples is noisy: +- "
                "several units)."
                if args.quick
                else f" Full mode: 400 samples; coefficient training (teacher rollouts, Adam iterations, batch) = "
                f"{LSD_FULL_TRAIN[0]} (sized for a CPU); trajectory-MMD at NFE 8 only."
            ),
        ),
        (
            "3b. LSD / LSD+ on the countdown task (zoo `masked-countdown`): exact error rate vs NFE",
            lambda: lsd_countdown_table(args.quick),
            LSD_NOTE
            + " Error rate = fraction of the 255 transitions breaking the countdown rule (valid data: 0; i.i.d. "
            "uniform tokens: 0.94); seq. error rate = fraction of sequences with a violation."
            + (
                " Quick mode: NFE 8 only, teacher N = 64 (full: 256), 32 samples (8160 transitions), no "
                "trajectory-MMD rows, no exact-FHS row (its error rate on 64 samples is recorded in the zoo JSON)."
                if args.quick
                else f" Full mode: 128 samples; coefficient training = {LSD_FULL_TRAIN[1]} (sized for a CPU); no "
                "trajectory-MMD rows."
            ),
        ),
    ]
    wanted = wanted_sections(args.sections, SECTION_IDS)
    for title, fn, note in sections:
        if title.split(".")[0] not in wanted:
            continue
        rows, sec = _timed(fn)
        parts += [f"## {title}\n", format_table(rows), "", note, f"({sec:.0f} s)\n"]
        print("\n".join(parts[-5:]), flush=True)
    if "4" not in wanted and "5" not in wanted:
        return _write(parts, suffix, wanted)
    inner, lr = aps_inner(args.quick)
    aps_note = (
        f"APS-I / APS-II: `aps_style_sample`, APS as its authors describe it (arXiv 2510.02291; equations INFERRED "
        f'from the project page and reviews, so "APS-style"): per reverse step ({APS_STEPS} steps, one network '
        f"call each) free logits start at the prior and {inner} Adam steps (lr {lr}"
        + ("; the authors use 100 -- quick mode uses 25 at the same steps x lr" if args.quick else ", the authors' 100")
        + ") minimise the L1 measurement misfit of the straight-through quantized expectation; the anchor "
        "candidates are its nearest codes. APS-I keeps the k_n (cosine schedule) candidates most confident under "
        "the prior, APS-II (anchored remasking) those most confident under the fitted posterior. `+ KL`: the "
        f"prior term of Theorem 3.2, weight {APS_KL} x (alpha_s - alpha_t)/(1 - alpha_t)"
        + (
            ""
            if args.quick
            else f"; `+ SSIM`: perceptual term 1 - SSIM(A x, y), weight {APS_SSIM} (LPIPS in the "
            "paper; no LPIPS weights here)"
        )
        + ". APS-like: the earlier reconstruction (Gauss-Newton local likelihood, sampled tokens, anchoring); prior "
        "confidence: the same schedule with prior draws and prior confidence (MaskGIT, choice temperature 0). "
        "Images in [-1, 1] (PSNR data range 2, pooled MSE). `noise level` is the expected residual of the ground "
        "truth itself; a residual well below it over-fits the noise. `inner steps`: per reverse step (APS-like: "
        "its Gauss-Newton iterations). The paper reports no number on these data."
        + (
            f" Quick mode: tasks {', '.join(QUICK_TASKS)} only; 8 test digits (section 4), 4 scenes (section 5)."
            if args.quick
            else " Full mode: all five tasks, 16 test digits (section 4) and 8 scenes (section 5), sized to fit "
            "about 30 CPU minutes (100 inner steps per reverse step make APS the slowest sampler here)."
        )
    )
    if "4" in wanted:
        _aps_digits_section(model, args.quick, suffix, aps_note, parts)
    if "5" in wanted:
        _aps_shapes_section(args.quick, suffix, parts)
    return _write(parts, suffix, wanted)


SECTION_IDS = ("0", "1", "2", "2b", "3a", "3b", "4", "5")


def _write(parts: list[str], suffix: str, wanted: tuple[str, ...]) -> int:
    """``bench_discrete[_quick].md``, or ``bench_discrete[_quick]_<ids>.md`` for a subset of sections."""
    part = section_suffix(wanted, SECTION_IDS)
    out = atomic_write_text(results_dir() / f"bench_discrete{suffix}{part}.md", "\n".join(parts) + "\n")
    print(f"wrote {out}")
    return 0


def _aps_digits_section(model, quick: bool, suffix: str, aps_note: str, parts: list[str]) -> None:
    (rows, panels), sec = _timed(lambda: aps_table(model, quick))
    png = results_dir() / f"bench_discrete{suffix}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    save_png(panels, png)
    parts += [
        f"## 4. APS posterior sampling on digits: APS-I/II vs APS-like and baselines (sigma_y = {SIGMA_Y})\n",
        format_table(rows),
        "",
        aps_note,
        f"Posterior samples: `{png.name}` (per task: ground truth, then one row per method in table order).",
        "",
        "Paper's ablation ordering (APS-II > APS-I > prior-confidence sampler), per task:",
        "",
        format_table(aps_ordering(rows)),
        f"({sec:.0f} s)\n",
    ]
    print("\n".join(parts[-10:]), flush=True)


def _aps_shapes_section(quick: bool, suffix: str, parts: list[str]) -> None:
    (rows, panels, ceiling), sec = _timed(lambda: shapes_aps_table(quick))
    png = results_dir() / f"bench_discrete_shapes{suffix}.png"
    save_png(panels, png, scale=2)
    parts += [
        "## 5. APS on shapes scenes (zoo `masked-shapes`: 64 patch-VQ tokens, 256 codes)\n",
        format_table(rows),
        "",
        "Methods as in section 4. Ground truth = the scene's own tokens decoded (PSNR/SSIM/token accuracy "
        "against it); `class acc` = fraction of reconstructions the zoo `shapes-classifier` reads as the true "
        "scene (every grid cell and the background). Operators act on 3x32x32 RGB: SR is 4x average pooling, "
        "blur sigma 1.5 px. Ceilings: " + "; ".join(f"{k} {v:.3g}" for k, v in ceiling.items()) + ".",
        f"Posterior samples: `{png.name}`.",
        "",
        "Paper's ablation ordering (APS-II > APS-I > prior-confidence sampler), per task:",
        "",
        format_table(aps_ordering(rows)),
        f"({sec:.0f} s)\n",
    ]
    print("\n".join(parts[-10:]), flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discrete", help="masked discrete diffusion: FHS, precision, LSD, APS")
    p.add_argument("--quick", action="store_true", help="small sample counts (< 5 minutes on an idle CPU)")
    p.add_argument("--model", default="masked-digits", help="zoo name (or .safetensors path) of a masked model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--sections",
        default=None,
        help="comma-separated section ids to run (0,1,2,2b,3a,3b,4,5; default all); a subset writes "
        "bench_discrete[_quick]_<ids>.md",
    )
    p.set_defaults(func=run)
