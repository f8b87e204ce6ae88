"""Property-based fuzzing of every registry entry (issue 10, section 1).

For each entry of each registry -- schedules, Gaussian samplers (and their grids), inversion and edit
methods, inverse operators and posterior methods, masked (discrete) samplers -- hypothesis generates
valid inputs, which must give finite outputs of the documented shape and dtype, and invalid ones (wrong
rank, shape, dtype or device, NaN/inf, empty batches, out-of-range times and strengths, unknown names,
mismatched operator dims, non-monotone grids, ...), which must raise a one-line ``ValueError`` /
``TypeError`` naming the argument: never an ``IndexError``, a shape error from inside torch, a hang or a
silent answer (:func:`fuzz_support.expect_error`).

The tests are parametrized over the registries themselves, so an entry added later is fuzzed without
touching this file, and :func:`test_every_registry_is_fuzzed` fails when a new registry appears in an
algorithm package without a fuzz test. Example counts come from the hypothesis profile
(``DIFFZOO_FUZZ_PROFILE``: ``ci`` by default, ``long`` for release checks; see ``tests/conftest.py`` and
``diffzoo selftest --fuzz``). The invariants (round trips, ``A A^+ A = A``, batch invariance, seeds)
are in ``tests/test_fuzz_invariants.py``.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("hypothesis")

from fuzz_support import (
    DISCRETE,
    DTYPES,
    assert_finite,
    discrete_problems,
    expect_error,
    image_denoiser,
    latent_model,
    linear_net,
    names_argument,
    operator_problems,
    run_valid,
    sampler_problems,
    schedule,
)
from hypothesis import assume, given
from hypothesis import strategies as st

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.parameterization import PREDICTION_TYPES
from diffzoo.core.random import generators_from_seeds
from diffzoo.core.schedules import SCHEDULES, get_schedule
from diffzoo.discrete import samplers as discrete_samplers
from diffzoo.editing import EDIT_METHODS, edit_image, reconstruct_image
from diffzoo.inverse import OPERATORS, LinearOperator, get_operator
from diffzoo.inverse import posterior as posterior_mod
from diffzoo.inversion import METHODS as INVERSION_METHODS
from diffzoo.inversion import edit, invert, reconstruct
from diffzoo.sampling import SAMPLERS, SPACINGS, STOCHASTIC, get_timesteps

SRC = Path(__file__).resolve().parents[1] / "src" / "diffzoo"
NAN, INF = float("nan"), float("inf")

# -------------------------------------------------------------------------------------------------
# Every registry is fuzzed
# -------------------------------------------------------------------------------------------------

#: Module-level names that are registries of methods (in algorithm and core packages).
REGISTRY_NAME = re.compile(
    r"^[A-Z0-9_]*(SAMPLERS|METHODS|OPERATORS|SCHEDULES|PREDICTION_TYPES|QUANTIZERS|DETECTORS|WATERMARKS|"
    r"ATTACKS|SOLVERS|CODECS|DISTILLERS|ACCELERATORS)$"
)
#: Consumer and artifact packages: not algorithm registries (networks, commands, data sets, metrics).
NOT_ALGORITHMS = {"cli", "bench", "demo", "recipes", "studio", "zoo", "models", "train", "data", "io", "metrics"}
#: Registry -> the tests that fuzz every one of its entries.
FUZZED = {
    "diffzoo.core.schedules.SCHEDULES": "test_schedule_factory, test_get_timesteps_*, invariants",
    "diffzoo.core.parameterization.PREDICTION_TYPES": "test_sampler_valid_inputs, invariants",
    "diffzoo.sampling.SAMPLERS": "test_sampler_*, invariants",
    "diffzoo.accel.cache.CACHE_METHODS": "tests/test_fuzz_accel.py",
    "diffzoo.inversion.METHODS": "test_inversion_*, invariants",
    "diffzoo.editing.api.EDIT_METHODS": "test_edit_method_*",
    "diffzoo.inverse.operators.OPERATORS": "test_operator_*, invariants",
    "diffzoo.inverse.posterior.METHODS": "test_posterior_*, invariants",
    "diffzoo.discrete.samplers.SAMPLERS": "test_discrete_sampler_*, invariants",
    "diffzoo.discrete.schedule.MASK_SCHEDULES": "test_discrete_sampler_valid_inputs, invariants",
    "diffzoo.forensics.protect.PROTECT_METHODS": "tests/test_fuzz_forensics.py",
    "diffzoo.quant.api.METHODS": "tests/test_fuzz_quant.py",
    "diffzoo.provenance.attacks.ATTACKS": "tests/test_fuzz_provenance.py",
    "diffzoo.provenance.watermarks.WATERMARKS": "tests/test_fuzz_provenance.py",
}
#: Registries deliberately not fuzzed here, with the reason.
EXEMPT = {
    "diffzoo.sampling.reference.KDIFF_SAMPLERS": "k-diffusion's samplers: the parity reference, not diffzoo methods",
    "diffzoo.core.schedules.DIFFUSERS_PREDICTION_TYPES": "diffusers' names of PREDICTION_TYPES (test_diffusers_config)",
}


def _registries() -> set[str]:
    found = set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] in NOT_ALGORITHMS or rel.parts[0].endswith(".py") and rel.stem in NOT_ALGORITHMS:
            continue
        parts = ["diffzoo", *rel.with_suffix("").parts]
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for t in targets:
                if isinstance(t, ast.Name) and REGISTRY_NAME.match(t.id):
                    found.add(f"{module}.{t.id}")
    return found


def test_every_registry_is_fuzzed():
    """A registry added to an algorithm package (quantizers, detectors, watermarks...) needs a fuzz test."""
    found = _registries()
    missing = sorted(found - set(FUZZED) - set(EXEMPT))
    assert not missing, f"registries without a fuzz test (add them to tests/test_fuzz_registries.py): {missing}"
    stale = sorted((set(FUZZED) | set(EXEMPT)) - found)
    assert not stale, f"FUZZED/EXEMPT name registries that no longer exist: {stale}"


# -------------------------------------------------------------------------------------------------
# Schedules
# -------------------------------------------------------------------------------------------------


def check_schedule(sch) -> None:
    """A usable schedule: a finite time range, alpha/sigma finite, in [0, 1] x [0, inf), log-SNR
    non-increasing in t, and out-of-range or NaN times refused naming ``t``."""
    assert sch.kind in ("discrete", "continuous")
    assert math.isfinite(sch.t_max) and sch.t_end <= sch.t_min < sch.t_max, (sch.t_end, sch.t_min, sch.t_max)
    t = torch.cat(
        [torch.tensor([sch.t_end], dtype=torch.float64), torch.linspace(sch.t_min, sch.t_max, 33, dtype=torch.float64)]
    )
    a, s = sch.alpha_sigma(t)
    assert bool(torch.isfinite(a).all() & torch.isfinite(s).all()), "alpha/sigma not finite"
    assert bool((a >= 0).all() & (s >= 0).all() & (a <= 1 + 1e-12).all()), "alpha/sigma out of range"
    assert bool(((a > 0) | (s > 0)).all()), "alpha = sigma = 0"
    # log-SNR non-increasing: alpha_{i+1} sigma_i <= alpha_i sigma_{i+1} (no division by zero)
    assert bool((a[1:] * s[:-1] <= a[:-1] * s[1:] + 1e-12).all()), "log-SNR increases with t"
    span = abs(sch.t_max) + 1
    expect_error(lambda: sch.alpha_sigma(torch.tensor([sch.t_max + span], dtype=torch.float64)), "t")
    expect_error(lambda: sch.alpha_sigma(torch.tensor([sch.t_end - span], dtype=torch.float64)), "t")
    expect_error(lambda: sch.alpha_sigma(torch.tensor([NAN], dtype=torch.float64)), "t")


def _factory_value(draw, default):
    """A value for a schedule factory argument: near its default, anywhere, or hostile."""
    hostile = st.sampled_from([NAN, INF, -INF, -1.0, 0.0, "x", None, [1.0]])
    if isinstance(default, bool):
        return draw(st.booleans())
    if isinstance(default, int):
        return draw(st.one_of(st.integers(-3, 1200), st.sampled_from([2.5, "7", None, True]), hostile))
    if isinstance(default, float):
        near = st.floats(0.25, 4.0).map(lambda f: default * f)
        return draw(st.one_of(near, st.floats(-2.0, 2.0 + 2 * abs(default)), hostile))
    return draw(hostile)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@given(data=st.data())
def test_schedule_factory(name, data, fuzz_count):
    """Any arguments: a usable schedule, or an error naming one of them."""
    params = inspect.signature(SCHEDULES[name]).parameters
    kw = {p: _factory_value(data.draw, par.default) for p, par in params.items() if data.draw(st.booleans())}
    try:
        sch = run_valid(lambda: get_schedule(name, **kw))
    except (ValueError, TypeError) as e:
        assert kw, f"default {name!r} refused: {e}"
        assert names_argument(e, tuple(kw)), f"{type(e).__name__} does not name one of {sorted(kw)}: {e}"
        fuzz_count("schedules", "invalid")
        return
    fuzz_count("schedules", "valid")
    check_schedule(sch)


def test_unknown_schedule_names_schedule(fuzz_count):
    for bad in ("nope", None, 3, "LINEAR"):
        expect_error(lambda: get_schedule(bad), "schedule")
        fuzz_count("schedules", "invalid")


# -------------------------------------------------------------------------------------------------
# Grids
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@given(spacing=st.sampled_from(SPACINGS), n=st.integers(1, 60))
def test_get_timesteps_valid_grids(name, spacing, n, fuzz_count):
    """A grid is strictly decreasing float64 of length n + 1 inside [t_end, t_max], ending at t_end --
    or a documented refusal naming the argument (karras without a finite VE range, a discrete grid
    that does not fit)."""
    sch = schedule(name)
    try:
        ts = run_valid(lambda: get_timesteps(sch, n, spacing))
    except ValueError as e:
        assert names_argument(e, ("sigma_min", "num_steps")), e
        fuzz_count("grids", "valid")
        return
    fuzz_count("grids", "valid")
    assert ts.dtype == torch.float64 and ts.shape == (n + 1,)
    assert bool((ts[1:] < ts[:-1]).all()) and float(ts[-1]) == sch.t_end
    assert sch.t_end <= float(ts.min()) and float(ts.max()) <= sch.t_max + 1e-9


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@given(spacing=st.sampled_from(SPACINGS), n=st.integers(1, 6))
def test_get_timesteps_rejects_bad_arguments(name, spacing, n, fuzz_count):
    sch = schedule(name)
    cases = [
        (lambda: get_timesteps(None, n, spacing), "schedule"),
        (lambda: get_timesteps("linear", n, spacing), "schedule"),
        (lambda: get_timesteps(sch, n, "nope"), "spacing"),
        (lambda: get_timesteps(sch, n, None), "spacing"),
    ]
    for bad in (0, -1, 2.5, True, "3", None):
        cases.append((lambda bad=bad: get_timesteps(sch, bad, spacing), "num_steps"))
    for bad in (NAN, INF, 0.0, -7.0, "x", None):
        cases.append((lambda bad=bad: get_timesteps(sch, n, "karras", rho=bad), "rho"))
    for bad in (NAN, -1.0, 0.0, "x"):
        cases.append((lambda bad=bad: get_timesteps(sch, n, "karras", sigma_min=bad, sigma_max=10.0), "sigma_min"))
        cases.append((lambda bad=bad: get_timesteps(sch, n, "karras", sigma_min=0.1, sigma_max=bad), "sigma_max"))
    for bad in (-1, 0.5, "1", None, 10**9 if sch.kind == "discrete" else -5):
        cases.append((lambda bad=bad: get_timesteps(sch, n, "leading", steps_offset=bad), "steps_offset"))
    for fn, arg in cases:
        expect_error(fn, arg)
        fuzz_count("grids", "invalid")


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@given(ptype=st.sampled_from(PREDICTION_TYPES), b=st.integers(1, 3), u=st.floats(0.0, 1.0))
def test_denoiser_rejects_bad_times(name, ptype, b, u, fuzz_count):
    """A direct call ``den(x, t)`` / ``den.x0_eps(x, t)``: NaN, out-of-range and wrongly shaped times,
    and unknown prediction types, raise naming the argument."""
    sch = schedule(name)
    den = Denoiser(linear_net((2,)), sch, ptype)
    x = torch.randn(b, 2, dtype=torch.float64)
    span = abs(sch.t_max) + 1
    ok_t = sch.t_min + u * (sch.t_max - sch.t_min)
    for t in (NAN, sch.t_max + span, sch.t_end - span, torch.full((b + 1,), ok_t), torch.full((b, 2), ok_t)):
        expect_error(lambda t=t: den(x, t), "t")
        expect_error(lambda t=t: den.x0_eps(x, t), "t")
        fuzz_count("grids", "invalid")
    for bad in ("nope", None, "EPS"):
        expect_error(lambda bad=bad: Denoiser(linear_net((2,)), sch, bad), "prediction_type")
        fuzz_count("grids", "invalid")


# -------------------------------------------------------------------------------------------------
# Gaussian samplers
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@given(data=st.data())
def test_sampler_valid_inputs(name, data, fuzz_count):
    """Any schedule x spacing x prediction type x grid of 1-6 steps x batch x dtype: a finite sample of
    x's shape and dtype -- or the documented refusal of a grid starting at alpha = 0 (zero terminal SNR)
    for samplers moving along eps and eps/score predictions, naming ``timesteps`` / ``prediction_type``."""
    den, x, ts, seeds = data.draw(sampler_problems(name))
    fuzz_count("samplers", "valid")
    try:
        out = run_valid(lambda: SAMPLERS[name](den, x, ts, generator=generators_from_seeds(seeds)))
    except ValueError as e:
        alpha0 = float(den.schedule.alpha_sigma(ts[:1], check=False)[0])
        assert alpha0 == 0 and names_argument(e, ("timesteps", "prediction_type")), e
        return
    assert_finite(out, x.shape, x.dtype, name)


def _nan_at(x: torch.Tensor, i: int, value: float) -> torch.Tensor:
    y = x.clone()
    y.view(-1)[i % y.numel()] = value
    return y


def _swap(ts: torch.Tensor, i: int) -> torch.Tensor:
    t = ts.clone()
    i = i % (t.numel() - 1)
    t[i], t[i + 1] = ts[i + 1], ts[i]
    return t


def bad_sampler_inputs(name: str, den: Denoiser, x: torch.Tensor, ts: torch.Tensor, i: int):
    """``(argument, kwargs)`` pairs: one invalid argument each, for sampler ``name`` (``i``: a position)."""
    sch, b = den.schedule, x.shape[0]
    span = abs(sch.t_max) + 1
    xs = [
        x[0],  # rank 1
        x[..., None],  # extra dimension
        torch.zeros(b, x.shape[1] + 1, dtype=x.dtype),  # feature dimension of another model
        x[:0],  # empty batch
        torch.tensor(1.0, dtype=x.dtype),
        x.to(torch.float16),
        x.to(torch.int64),
        x > 0,
        x.to(torch.complex64),
        x.tolist(),
        None,
        _nan_at(x, i, NAN),
        _nan_at(x, i, INF),
        _nan_at(x, i, -INF),
        torch.empty(x.shape, dtype=x.dtype, device="meta"),
    ]
    tss = [
        ts.tolist(),
        ts[None],
        ts[:1],
        ts[:0],
        ts.flip(0),
        _swap(ts, i),
        torch.cat([ts[:1], ts]),  # repeated time: not strictly decreasing
        _nan_at(ts, i, NAN),
        torch.cat([ts[:1] + span, ts[1:]]),  # starts above t_max
        torch.cat([ts[:-1], ts[-1:] - span]),  # ends below t_end
        ts > ts.median(),
        ts.to(torch.complex128),
    ]
    cases = [("x", dict(x=v)) for v in xs]
    cases[0] = (("x", "generator"), dict(x=xs[0]))  # rank 1: a batch of x.shape[1] scalars, not of b
    cases += [("timesteps", dict(timesteps=v)) for v in tss]
    cases += [("denoiser", dict(denoiser=v)) for v in (None, den.net, "ddim")]
    cases += [("callback", dict(callback=v)) for v in (3, "print")]
    cases += [("callback", dict(callback=lambda d: torch.zeros(b + 1, *x.shape[1:], dtype=x.dtype)))]
    cases += [("callback", dict(callback=lambda d: "state"))]
    if name in STOCHASTIC:  # the samplers that draw noise must check where it comes from
        gens = [
            5,
            "seed",
            [torch.Generator()] * (b + 1),
            [1] * b,
            torch.Generator().manual_seed(0).get_state(),
        ]
        cases += [("generator", dict(generator=v)) for v in gens]
    # the sampler's own float options (ddim's eta, ...): NaN and non-numbers are refused by name
    for p, par in inspect.signature(SAMPLERS[name]).parameters.items():
        if par.kind is inspect.Parameter.KEYWORD_ONLY and type(par.default) is float:
            cases += [(p, {p: v}) for v in (NAN, "x", None, [0.5])]
            if p == "eta":
                cases += [(p, {p: v}) for v in (-0.25, 1.5, INF)]
    return cases


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@given(data=st.data())
def test_sampler_rejects_bad_inputs(name, data, fuzz_count):
    """Every invalid argument, one at a time on a random valid problem, raises naming the argument."""
    den, x, ts, seeds = data.draw(sampler_problems(name, any_schedule=False))
    i = data.draw(st.integers(0, 10**6))
    fn = SAMPLERS[name]
    for arg, change in bad_sampler_inputs(name, den, x, ts, i):
        kw = {**dict(denoiser=den, x=x, timesteps=ts, generator=generators_from_seeds(seeds)), **change}
        names = arg if isinstance(arg, tuple) else (arg,)
        expect_error(lambda kw=kw: fn(kw.pop("denoiser"), kw.pop("x"), kw.pop("timesteps"), **kw), *names)
        fuzz_count("samplers", "invalid")


# -------------------------------------------------------------------------------------------------
# Inversion methods
# -------------------------------------------------------------------------------------------------

#: Strategies for the methods' own options (only those a method's invert() accepts are drawn).
INVERSION_OPTIONS = {
    "p": st.floats(0.5, 1.0),
    "leapfrog": st.booleans(),
    "strength": st.floats(0.3, 1.0),
    "eta": st.floats(0.05, 1.0),
    "zero_last_noise": st.booleans(),
    "inversion_guidance": st.floats(0.0, 4.0),
    "offset_scale": st.floats(0.0, 1.0),
    "inner_steps": st.integers(0, 1),
    "lr": st.floats(1e-3, 1e-1),
}
#: Inversion methods that draw noise from ``generator``.
STOCHASTIC_INVERSIONS = {"ddpm"}


def _options(fn) -> dict[str, inspect.Parameter]:
    return {p: v for p, v in inspect.signature(fn).parameters.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}


@st.composite
def inversion_problems(draw, name: str):
    dtype = draw(st.sampled_from(DTYPES))
    model = latent_model(draw(st.integers(0, 2**16)))
    b, h, w = draw(st.integers(1, 2)), draw(st.integers(2, 5)), draw(st.integers(2, 5))
    z = torch.randn(b, 4, h, w, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    opts = {p: draw(INVERSION_OPTIONS[p]) for p in _options(INVERSION_METHODS[name].invert) if p in INVERSION_OPTIONS}
    steps = draw(st.integers(1, 2 if "inner_steps" in opts else 4))
    guidance = draw(st.floats(0.0, 8.0))
    return model, z.to(dtype), steps, guidance, opts


@pytest.mark.parametrize("name", sorted(INVERSION_METHODS))
@given(data=st.data())
def test_inversion_valid_inputs(name, data, fuzz_count):
    """invert -> reconstruct -> edit on random tiny networks, latents, grids, guidance and method options:
    finite latents of the input's shape and working dtype."""
    model, z, steps, guidance, opts = data.draw(inversion_problems(name))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    fuzz_count("inversion", "valid")
    with torch.no_grad():
        r = run_valid(
            lambda: invert(
                name, model, z, "a red circle", num_steps=steps, guidance=guidance, dtype=z.dtype, generator=gen,
                is_latent=True, **opts,
            )
        )  # fmt: skip
        assert r.method == name and r.latent0.shape == z.shape and r.latent0.dtype == z.dtype
        assert bool(torch.isfinite(r.latents).all()), "inverted latents not finite"
        assert_finite(run_valid(lambda: reconstruct(r)), z.shape, z.dtype, "reconstruction")
        out = run_valid(lambda: edit(r, "a blue square", guidance=data.draw(st.floats(0.0, 8.0))))
    assert_finite(out.latents, z.shape, z.dtype, "edit")


@pytest.mark.parametrize("name", sorted(INVERSION_METHODS))
@given(data=st.data())
def test_inversion_rejects_bad_inputs(name, data, fuzz_count):
    model, z, steps, guidance, opts = data.draw(inversion_problems(name))
    b = z.shape[0]
    i = data.draw(st.integers(0, 10**6))
    ok = dict(num_steps=steps, guidance=guidance, dtype=z.dtype, is_latent=True, **opts)

    def call(method=name, m=model, x=z, prompt="a red circle", **kw):
        return lambda: invert(method, m, x, prompt, **{**ok, **kw})

    cases = [(call(method=v), "method") for v in ("nope", None, 3, "")]
    cases += [(call(m=v), "model") for v in (None, model.unet, "tiny")]
    images = [z[0], z[None], z[:0], z.to(torch.int64), z.tolist(), z[:, :3], _nan_at(z, i, NAN), _nan_at(z, i, INF)]
    cases += [(call(x=v), "image_or_latent") for v in images]
    cases += [(call(prompt=v), "prompt") for v in (3, None, ["a"] * (b + 1), [1] * b)]
    cases += [(call(num_steps=v), "num_steps") for v in (0, -1, 2.5, True, "3", 10**6)]
    cases += [(call(guidance=v), "guidance") for v in (NAN, -1.0, 1e3, "x")]
    cases += [(call(dtype=v), "dtype") for v in (torch.int64, "float32", None)]
    cases += [(call(spacing=v), "spacing") for v in ("nope", None)]
    cases += [(call(steps_offset=v), "steps_offset") for v in (-1, 0.5, 10**9)]
    if name in STOCHASTIC_INVERSIONS:
        cases += [(call(generator=v), "generator") for v in (5, [torch.Generator()] * (b + 1), ["g"] * b)]
    for p, par in _options(INVERSION_METHODS[name].invert).items():
        if type(par.default) is float:
            cases += [(call(**{p: v}), p) for v in (NAN, "x", None, -1.0)]
        elif type(par.default) is int:
            cases += [(call(**{p: v}), p) for v in (-1, 2.5, "2")]
    for fn, arg in cases:
        expect_error(fn, arg)
        fuzz_count("inversion", "invalid")
    with torch.no_grad():
        r = invert(name, model, z, "a red circle", **ok)
    edits = [(lambda v=v: edit(r, v), "target_prompt") for v in (3, None, ["b"] * (b + 1))]
    edits += [(lambda v=v: edit(r, "b", guidance=v), "guidance") for v in (NAN, -2.0, "x")]
    edits += [(lambda v=v: edit(v, "b"), "result") for v in (None, z)]
    edits += [(lambda v=v: reconstruct(v), "result") for v in (None, z)]
    if "skip" in _options(INVERSION_METHODS[name].edit):
        edits += [(lambda v=v: edit(r, "b", skip=v), "skip") for v in (-1, steps, 0.5, None)]
    for fn, arg in edits:
        expect_error(fn, arg)
        fuzz_count("inversion", "invalid")


# -------------------------------------------------------------------------------------------------
# Edit methods
# -------------------------------------------------------------------------------------------------


@st.composite
def edit_problems(draw, name: str):
    dtype = draw(st.sampled_from(DTYPES))
    model = latent_model(draw(st.integers(0, 2**16)))
    h, w = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    z = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))), dtype=dtype)
    kw = dict(
        num_steps=draw(st.integers(2, 3)),
        guidance=draw(st.one_of(st.none(), st.floats(1.0, 8.0))),
        strength=draw(st.one_of(st.none(), st.floats(0.5, 1.0))),
        seed=draw(st.integers(0, 2**31 - 1)),
        p2p="none",  # prompt-to-prompt control needs a diffusers UNet's attention processors
        is_latent=True,
        dtype=dtype,
    )
    if "null" in name:
        kw["inner_steps"] = 1
    return model, z, kw


@pytest.mark.parametrize("name", sorted(EDIT_METHODS))
@given(data=st.data())
def test_edit_method_valid_inputs(name, data, fuzz_count):
    """edit_image and reconstruct_image of every edit method on random tiny networks: finite latents
    and images of the input's shape and dtype."""
    model, z, kw = data.draw(edit_problems(name))
    fuzz_count("editing", "valid")
    with torch.no_grad():
        out = run_valid(lambda: edit_image(name, model, z, "a red circle", "a blue square", **kw))
        rec = run_valid(lambda: reconstruct_image(name, model, z, "a red circle", **kw))
    assert_finite(out.latents, z.shape, z.dtype, "edit")
    assert_finite(out.image, z.shape, z.dtype, "image")
    assert_finite(rec.reconstruction, z.shape, z.dtype, "reconstruction")


@pytest.mark.parametrize("name", sorted(EDIT_METHODS))
@given(data=st.data())
def test_edit_method_rejects_bad_inputs(name, data, fuzz_count):
    model, z, kw = data.draw(edit_problems(name))
    i = data.draw(st.integers(0, 10**6))

    def call(method=name, m=model, x=z, src="a red circle", tgt="a blue square", **over):
        return lambda: edit_image(method, m, x, src, tgt, **{**kw, **over})

    cases = [(call(method=v), "method") for v in ("nope", None, 7)]
    cases += [(call(m=v), "model") for v in (None, "tiny")]
    images = [z[0], z[:0], z.to(torch.int64), z.tolist(), _nan_at(z, i, NAN), _nan_at(z, i, -INF)]
    cases += [(call(x=v), "image_or_latent") for v in images]
    cases += [(call(src=v), "source_prompt") for v in (3, None, [1])]
    cases += [(call(tgt=v), "target_prompt") for v in (3, [None])]
    cases += [(call(seed=v), "seed") for v in (1.5, "x", None)]
    cases += [(call(guidance=v), "guidance") for v in (NAN, "x", -5.0)]
    cases += [(call(num_steps=v), "num_steps") for v in (0, 2.5, -3)]
    cases += [(call(p2p=v), "p2p") for v in ("nope", None)]
    cases += [(call(dtype=v), "dtype") for v in (torch.int64, "float64")]
    if EDIT_METHODS[name].default_strength is not None:  # the methods that start late use strength
        cases += [(call(strength=v), "strength") for v in (NAN, 2.0, -0.5, "x")]
    for fn, arg in cases:
        expect_error(fn, arg)
        fuzz_count("editing", "invalid")


# -------------------------------------------------------------------------------------------------
# Inverse operators
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPERATORS)
@given(data=st.data())
def test_operator_valid_inputs(name, data, fuzz_count):
    op, x, _ = data.draw(operator_problems(name))
    b = x.shape[0]
    fuzz_count("operators", "valid")
    y = run_valid(lambda: op.A(x))
    assert_finite(y, (b, *op.meas_shape()), x.dtype, "A(x)")
    seeds = list(range(b))
    ym = op.measure(x, data.draw(st.floats(0.0, 1.0)), generators_from_seeds(seeds))
    assert_finite(ym, y.shape, x.dtype, "measure")
    assert op.check_measurement(ym) is ym
    if isinstance(op, LinearOperator):
        assert_finite(op.A_pinv(y), x.shape, x.dtype, "A^+ y")
        assert_finite(op.At(y), x.shape, x.dtype, "A^T y")
        assert_finite(op.project(x, y), x.shape, x.dtype, "project")
        assert_finite(op.project(x, y[:1]), x.shape, x.dtype, "project (one measurement)")


def _same_operator(a, b, shape) -> bool:
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return a.meas_shape() == b.meas_shape() and torch.equal(a.A(x), b.A(x))


@pytest.mark.parametrize("name", OPERATORS)
@given(data=st.data())
def test_operator_rejects_bad_inputs(name, data, fuzz_count):
    op, x, kw = data.draw(operator_problems(name))
    b, shape = x.shape[0], op.in_shape
    i = data.draw(st.integers(0, 10**6))
    y = op.A(x)
    c, h, w = shape
    images = [
        x[0],
        x[None],
        x[:0],
        torch.zeros(b, c + 1, h, w, dtype=x.dtype),  # mismatched operator dims
        torch.zeros(b, c, h + 2, w, dtype=x.dtype),
        torch.zeros(b, c, h, w + 2, dtype=x.dtype),
        x.to(torch.int64),
        x.tolist(),
        _nan_at(x, i, NAN),
        _nan_at(x, i, INF),
    ]
    cases = [(lambda v=v: op.A(v), "x") for v in images]
    cases += [(lambda v=v: op.measure(x, v), "sigma_y") for v in (NAN, -0.1, "x")]
    cases += [(lambda v=v: op.measure(x, 0.1, v), "generator") for v in (5, [torch.Generator()] * (b + 1))]
    bad_shapes = [(8, 8), (1, 0, 8), (1, 8.5, 8), "abc", None, (1, -8, 8), (1, 8, 8, 8), (True, 8, 8.0)]
    cases += [(lambda v=v: get_operator(name, v), "in_shape") for v in bad_shapes]
    cases += [(lambda: get_operator(v, shape), "operator") for v in ("nope", None, 3)]
    if isinstance(op, LinearOperator):
        ys = [y[0], y[:0], torch.zeros(b, *op.meas_shape(), 2, dtype=y.dtype), y.to(torch.int64)]
        if y.numel():
            ys += [_nan_at(y, i, NAN), y[..., :-1]]
        cases += [(lambda v=v: op.A_pinv(v), "y") for v in ys]
        cases += [(lambda v=v: op.At(v), "y") for v in ys]
        if b > 1:
            cases.append((lambda: op.project(x, torch.cat([y, y[:1]])), "y"))
        cases += [(lambda v=v: op.project(v, y), "x0") for v in images[:7]]
    for fn, arg in cases:
        expect_error(fn, arg)
        fuzz_count("operators", "invalid")


@pytest.mark.parametrize("name", OPERATORS)
def test_get_operator_options_are_refused_by_name_or_unused(name, fuzz_count):
    """get_operator's options: a bad value (NaN, inf, a string, None, 2.5 for an integer) is refused by
    name, or the operator does not use that option (it equals the operator built without it)."""
    shape = (3, 8, 8)
    base = get_operator(name, shape)
    for k, par in inspect.signature(get_operator).parameters.items():
        if par.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        bad = (NAN, INF, -INF, "x", None) if type(par.default) is float else (2.5, NAN, "x", None)
        for v in bad:
            try:
                other = get_operator(name, shape, **{k: v})
            except (ValueError, TypeError) as e:
                assert names_argument(e, (k,)), f"get_operator({name!r}, {k}={v!r}): {type(e).__name__}: {e}"
            except Exception as e:  # noqa: BLE001
                pytest.fail(f"get_operator({name!r}, {k}={v!r}): {type(e).__name__}: {e} (not an error naming {k})")
            else:
                assert _same_operator(base, other, shape), f"get_operator({name!r}, {k}={v!r}) silently used it"
            fuzz_count("operators", "invalid")


# -------------------------------------------------------------------------------------------------
# Posterior methods
# -------------------------------------------------------------------------------------------------


@st.composite
def posterior_problems(draw, method: str):
    name = draw(st.sampled_from(OPERATORS))
    shape = (draw(st.sampled_from([1, 3])), 4, 4)
    try:
        op = get_operator(name, shape)
    except ValueError as e:
        assert names_argument(e, ("in_shape",)), e
        assume(False)
    sname = draw(st.sampled_from(sorted(SCHEDULES)))
    den = image_denoiser(shape, schedule(sname), draw(st.integers(0, 3)))
    b = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from(DTYPES))
    x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))), dtype=dtype)
    y = op.A(x)
    kw = dict(
        num_steps=draw(st.integers(1, 4)),
        sigma_y=draw(st.sampled_from([0.0, 0.05])),
        eta=draw(st.floats(0.0, 1.0)),
        zeta=draw(st.floats(0.0, 1.0)),
        dtype=dtype,
        generator=generators_from_seeds(draw(st.lists(st.integers(0, 2**16), min_size=b, max_size=b))),
    )
    if draw(st.booleans()):  # a given start, possibly in the other dtype: the result is still in ``dtype``
        kw["x_T"] = torch.randn(b, *shape, dtype=draw(st.sampled_from(DTYPES)))
    return op, den, y, kw


@pytest.mark.parametrize("method", posterior_mod.METHODS)
@given(data=st.data())
def test_posterior_valid_inputs(method, data, fuzz_count):
    """Every posterior method x every operator x every schedule: a finite restoration (B, C, H, W) in the
    asked dtype -- or DDNM's documented refusal of a nonlinear operator (naming ``op``)."""
    op, den, y, kw = data.draw(posterior_problems(method))
    fuzz_count("posterior", "valid")
    try:
        out = run_valid(lambda: posterior_mod.posterior_sample(method, den, op, y, **kw))
    except TypeError as e:
        assert not isinstance(op, LinearOperator) and names_argument(e, ("op",)), e
        return
    assert_finite(out, (y.shape[0], *op.in_shape), kw["dtype"], method)


@pytest.mark.parametrize("method", posterior_mod.METHODS)
@given(data=st.data())
def test_posterior_rejects_bad_inputs(method, data, fuzz_count):
    op, den, y, kw = data.draw(posterior_problems(method))
    b = y.shape[0]
    i = data.draw(st.integers(0, 10**6))
    x_ok = torch.randn(b, *op.in_shape)

    def call(m=method, d=den, o=op, yy=y, **over):
        return lambda: posterior_mod.posterior_sample(m, d, o, yy, **{**kw, **over})

    cases = [(call(m=v), "method") for v in ("nope", None, "DDNM")]
    cases += [(call(o=v), "op") for v in (None, "sr", op.forward)]
    ys = [y[0], y[:0], y.to(torch.int64), y.tolist(), _nan_at(y, i, NAN), torch.zeros(b, 3, 5, 7)]
    cases += [(call(yy=v), "y") for v in ys]
    cases += [(call(dtype=v), "dtype") for v in (torch.int64, "float32", None)]
    cases += [(call(sigma_y=v), "sigma_y") for v in (NAN, -0.1, "x")]
    cases += [(call(eta=v), "eta") for v in (NAN, -0.1, 1.5, "x")]
    cases += [(call(zeta=v), "zeta") for v in (NAN, -1.0, "x")]
    if method != "pinv":  # pinv needs no network, grid or noise
        cases += [(call(d=v), "denoiser") for v in (None, den.net, "ddpm")]
        cases += [(call(num_steps=v), "num_steps") for v in (0, -2, 2.5)]
        cases += [(call(spacing=v), "spacing") for v in ("nope", None)]
        cases += [(call(generator=v), "generator") for v in (5, [torch.Generator()] * (b + 1))]
        xts = [x_ok[:0], x_ok[0], torch.randn(b + 1, *op.in_shape), _nan_at(x_ok, i, NAN), x_ok.to(torch.int64)]
        cases += [(call(x_T=v), "x_T") for v in xts]
    for fn, arg in cases:
        expect_error(fn, arg)
        fuzz_count("posterior", "invalid")


# -------------------------------------------------------------------------------------------------
# Masked (discrete) samplers
# -------------------------------------------------------------------------------------------------


def test_discrete_registry_is_mapped():
    assert set(DISCRETE) == set(discrete_samplers.SAMPLERS), "map every discrete sampler name to its function"


@pytest.mark.parametrize("name", sorted(DISCRETE))
@given(data=st.data())
def test_discrete_sampler_valid_inputs(name, data, fuzz_count):
    """int64 tokens (n, L), every position unmasked, clean tokens of x_init kept; the exact first-hitting
    sampler (one token per call) only draws sequences the joint gives positive probability."""
    model, n, x_init, opts, seeds = data.draw(discrete_problems(name))
    fuzz_count("discrete", "valid")
    x = run_valid(lambda: DISCRETE[name](model, n, generator=generators_from_seeds(seeds), x_init=x_init, **opts))
    assert_finite(x, (n, model.seq_len), torch.int64, name)
    assert int(x.min()) >= 0 and int(x.max()) < model.vocab_size, "a token is still masked or out of range"
    if x_init is not None:
        clean = x_init != model.vocab_size
        assert torch.equal(x[clean], x_init[clean]), "clean tokens of x_init changed"
    if name == "fhs" and opts.get("tokens_per_step", 1) == 1:
        assert bool((model.joint[model.state_index(x)] > 0).all()), "first-hitting drew an impossible sequence"


@pytest.mark.parametrize("name", sorted(DISCRETE))
@given(data=st.data())
def test_discrete_sampler_rejects_bad_inputs(name, data, fuzz_count):
    model, n, x_init, opts, seeds = data.draw(discrete_problems(name))
    i = data.draw(st.integers(0, 10**6))
    fn, params = DISCRETE[name], inspect.signature(DISCRETE[name]).parameters
    k, length = model.vocab_size, model.seq_len
    full = torch.full((n, length), k)

    def call(nn=n, **over):
        kw = {**opts, "generator": generators_from_seeds(seeds), **over}
        return lambda: fn(model, nn, **kw)

    cases = [(call(nn=v), "n") for v in (0, -1, 2.5, True, "2", None)]
    inits = [full[0], full[..., None], full[:0], full.float(), full.bool(), full + 1, full * 0 - 1]
    inits += [torch.full((n, length + 1), k), full.tolist(), full.to(torch.complex64)]
    cases += [(call(x_init=v), "x_init") for v in inits]
    cases += [(call(generator=v), "generator") for v in (5, "g", [torch.Generator()] * (n + 1), [3] * n)]
    cases += [(call(seq_len=v), "seq_len") for v in (length + 1, 0)]
    if "steps" in params:
        cases += [(call(steps=v), "steps") for v in (0, -1, 2.5, "3", None)]
    if "schedule" in params:
        cases += [(call(schedule=v), "schedule") for v in ("nope", None, 3)]
    if "precision" in params:
        cases += [(call(precision=v), "precision") for v in ("float16", None)]
    if "tokens_per_step" in params:
        cases += [(call(tokens_per_step=v), "tokens_per_step") for v in (0, 1.5, None)]
    if "times" in params:
        times = [[1.0, 0.0], torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]), torch.tensor([0.0, 0.5, 1.0])]
        times += [torch.tensor([2.0, 0.0]), torch.tensor([1.0, NAN, 0.0]), torch.tensor([1.0, -0.5])]
        times += [torch.tensor([1.0, 0.5, 0.5, 0.0]), torch.tensor([True, False])]
        cases += [(call(times=v), "times") for v in times]
    for p in ("temperature", "choice_temperature"):
        if p in params:
            cases += [(call(**{p: v}), p) for v in (NAN, -1.0, "x", None)]
    wide = WrongLogits(model, extra=1 + i % 3)  # a network whose logits do not match its vocabulary
    cases.append((lambda: fn(wide, n, **{**opts, "generator": generators_from_seeds(seeds)}), "model output"))
    for f, arg in cases:
        expect_error(f, arg)
        fuzz_count("discrete", "invalid")


class WrongLogits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, extra: int) -> None:
        super().__init__()
        self.model, self.extra = model, extra
        self.vocab_size, self.seq_len = model.vocab_size, model.seq_len

    def forward(self, x):
        out = self.model(x)
        return torch.cat([out, out[..., : self.extra]], -1)
