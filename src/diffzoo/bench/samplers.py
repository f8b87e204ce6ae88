"""``diffzoo bench samplers``: sample quality, speed and per-step overhead of every sampler, next to
diffusers' schedulers and k-diffusion's samplers driving the same model from the same noise.

Tables (written to ``docs/results/bench_samplers[_quick].md``):

1. **Convergence order** on an exact Gaussian-mixture denoiser (no learning error): log-log slope of
   the error against a 1000-step Heun reference on EDM's schedule and Karras grid, beside each method's
   nominal order (DDIM/Euler 1: Song et al. 2021, Karras et al. 2022; Heun 2: Karras et al. 2022, Alg. 1;
   DPM-Solver++(2M) 2: Lu et al. 2022b; PLMS/F-PNDM 4 nominal: Liu et al. 2022, Eq. 12).
2. **Sampler overhead per step** with a null network at NFE 20: diffzoo (validation off, and with the
   Denoiser's default settings), diffusers and k-diffusion, and diffzoo's cost as a ratio of theirs.
3. **Rows = implementation x sampler x NFE** (5, 10, 20, 50, 100; 1000 for DDPM) on the zoo's
   class-conditional digits UNet (classifier-free guidance 2, labels 0..9 cycling): FD-digits and
   conditional accuracy (held-out classifier), SWD of the toy2d zoo model to fresh data, wall time, and
   sampler overhead per step = (wall time - time inside the network) / steps. For diffusers and
   k-diffusion rows: the overhead ratio to diffzoo's same sampler and NFE, and the max |difference| of
   the digits samples from diffzoo's (same model, same starting noise).
4. **Paper claims** (PNDM: 50 steps beat 1000-step DDIM; DPM-Solver++: ~20 NFE suffice) re-measured.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffzoo import zoo
from diffzoo.bench.common import results_dir
from diffzoo.core.analytic import GaussianMixture
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.random import generators_from_seeds
from diffzoo.core.schedules import DiscreteSchedule, get_schedule
from diffzoo.data import digits as digits_data
from diffzoo.data import toy2d
from diffzoo.io import atomic_write_text, format_table
from diffzoo.metrics import sliced_wasserstein
from diffzoo.metrics.digits import digits_accuracy, digits_fd
from diffzoo.models.registry import build
from diffzoo.sampling import SAMPLERS, STOCHASTIC, get_timesteps, heun, initial_noise, steps_for_nfe
from diffzoo.sampling import reference as ref

log = logging.getLogger(__name__)
Tensor = torch.Tensor

SAMPLER_ORDER = ("ddpm", "ddim", "plms", "pndm", "dpmpp_2m", "euler", "heun")
GRID = {
    "ddpm": "leading",
    "ddim": "leading",
    "plms": "leading",
    "pndm": "leading",
    "dpmpp_2m": "uniform",
    "euler": "karras",
    "heun": "karras",
}
NOMINAL_ORDER = {"ddim": 1, "euler": 1, "heun": 2, "dpmpp_2m": 2, "plms": 4, "pndm": 4}
KDIFF = ("euler", "heun", "dpmpp_2m")
UNAVAILABLE = "unavailable (k-diffusion not installed)"
NFES_FULL = (5, 10, 20, 50, 100)
NFES_QUICK = (10, 20)
GUIDANCE = 2.0


# ------------------------------------------------------------------------------------------ timing
class TimedNet:
    """Wraps a network function and accumulates the seconds spent inside it."""

    def __init__(self, fn: Callable[..., Tensor]):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, x: Tensor, t: Tensor, cond: Any) -> Tensor:
        t0 = time.perf_counter()
        out = self.fn(x, t, cond)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def timed(den: Denoiser, validate: bool = False) -> tuple[Denoiser, TimedNet]:
    """A copy of ``den`` (same options) whose network is timed; ``validate`` off by default (no extra host
    syncs), on for the Denoiser's default settings as a user runs it."""
    net = TimedNet(den.net)
    out = den.with_net(net)
    out.validate = validate
    return out, net


# ------------------------------------------------------------------------------------------ models
@dataclass
class Subject:
    """A model under test: its denoiser, per-sample shape, conditioning and a quality metric."""

    name: str
    den: Denoiser
    shape: tuple[int, ...]
    cond: Tensor | None
    metric: Callable[[Tensor], dict[str, float]]


def _digits_subject(name: str, n: int) -> Subject | None:

    if name not in zoo.names():
        log.warning("digits model %r not in the zoo %s: skipping the digits columns", name, zoo.names())
        return None
    zm = zoo.load(name)
    labels = torch.arange(n) % 10
    den = cfg_denoiser(zm.denoiser(validate=False), GUIDANCE, torch.tensor([zm.config.get("null_class", 10)]))

    def metric(x: Tensor) -> dict[str, float]:
        return {"fd_digits": digits_fd(x), "accuracy": digits_accuracy(x, labels)}

    return Subject(name, den, (1, 8, 8), labels, metric)


def _toy_subject(name: str, n: int) -> Subject | None:

    if name not in zoo.names():
        log.warning("toy2d model %r not in the zoo %s: skipping the SWD column", name, zoo.names())
        return None
    zm = zoo.load(name)
    data = toy2d.get(zm.config.get("dataset", "ring8"))
    truth = data.sample(n, torch.Generator().manual_seed(12345))

    def metric(x: Tensor) -> dict[str, float]:
        return {"swd_toy2d": float(sliced_wasserstein(x.double(), truth, generator=torch.Generator().manual_seed(0)))}

    return Subject(name, zm.denoiser(validate=False), (data.dim,), None, metric)


def random_unet_subject(n: int) -> Subject:
    """An untrained DigitsUNet (development stand-in when the zoo has no digits model): timings only.

    Read as a v-predictor, so its (arbitrary) outputs keep x0 = alpha x - sigma v bounded."""

    torch.manual_seed(0)
    net = build("digits_unet", ch=32, mults=(1, 2), blocks=1, num_classes=10).eval().requires_grad_(False)
    den = Denoiser(net, get_schedule("linear"), "v_prediction", validate=False)
    return Subject("random-unet", den, (1, 8, 8), torch.arange(n) % 10, lambda x: {})


# ------------------------------------------------------------------------------------------ runners
def _start(subj: Subject, n: int, steps: int, spacing: str, seed: int) -> tuple[Tensor, Tensor]:
    ts = get_timesteps(subj.den.schedule, steps, spacing)
    x = initial_noise(subj.den, (n, *subj.shape), ts, generators_from_seeds(range(seed, seed + n)))
    return x, ts


def _diffusers_config(den: Denoiser) -> dict[str, Any]:
    sch = den.schedule
    if not isinstance(sch, DiscreteSchedule):
        raise TypeError(f"schedule: diffusers' schedulers need a discrete schedule, got {sch.name!r}")
    return {
        "num_train_timesteps": sch.num_train_timesteps,
        "trained_betas": sch.betas.numpy().tolist(),
        "set_alpha_to_one": sch.final_alpha_cumprod == 1.0,
        "prediction_type": den.prediction_type,
    }


def run_one(
    impl: str, sampler: str, subj: Subject, steps: int, n: int, seed: int = 0, validate: bool = False
) -> dict[str, Any]:
    """One sampling run; returns samples, wall time, model time and NFE.

    The timed region is the sampling call (diffzoo: the sampler function, its entry checks and tables
    included; diffusers: ``set_timesteps`` and the step loop); the denoiser, the diffusers scheduler
    object, the grid and the starting noise are built before it. ``validate``: the denoiser's setting.
    """
    den, net = timed(subj.den, validate)
    x, ts = _start(subj, n, steps, GRID[sampler], seed)
    cond = None if subj.cond is None else subj.cond[:n]
    gen = generators_from_seeds(range(seed + 10**6, seed + 10**6 + n)) if sampler in STOCHASTIC else None
    sch = None
    if impl == "diffusers":
        over: dict[str, Any] = {"use_karras_sigmas": True} if GRID[sampler] == "karras" else {}
        sch = ref.diffusers_scheduler(sampler, _diffusers_config(den), **over)
    t0 = time.perf_counter()
    if impl == "diffzoo":
        out = SAMPLERS[sampler](den, x, ts, cond, generator=gen)
    elif impl == "k-diffusion":
        out = ref.run_k_diffusion(sampler, den, x, ts, cond)
    else:
        g = torch.Generator().manual_seed(seed + 10**6) if sampler in STOCHASTIC else None
        out = ref.run_diffusers(sch, den, x, steps, cond, generator=g)
    wall = time.perf_counter() - t0
    return {"x": out, "wall": wall, "model": net.seconds, "nfe": net.calls, "steps": steps}


# ------------------------------------------------------------------------------------------ tables
def convergence_table(ns: tuple[int, ...] = (8, 16, 32, 64)) -> list[dict[str, Any]]:
    """Measured order of each ODE sampler on an exact GMM denoiser (EDM schedule, Karras grid)."""
    gm = GaussianMixture(
        [[-1.0, -1.0], [1.0, 1.0], [1.5, -1.0], [-1.5, 1.0]], [0.3, 0.2, 0.25, 0.4], [0.3, 0.2, 0.3, 0.2]
    )
    sch = get_schedule("edm")
    den = gm.denoiser(sch)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    truth = heun(den, x, get_timesteps(sch, 1000, "karras"))
    rows = []
    for name, order in NOMINAL_ORDER.items():
        errs = [float((SAMPLERS[name](den, x, get_timesteps(sch, k, "karras")) - truth).norm(dim=1).mean()) for k in ns]
        slope = math.log(errs[0] / errs[-1]) / math.log(ns[-1] / ns[0])
        rows.append(
            {
                "sampler": name,
                "paper order": order,
                "measured order": slope,
                **{f"err@{k} steps": e for k, e in zip(ns, errs)},
            }
        )
    return rows


OVERHEAD_IMPLS = (
    ("diffzoo", "diffzoo", False),
    ("diffzoo (validated)", "diffzoo", True),
    ("diffusers", "diffusers", False),
    ("k-diffusion", "k-diffusion", False),
)


def overhead_table(budget: int = 20, repeats: int = 15, batch: int = 16, kdiff: bool = True) -> list[dict[str, Any]]:
    """Per-step overhead with a null network (``eps = 0.1 x``: ~free), best of ``repeats`` runs.

    With a negligible network the wall time is the sampler's own cost: schedule arithmetic, the
    prediction conversion, bookkeeping and (for diffusers) the scheduler object's per-step work.
    diffzoo runs twice: with validation off (the pure sampler cost) and with the Denoiser's default
    settings (``validate=True``: entry checks and a final finiteness check), as a user runs it. The
    implementations alternate within each repeat, so a loaded machine disturbs them alike; the
    minimum is the least disturbed run. Ratios below 1 mean diffzoo is cheaper. ``kdiff=False`` (k-diffusion
    not installed) marks its columns ``unavailable``.
    """
    subj = Subject(
        "null", Denoiser(lambda x, t, c: 0.1 * x, get_schedule("linear"), "epsilon"), (1, 8, 8), None, lambda x: {}
    )
    rows = []
    for sampler in SAMPLER_ORDER:
        steps = steps_for_nfe(sampler, budget)
        if steps is None:
            continue
        impls = [
            (label, impl, val)
            for label, impl, val in OVERHEAD_IMPLS
            if impl != "k-diffusion" or (kdiff and sampler in KDIFF)
        ]
        best = {label: math.inf for label, _, _ in impls}
        for rep in range(repeats + 1):  # the first round warms up
            for label, impl, val in impls:
                wall = run_one(impl, sampler, subj, steps, batch, validate=val)["wall"]
                if rep:
                    best[label] = min(best[label], wall)
        row: dict[str, Any] = {"sampler": sampler, "steps": steps}
        row.update({f"{label} us/step": 1e6 * best[label] / steps for label in best})
        for ours in ("diffzoo", "diffzoo (validated)"):
            row[f"{ours} / diffusers"] = best[ours] / best["diffusers"]
        if "k-diffusion" in best:
            row["diffzoo / k-diffusion"] = best["diffzoo"] / best["k-diffusion"]
        elif not kdiff and sampler in KDIFF:
            row["k-diffusion us/step"] = row["diffzoo / k-diffusion"] = UNAVAILABLE
        rows.append(row)
    return rows


def sampler_rows(
    digits: Subject | None,
    toy: Subject | None,
    nfes: tuple[int, ...],
    n_digits: int,
    n_toy: int,
    with_1000: bool,
    impls: tuple[str, ...],
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """The rows of table 3. The 1000-step rows (DDPM, DDIM) run for diffzoo only (CPU budget)."""
    rows: list[dict[str, Any]] = []
    warm: set[tuple[str, str]] = set()
    plan = [(s, b) for s in SAMPLER_ORDER for b in nfes] + ([("ddpm", 1000), ("ddim", 1000)] if with_1000 else [])
    for sampler, budget in plan:
        steps = steps_for_nfe(sampler, budget)
        if steps is None:
            continue
        ours: dict[str, Any] | None = None
        for impl in impls:
            if (impl == "k-diffusion" and sampler not in KDIFF) or (budget == 1000 and impl != "diffzoo"):
                continue
            row: dict[str, Any] = {"impl": impl, "sampler": sampler, "grid": GRID[sampler], "steps": steps}
            if digits is not None:
                if (impl, sampler) not in warm:
                    run_one(impl, sampler, digits, steps_for_nfe(sampler, 10) or 4, 2)
                    warm.add((impl, sampler))
                r = run_one(impl, sampler, digits, steps, n_digits)
                row.update(nfe=r["nfe"], **digits.metric(r["x"]))
                row["wall s"] = r["wall"]
                row["overhead us/step"] = 1e6 * (r["wall"] - r["model"]) / steps
                if impl == "diffzoo":
                    ours = {"x": r["x"], "ovh": row["overhead us/step"]}
                elif ours is not None:
                    row["overhead vs diffzoo"] = row["overhead us/step"] / max(ours["ovh"], 1e-9)
                    if sampler not in STOCHASTIC:
                        row["max abs diff vs diffzoo"] = float((r["x"] - ours["x"]).abs().max())
            if toy is not None:
                row["swd_toy2d"] = toy.metric(run_one(impl, sampler, toy, steps, n_toy)["x"])["swd_toy2d"]
            log.info("%s", row)
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    return rows


def claims_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The papers' headline claims beside our measurements (from the diffzoo rows)."""

    def fd(sampler: str, nfe_: int) -> float | None:
        for r in rows:
            if r["impl"] == "diffzoo" and r["sampler"] == sampler and r.get("nfe") == nfe_:
                return r.get("fd_digits")
        return None

    out = []
    pndm50, ddim1000 = fd("pndm", 50), fd("ddim", 1000)
    out.append(
        {
            "claim": "F-PNDM at 50 NFE (41 steps) beats DDIM with 1000 steps (Liu et al. 2022, Sec. 5.2)",
            "paper": "CIFAR-10 FID: PNDM 3.26 (<DDIM-1000)",
            "ours (FD-digits)": f"pndm@50 NFE {pndm50:.3g} vs ddim@1000 {ddim1000:.3g}"
            if pndm50 and ddim1000
            else "n/a",
            "holds": None if not (pndm50 and ddim1000) else pndm50 <= ddim1000,
        }
    )
    dpm20, ddim20 = fd("dpmpp_2m", 20), fd("ddim", 20)
    out.append(
        {
            "claim": "DPM-Solver++(2M) at 20 NFE beats DDIM at 20 NFE (Lu et al. 2022b, Sec. 6)",
            "paper": "ImageNet-256 guided: 2M < DDIM at 10-20 NFE",
            "ours (FD-digits)": f"dpmpp_2m@20 {dpm20:.3g} vs ddim@20 {ddim20:.3g}" if dpm20 and ddim20 else "n/a",
            "holds": None if not (dpm20 and ddim20) else dpm20 <= ddim20,
        }
    )
    return out


# ------------------------------------------------------------------------------------------ command
def data_floor(n: int) -> dict[str, Any]:
    """FD-digits / accuracy of ``n`` real training digits: the small-sample floor of the FD column."""

    d = digits_data.load("train")
    idx = torch.randperm(len(d), generator=torch.Generator().manual_seed(0))[:n]
    return {
        "impl": "real data",
        "sampler": f"{n} train digits",
        "fd_digits": digits_fd(d.images[idx]),
        "accuracy": digits_accuracy(d.images[idx], d.labels[idx]),
    }


def render(
    args: argparse.Namespace, header: str, conv: list, ovh: list, rows: list, claims: bool, partial: bool = False
) -> str:
    cols = [
        "impl",
        "sampler",
        "grid",
        "steps",
        "nfe",
        "fd_digits",
        "accuracy",
        "swd_toy2d",
        "wall s",
        "overhead us/step",
        "overhead vs diffzoo",
        "max abs diff vs diffzoo",
    ]
    present = [c for c in cols if any(c in r for r in rows)]
    cmd = "diffzoo bench samplers" + (" --quick" if args.quick else "")
    return "\n".join(
        [
            f"# `{cmd}`" + (" (PARTIAL: run in progress)" if partial else ""),
            "",
            header,
            "",
            "## 1. Convergence order on an exact Gaussian-mixture denoiser (EDM schedule, Karras grid)",
            "",
            format_table(conv),
            "",
            "Error = mean |x - x_ref| over 256 paths vs 1000-step Heun; order = log-log slope from 8 to 64 steps. "
            "PLMS/F-PNDM use fixed Adams-Bashforth coefficients on a non-uniform grid, which caps their order near 2.",
            "",
            "## 2. Sampler overhead per step with a null network (NFE 20, batch 16 of 1x8x8, best of 15)",
            "",
            format_table(
                ovh,
                [
                    "sampler",
                    "steps",
                    "diffzoo us/step",
                    "diffzoo (validated) us/step",
                    "diffusers us/step",
                    "k-diffusion us/step",
                    "diffzoo / diffusers",
                    "diffzoo (validated) / diffusers",
                    "diffzoo / k-diffusion",
                ],
            ),
            "",
            "The network is `eps = 0.1 x`, so wall time is the sampler's own per-step cost (setup included, "
            "divided by the steps). Ratios are diffzoo's cost over the reference's (goal: <= 0.5 vs diffusers). "
            "`diffzoo` runs with validation off, `diffzoo (validated)` with the Denoiser's default settings as a "
            "user runs it: the inputs and the whole grid are checked once at entry and the result once at the "
            "end, never per step. Each call precomputes its grid's coefficients (`Denoiser.prepare_times`, "
            "`sampling.base.Grid`), so a step is the network call plus a few fused kernels with no schedule "
            "interpolation and no host sync. DDPM draws its noise from 16 per-sample generators in diffzoo "
            "(batch-invariant seeds), from one generator in diffusers.",
            "",
            "## 3. Samplers x NFE, diffzoo vs diffusers vs k-diffusion (same model, same starting noise)",
            "",
            format_table(rows, present),
            "",
            "Grids: leading = diffusers' default for DDPM/DDIM/PNDM; uniform = DPMSolverMultistep's linspace; "
            "karras = rho 7 (diffusers `use_karras_sigmas=True`). Overhead = (wall - network time) / steps, "
            "measured on a shared, loaded CPU (noisy; table 2 is the clean comparison). FD-digits has a strong "
            "small-sample bias: compare with the `real data` row at the same n. diffusers' Euler/Heun use "
            "float32 sigmas, so their samples differ at ~1e-4. Stochastic rows (DDPM) draw different noise in "
            "each library. 1000-step rows run for diffzoo only.",
            "",
            "## 4. Paper claims",
            "",
            format_table(claims_table(rows)) if claims else "(no digits model)",
            "",
        ]
    )


def run(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    quick = args.quick
    nfes = NFES_QUICK if quick else NFES_FULL
    n_digits = args.n or (100 if quick else 200)
    n_toy = 500 if quick else 2000
    digits = _digits_subject(args.digits_model, n_digits)
    toy = _toy_subject(args.toy_model, n_toy)
    real = digits is not None
    if digits is None and args.random_unet:
        digits = random_unet_subject(n_digits)
    t0 = time.perf_counter()

    def header() -> str:
        return (
            ("k-diffusion not installed: its rows and columns are unavailable. " if not kdiff else "")
            + f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} "
            f"thread(s); digits model `{digits.name if digits else 'none'}` (CFG {GUIDANCE}, {n_digits} "
            f"samples per row, labels 0..9 cycling), toy2d model `{toy.name if toy else 'none'}` ({n_toy} "
            f"samples); total {time.perf_counter() - t0:.0f} s."
        )

    kdiff = ref.k_diffusion_available()
    if not kdiff:
        log.warning(
            "k-diffusion is not installed: its columns are marked unavailable "
            "(pip install --no-deps k-diffusion==0.1.1.post1)"
        )
    conv = convergence_table()
    ovh = overhead_table(kdiff=kdiff)
    out = _out_path(args)

    def flush(rows: list[dict[str, Any]]) -> None:
        if out is not None:
            atomic_write_text(out, render(args, header(), conv, ovh, rows, False, partial=True))

    rows = [data_floor(n_digits)] if real else []
    rows += sampler_rows(
        digits,
        toy,
        nfes,
        n_digits,
        n_toy,
        with_1000=not quick,
        impls=("diffzoo", "diffusers", "k-diffusion") if kdiff else ("diffzoo", "diffusers"),
        on_row=lambda r: flush(rows + r),
    )
    return render(args, header(), conv, ovh, rows, real)


def _out_path(args: argparse.Namespace) -> Any:
    if args.no_write:
        return None
    return args.out or results_dir() / ("bench_samplers_quick.md" if args.quick else "bench_samplers.md")


def _main(args: argparse.Namespace) -> int:
    text = run(args)
    print(text)
    out = _out_path(args)
    if out is not None:
        atomic_write_text(out, text)
        log.info("wrote %s", out)
    return 0


def register(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "samplers",
        help="sampler quality / speed / overhead vs diffusers and k-diffusion",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--quick", action="store_true", help="NFE 10 and 20 only, fewer samples (< 3 min)")
    p.add_argument("--digits-model", default="digits-unet")
    p.add_argument("--toy-model", default="toy2d-ring8")
    p.add_argument(
        "--random-unet",
        action="store_true",
        help="without a zoo digits model, time an untrained UNet instead (no quality columns)",
    )
    p.add_argument("--n", type=int, default=None, help="digits samples per row")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="markdown output (default docs/results/bench_samplers[_quick].md)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.set_defaults(func=_main)
