"""Shared pieces of the property-based fuzz tests (``tests/test_fuzz_*.py``, issue 10): the error-contract
check, cheap exact / random models, and a per-call time limit (a hang is a failure, not a stuck CI job).

Not a test module (no ``test_`` prefix); the fuzz tests import it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import signal
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import assume
from hypothesis import strategies as st

from diffzoo.core.analytic import GaussianMixture
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.parameterization import PREDICTION_TYPES, from_x0_eps
from diffzoo.core.random import generators_from_seeds
from diffzoo.core.schedules import SCHEDULES, NoiseSchedule, get_schedule
from diffzoo.discrete import samplers as discrete_samplers
from diffzoo.discrete.categorical import PRECISIONS
from diffzoo.discrete.oracle import JointOracle
from diffzoo.discrete.schedule import MASK_SCHEDULES
from diffzoo.inverse import get_operator
from diffzoo.latent.model import LatentModel
from diffzoo.sampling import SPACINGS, get_timesteps, initial_noise, nfe, steps_for_nfe

DTYPES = (torch.float32, torch.float64)

#: Seconds one library call may take in a fuzz case before it counts as a hang.
CALL_LIMIT_S = 60.0

#: Errors the library may raise for bad input (ValueError/TypeError, naming the argument).
CONTRACT_ERRORS = (ValueError, TypeError)


class Hang(Exception):
    """A call ran past :data:`CALL_LIMIT_S`."""


@contextlib.contextmanager
def time_limit(seconds: float = CALL_LIMIT_S) -> Iterator[None]:
    """Raise :class:`Hang` in the block after ``seconds`` (SIGALRM; a no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"call ran for more than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def names_argument(err: BaseException, names: tuple[str, ...]) -> bool:
    """The message is one line whose head (before the first ``:``) names one of ``names``."""
    msg = str(err)
    head = msg.split(":", 1)[0]
    return "\n" not in msg.strip() and ":" in msg and any(n in head for n in names)


def expect_error(fn: Callable[[], Any], *names: str) -> BaseException:
    """Call ``fn``: it must raise ``ValueError``/``TypeError`` whose one-line message starts by naming one
    of ``names`` -- not another exception (``IndexError``, a shape error from inside torch), not a hang,
    and not a silent answer."""
    try:
        with time_limit():
            out = fn()
    except CONTRACT_ERRORS as e:
        if not names_argument(e, names):
            pytest.fail(f"{type(e).__name__} does not name {' or '.join(names)}: {e!s:.300}")
        return e
    except Hang as e:
        pytest.fail(f"hang instead of an error naming {' or '.join(names)}: {e}")
    except Exception as e:  # noqa: BLE001 - the point: anything else is a contract violation
        pytest.fail(f"{type(e).__name__} instead of ValueError/TypeError naming {' or '.join(names)}: {e!s:.300}")
    shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
    pytest.fail(f"no error (returned {shape}); expected ValueError/TypeError naming {' or '.join(names)}")


def run_valid(fn: Callable[[], Any]) -> Any:
    """Call ``fn`` on valid input under the time limit (a hang fails the case)."""
    with time_limit():
        return fn()


def assert_finite(x: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, what: str = "output") -> None:
    assert torch.is_tensor(x), f"{what}: expected a tensor, got {type(x).__name__}"
    assert tuple(x.shape) == tuple(shape), f"{what}: shape {tuple(x.shape)}, expected {tuple(shape)}"
    assert x.dtype == dtype, f"{what}: dtype {x.dtype}, expected {dtype}"
    if x.is_floating_point():
        assert bool(torch.isfinite(x).all()), f"{what}: NaN or inf"


# -------------------------------------------------------------------------------------------------
# Cheap models
# -------------------------------------------------------------------------------------------------


def mixture(dim: int, seed: int = 0, k: int = 3) -> GaussianMixture:
    """A small random Gaussian mixture in ``dim`` dimensions (exact denoiser: the sampler oracle)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g, dtype=torch.float64)
    stds = 0.2 + torch.rand(k, generator=g, dtype=torch.float64)
    return GaussianMixture(means, stds, torch.rand(k, generator=g, dtype=torch.float64) + 0.1)


def image_denoiser(shape: tuple[int, int, int], schedule: NoiseSchedule, seed: int = 0) -> Denoiser:
    """The exact mixture denoiser on images ``(B, C, H, W)`` (flattened to vectors)."""
    inner = mixture(math.prod(shape), seed).denoiser(schedule)
    return Denoiser(lambda x, t, c: inner.net(x.flatten(1), t, c).view_as(x), schedule, "sample", validate=False)


def linear_net(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float64):
    """A random affine, time-dependent network ``x, t -> W x (1 + t / t_scale) + b`` on flattened states."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    w = torch.randn(n, n, generator=g, dtype=dtype) / math.sqrt(n)
    b = torch.randn(n, generator=g, dtype=dtype)

    def net(x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        tt = t.to(x.dtype).reshape(-1, 1) / (1 + t.abs().max().to(x.dtype))
        return ((x.flatten(1) @ w.to(x.dtype).T) * (1 + tt) + b.to(x.dtype)).view_as(x)

    return net


class TinyUNet(torch.nn.Module):
    """A small text-conditional stand-in for a diffusers UNet (``unet(z, t, encoder_hidden_states=...)
    .sample``): nonlinear in ``z``, ``t`` and the prompt; random weights from ``seed``; no diffusers import."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.txt = torch.nn.Linear(8, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.4 * torch.randn(p.shape, generator=g))
        self.config = SimpleNamespace(cross_attention_dim=8, in_channels=4)

    def forward(self, z, t, encoder_hidden_states=None, **kw):
        t = torch.as_tensor(t, dtype=z.dtype).reshape(-1, 1, 1, 1) / 1000
        c = self.txt(encoder_hidden_states.to(z.dtype).mean(1))[:, :, None, None]
        return SimpleNamespace(sample=torch.tanh(self.conv(z) * (1 + t) + c))


class TinyText(torch.nn.Module):
    def __init__(self, seed: int = 1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Embedding(64, 8)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(64, 8, generator=g))

    def forward(self, ids):
        return (self.emb(ids),)


def tokenize(prompts, length: int = 6) -> torch.Tensor:
    rows = [[sum(map(ord, w)) % 60 + 2 for w in p.split()][: length - 1] for p in prompts]
    return torch.tensor([[0, *r] + [1] * (length - 1 - len(r)) for r in rows])


def latent_model(seed: int = 0, dtype: torch.dtype = torch.float32, schedule: str = "scaled_linear") -> LatentModel:
    """A pixel-space text-conditional :class:`LatentModel` on a random tiny network (latents ``(B, 4, h, w)``)."""
    return LatentModel(
        unet=TinyUNet(seed).eval(),
        vae=None,
        text_encoder=TinyText(seed + 1).eval(),
        tokenize=tokenize,
        schedule=get_schedule(schedule),
        scaling_factor=1.0,
        max_length=6,
    ).to(dtype=dtype)


# -------------------------------------------------------------------------------------------------
# Problems (hypothesis strategies), shared by test_fuzz_registries.py and test_fuzz_invariants.py
# -------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def schedule(name: str):
    return get_schedule(name)


def min_steps(name: str) -> int:
    """The fewest steps sampler ``name`` runs (F-PNDM: 4), from the registry's own NFE functions."""
    return next(n for n in range(1, 20) if steps_for_nfe(name, nfe(name, n)) == n)


def typed(den: Denoiser, ptype: str) -> Denoiser:
    """``den`` (an x0 predictor) re-expressed as a ``ptype`` predictor: the same model, another output."""
    if ptype == "sample":
        return den
    sch = den.schedule

    def net(x, t, cond):
        x0 = den.net(x, t, cond)
        t64 = t.to(torch.float64)
        shape = (-1,) + (1,) * (x.ndim - 1)
        a, s = (v.to(x.dtype).reshape(shape) for v in sch.alpha_sigma(t64, check=False))
        da = ds = None
        if ptype == "velocity":
            da, ds = (v.to(x.dtype).reshape(shape) for v in sch.d_alpha_sigma(t64))
        return from_x0_eps(x0, (x - a * x0) / s, ptype, a, s, da, ds)

    return Denoiser(net, sch, ptype, validate=False)


@st.composite
def sampler_problems(draw, name: str, any_schedule: bool = True):
    """(denoiser, x, timesteps, generators, seeds) of a valid sampling problem for sampler ``name``."""
    sname = draw(st.sampled_from(sorted(SCHEDULES))) if any_schedule else "linear"
    sch = schedule(sname)
    spacing = draw(st.sampled_from(SPACINGS))
    n = draw(st.integers(min_steps(name), 6))
    try:
        ts = get_timesteps(sch, n, spacing)
    except ValueError as e:  # documented refusals (karras on a schedule without a finite VE range)
        assert names_argument(e, ("sigma_min", "num_steps")), e
        assume(False)
    b, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    ptype = draw(st.sampled_from(PREDICTION_TYPES)) if any_schedule else "sample"
    den = typed(mixture(d, draw(st.integers(0, 3))).denoiser(sch), ptype)
    seeds = draw(st.lists(st.integers(0, 2**31 - 1), min_size=b, max_size=b, unique=True))
    x = initial_noise(den, (b, d), ts, generators_from_seeds(seeds), dtype)
    return den, x, ts, seeds


#: Valid values of get_operator's options (each operator uses some of them).
OPERATOR_OPTIONS = dict(
    ratio=st.floats(0.05, 1.0),
    factor=st.sampled_from([1, 2]),
    missing=st.floats(0.0, 0.9),
    sigma=st.floats(0.3, 2.0),
    length=st.integers(1, 5),
    angle=st.floats(-180.0, 180.0),
    seed=st.integers(0, 2**31 - 1),
    gain=st.floats(0.5, 3.0),
    rcond=st.floats(1e-6, 0.1),
)


@st.composite
def operator_problems(draw, name: str):
    """A built operator and a valid image batch; shapes that the operator refuses are skipped after
    checking that the refusal names an argument."""
    shape = (draw(st.integers(1, 3)), 2 * draw(st.integers(1, 4)), 2 * draw(st.integers(1, 4)))
    kw = {k: draw(s) for k, s in OPERATOR_OPTIONS.items() if draw(st.booleans())}
    try:
        op = get_operator(name, shape, **kw)
    except (ValueError, TypeError) as e:
        assert names_argument(e, ("in_shape", "factor", "box")), e
        assume(False)
    dtype = draw(st.sampled_from(DTYPES))
    b = draw(st.integers(1, 3))
    x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))), dtype=dtype)
    return op, x, kw


#: Name -> function of ``discrete.samplers.SAMPLERS`` (a tuple of names): a new name fails here until mapped.
DISCRETE = {
    "fhs": discrete_samplers.first_hitting_sample,
    "ancestral": discrete_samplers.ancestral_sample,
    "confidence": discrete_samplers.confidence_sample,
}
DISCRETE_OPTIONS = dict(
    steps=st.integers(1, 6),
    schedule=st.sampled_from(MASK_SCHEDULES),
    precision=st.sampled_from(sorted(PRECISIONS)),
    tokens_per_step=st.integers(1, 3),
    temperature=st.floats(0.5, 2.0),
    choice_temperature=st.floats(0.0, 5.0),
    cache=st.booleans(),
)


@st.composite
def discrete_problems(draw, name: str):
    """A sparse exact oracle over K^L sequences, n, an optional partially masked start and options."""
    k = draw(st.integers(2, 4))
    length = draw(st.integers(2, {2: 8, 3: 6, 4: 5}[k]))  # up to ~1000 sequences
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    probs = torch.rand((k,) * length, generator=g, dtype=torch.float64)
    density = draw(st.one_of(st.just(1.0), st.floats(0.2, 1.0)))  # dense joints, or some impossible sequences
    probs = probs * (torch.rand(probs.shape, generator=g, dtype=torch.float64) < density)
    probs.view(-1)[draw(st.integers(0, probs.numel() - 1))] += 1.0  # at least one sequence
    model = JointOracle(probs)
    n = draw(st.integers(1, 3))
    x_init = None
    if draw(st.booleans()):  # a partially masked sample of the joint (so the conditionals are defined)
        rows = model.states[torch.multinomial(model.joint, n, replacement=True, generator=g)]
        frac = torch.tensor([draw(st.one_of(st.just(0.0), st.floats(0.0, 0.9))) for _ in range(n)])  # mixed masking
        keep = torch.rand(rows.shape, generator=g) < frac[:, None]
        x_init = torch.where(keep, rows, torch.full_like(rows, k))
    params = inspect.signature(DISCRETE[name]).parameters
    opts = {p: draw(s) for p, s in DISCRETE_OPTIONS.items() if p in params}
    seeds = draw(st.lists(st.integers(0, 2**31 - 1), min_size=n, max_size=n, unique=True))
    return model, n, x_init, opts, seeds
