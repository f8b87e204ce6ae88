"""Invariants as properties on generated inputs (issue 10, section 1).

* parameterisation round trips (eps / x0 / v / score / velocity) for every schedule and time, and the
  denoiser's fast path equal to its direct path with a consistent pair ``x_t = alpha x0 + sigma eps``;
* EDICT, edit-friendly DDPM and Direct Inversion reconstruct exactly (float64) on random networks;
* ``A A^+ A = A`` (up to the singular values a truncated pseudo-inverse drops), ``A^+ A A^+ = A^+`` and
  ``<A x, y> = <x, A^T y>`` for every linear operator; DDNM's sample satisfies ``A x = y``;
* batch invariance (a sample does not depend on what else is in the batch, given one generator per
  sample) and same seed, same result -- for every Gaussian sampler, posterior method, inversion method
  and masked sampler; masking schedules invert.

Parametrized over the registries, so new entries are checked automatically. Example counts follow the
hypothesis profile (``tests/conftest.py``).
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("hypothesis")

from fuzz_support import (
    DISCRETE,
    DTYPES,
    discrete_problems,
    image_denoiser,
    latent_model,
    linear_net,
    operator_problems,
    run_valid,
    sampler_problems,
    schedule,
)
from hypothesis import assume, given
from hypothesis import strategies as st

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.parameterization import PREDICTION_TYPES, convert, from_x0_eps, to_x0_eps
from diffzoo.core.random import generators_from_seeds
from diffzoo.core.schedules import SCHEDULES
from diffzoo.discrete.schedule import MASK_SCHEDULES, MaskSchedule
from diffzoo.inverse import OPERATORS, LinearOperator, MatrixOperator, get_operator
from diffzoo.inverse.operators import Saturation
from diffzoo.inverse.posterior import METHODS as POSTERIOR_METHODS
from diffzoo.inverse.posterior import posterior_sample
from diffzoo.inversion import METHODS as INVERSION_METHODS
from diffzoo.inversion import invert, reconstruct
from diffzoo.sampling import SAMPLERS, SPACINGS, get_timesteps

F64 = torch.float64


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> float:
    err = float((a - b).abs().max()) if a.numel() else 0.0
    assert err <= tol, f"max error {err:.3g} > {tol:.3g}"
    return err


def _rows_equal(batch: torch.Tensor, alone: torch.Tensor, what: str) -> None:
    """A row computed in a batch equals the same row computed alone (bit for bit, or within a few ulps
    where a kernel's vectorisation depends on the batch size)."""
    if batch.is_floating_point():
        tol = 1e-5 if batch.dtype == torch.float32 else 1e-12
        _close(batch, alone, tol * (1 + float(alone.abs().max())))
    else:
        assert torch.equal(batch, alone), f"{what}: the row changed with the rest of the batch"


# -------------------------------------------------------------------------------------------------
# Parameterisation
# -------------------------------------------------------------------------------------------------


def _defined(ptype: str, a: float, s: float, det: float) -> bool:
    """Where a prediction type determines (x0, eps): eps/score need alpha > 0, sample sigma > 0, velocity
    ``alpha sigma' != sigma alpha'``."""
    return {"epsilon": a > 0, "score": a > 0 and s > 0, "sample": s > 0, "velocity": det != 0}.get(ptype, True)


@pytest.mark.parametrize("sname", sorted(SCHEDULES))
@given(u=st.floats(0.0, 1.0), b=st.integers(1, 3), d=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_prediction_round_trips(sname, u, b, d, seed, fuzz_count):
    """from_x0_eps then to_x0_eps gives back (x0, eps), and convert(convert(p, A, B), B, A) = p, for every
    pair of prediction types at any time of any schedule (in float64, within the conditioning of the
    conversion: 1/alpha, 1/sigma)."""
    sch = schedule(sname)
    t = torch.tensor(sch.t_min + u * (sch.t_max - sch.t_min), dtype=F64)
    a, s = sch.alpha_sigma(t)
    da, ds = sch.d_alpha_sigma(t)
    assert all(math.isfinite(float(v)) for v in (a, s, da, ds)), "schedule values not finite"
    assume(all(float(v) == 0 or float(v) > 1e-8 for v in (a, s)))  # 1/sigma overflows at denormal sigma
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(b, d, generator=g, dtype=F64), torch.randn(b, d, generator=g, dtype=F64)
    x = a * x0 + s * eps
    det = float(a * ds - s * da)
    kinds = [k for k in PREDICTION_TYPES if _defined(k, float(a), float(s), det)]
    cond = 1 + (1 / float(a) if float(a) > 0 else 0) + (1 / float(s) if float(s) > 0 else 0)
    if det:
        cond += (abs(float(da)) + abs(float(ds)) + 1) / abs(det)
    tol = 1e-12 * min(cond, 1e100) ** 2 * (1 + float(x0.abs().max() + eps.abs().max()))
    for k in kinds:
        fuzz_count("parameterization", "invariant")
        pred = from_x0_eps(x0, eps, k, a, s, da, ds)
        x0b, epsb = to_x0_eps(pred, k, x, a, s, da, ds)
        if k not in ("epsilon", "score") or float(a) > 0:
            _close(x0b, x0, tol)
        if k != "sample" or float(s) > 0:
            _close(epsb, eps, tol)
        for k2 in kinds:
            back = convert(convert(pred, k, k2, x, a, s, da, ds), k2, k, x, a, s, da, ds)
            _close(back, pred, tol * (1 + float(pred.abs().max())))


@pytest.mark.parametrize("sname", sorted(SCHEDULES))
@given(
    ptype=st.sampled_from(PREDICTION_TYPES),
    spacing=st.sampled_from(SPACINGS),
    n=st.integers(1, 6),
    b=st.integers(1, 3),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_denoiser_fast_path_and_pair(sname, ptype, spacing, n, b, dtype, seed, fuzz_count):
    """For any network and prediction type: the samplers' precomputed path x0_eps_at equals x0_eps, and
    the pair is consistent, ``alpha x0 + sigma eps = x_t`` (where the type determines it)."""
    sch = schedule(sname)
    try:
        ts = get_timesteps(sch, n, spacing)
    except ValueError:
        assume(False)
    shape = (b, 3)
    den = Denoiser(linear_net(shape[1:], seed, dtype), sch, ptype)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    try:
        times = den.prepare_times(ts, x, evaluated=n)
    except ValueError as e:  # documented: eps/score undefined at alpha = 0
        assert str(e).startswith(("prediction_type", "t:")), e
        assume(False)
    tol = (1e-4 if dtype == torch.float32 else 1e-10) * (1 + float(sch.ve_sigma(ts[:n].clamp(min=sch.t_min)).max()))
    for k in range(n):
        fuzz_count("parameterization", "invariant")
        x0a, epsa = den.x0_eps_at(x, times, k)
        x0b, epsb = den.x0_eps(x, ts[k])
        _close(x0a, x0b, tol * (1 + float(x0b.abs().max())))
        _close(epsa, epsb, tol * (1 + float(epsb.abs().max())))
        a, s = (float(v) for v in sch.alpha_sigma(ts[k]))
        _close(a * x0a + s * epsa, x, tol * (1 + a * float(x0a.abs().max()) + s * float(epsa.abs().max())))


@pytest.mark.parametrize("name", MASK_SCHEDULES)
@given(t=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8))
def test_mask_schedules_invert(name, t, fuzz_count):
    fuzz_count("mask_schedules", "invariant")
    sch = MaskSchedule(name)
    tt = torch.tensor(sorted(t), dtype=F64)
    a = sch.alpha(tt)
    assert float(sch.alpha(torch.tensor(0.0, dtype=F64))) == 1 and abs(float(sch.alpha(torch.tensor(1.0)))) < 1e-7
    assert bool((a[1:] <= a[:-1]).all() & (a >= 0).all() & (a <= 1).all())
    _close(sch.t_of_alpha(a), tt, 1e-6)
    w = sch.elbo_weight(tt[tt > 1e-3])
    assert bool(torch.isfinite(w).all() & (w >= 0).all())


# -------------------------------------------------------------------------------------------------
# Gaussian samplers: batch invariance and seeds
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@given(data=st.data())
def test_sampler_batch_invariance_and_seed(name, data, fuzz_count):
    """With one generator per sample: the same seeds give the same batch bit for bit, and each sample
    equals the one computed alone."""
    den, x, ts, seeds = data.draw(sampler_problems(name))
    fn = SAMPLERS[name]
    try:
        out = run_valid(lambda: fn(den, x, ts, generator=generators_from_seeds(seeds)))
    except ValueError:  # documented refusals (alpha = 0 at the start: see test_sampler_valid_inputs)
        assume(False)
    fuzz_count("samplers", "invariant")
    assert torch.equal(out, fn(den, x, ts, generator=generators_from_seeds(seeds))), "same seed, different sample"
    i = data.draw(st.integers(0, x.shape[0] - 1))
    _rows_equal(out[i : i + 1], fn(den, x[i : i + 1], ts, generator=generators_from_seeds(seeds[i : i + 1])), name)


# -------------------------------------------------------------------------------------------------
# Operators and DDNM
# -------------------------------------------------------------------------------------------------


def dropped_singular_value(op: LinearOperator) -> float:
    """The largest singular value a truncated-SVD pseudo-inverse drops (0 for exact pseudo-inverses):
    ``A A^+ A = A`` holds up to it (``rcond * s_max`` at most)."""
    if not isinstance(op, MatrixOperator) or not hasattr(op, "singular_values"):
        return 0.0
    s = op.singular_values
    kept = int((torch.linalg.svdvals(op.M @ op.M_pinv) > 0.5).sum())
    return float(s[kept]) if kept < s.numel() else 0.0


@pytest.mark.parametrize("name", OPERATORS)
@given(data=st.data())
def test_pseudo_inverse_identities(name, data, fuzz_count):
    """``A A^+ A = A`` (exact, or up to the dropped singular values of a truncated SVD), ``A^+ A A^+ =
    A^+`` and the adjoint identity, on random images and measurements (float64)."""
    op, x, _ = data.draw(operator_problems(name))
    x = x.to(F64)
    if isinstance(op, Saturation):  # nonlinear: its inverse undoes the saturation on the range
        fuzz_count("operators", "invariant")
        y = op.A(x)
        lin = op.inner
        bound = dropped_singular_value(lin) * float(torch.linalg.vector_norm(x.flatten(1), dim=1).max())
        _close(op.A(op.invert(y)), y, 1e-6 + 4 * op.gain * bound)
        return
    assume(isinstance(op, LinearOperator))
    fuzz_count("operators", "invariant")
    ax = op.A(x)
    scale = 1 + (float(ax.abs().max()) if ax.numel() else 0.0) + float(x.abs().max())  # all pixels missing: m = 0
    bound = dropped_singular_value(op) * float(torch.linalg.vector_norm(x.flatten(1), dim=1).max())
    _close(op.A(op.A_pinv(ax)), ax, 1e-10 * scale + 1.01 * bound)
    y = torch.randn(ax.shape, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))), dtype=F64)
    p = op.A_pinv(y)
    _close(op.A_pinv(op.A(p)), p, 1e-9 * (1 + float(p.abs().max())))
    lhs = (ax * y).flatten(1).sum(1)
    rhs = (x * op.At(y)).flatten(1).sum(1)
    _close(lhs, rhs, 1e-10 * (1 + float(lhs.abs().max())) * math.prod(op.in_shape))


@given(data=st.data())
@pytest.mark.parametrize("name", [n for n in OPERATORS if n != "saturation"])
def test_ddnm_sample_is_measurement_consistent(name, data, fuzz_count):
    """DDNM's final sample satisfies ``A x = y`` for a noiseless ``y`` (any schedule, grid, eta, batch;
    float64), up to what a truncated pseudo-inverse drops."""
    shape = (data.draw(st.sampled_from([1, 3])), 4, 4)
    try:
        op = get_operator(name, shape)
    except ValueError:
        assume(False)
    assume(isinstance(op, LinearOperator))
    sname = data.draw(st.sampled_from(sorted(SCHEDULES)))
    den = image_denoiser(shape, schedule(sname), data.draw(st.integers(0, 3)))
    b = data.draw(st.integers(1, 2))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    x = torch.randn(b, *shape, generator=g, dtype=F64)
    y = op.A(x)
    eta = data.draw(st.sampled_from([0.0, 0.85, data.draw(st.floats(0.0, 1.0))]))
    n = data.draw(st.integers(1, 4))
    fuzz_count("posterior", "invariant")
    out = run_valid(
        lambda: posterior_sample("ddnm", den, op, y, n, eta=eta, dtype=F64, generator=generators_from_seeds(range(b)))
    )
    norm = float(torch.linalg.vector_norm(out.flatten(1), dim=1).max() + torch.linalg.vector_norm(x.flatten(1)).max())
    _close(
        op.A(out),
        y,
        1e-9 * (1 + (float(y.abs().max()) if y.numel() else 0.0) + float(out.abs().max()))
        + 1.01 * dropped_singular_value(op) * norm,
    )


@pytest.mark.parametrize("method", POSTERIOR_METHODS)
@given(data=st.data())
def test_posterior_batch_invariance_and_seed(method, data, fuzz_count):
    shape = (1, 4, 4)
    op = get_operator(data.draw(st.sampled_from(["sr", "box_inpaint", "cs", "gaussian_blur", "zero"])), shape)
    den = image_denoiser(shape, schedule(data.draw(st.sampled_from(sorted(SCHEDULES)))), 0)
    b = data.draw(st.integers(2, 3))
    dtype = data.draw(st.sampled_from(DTYPES))
    x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))), dtype=dtype)
    y = op.A(x)
    seeds = data.draw(st.lists(st.integers(0, 2**31 - 1), min_size=b, max_size=b, unique=True))
    kw = dict(num_steps=data.draw(st.integers(1, 4)), eta=data.draw(st.floats(0.0, 1.0)), dtype=dtype)
    kw["sigma_y"] = data.draw(st.sampled_from([0.0, 0.1]))
    fuzz_count("posterior", "invariant")

    def run(rows):
        gens = generators_from_seeds([seeds[r] for r in rows])
        return posterior_sample(method, den, op, y[rows], generator=gens, **kw)

    out = run_valid(lambda: run(list(range(b))))
    assert torch.equal(out, run(list(range(b)))), "same seed, different restoration"
    i = data.draw(st.integers(0, b - 1))
    _rows_equal(out[i : i + 1], run([i]), method)


# -------------------------------------------------------------------------------------------------
# Inversion
# -------------------------------------------------------------------------------------------------

#: The methods whose reconstruction is exact (up to float64 round-off) for any network and guidance.
EXACT_INVERSIONS = ("edict", "ddpm", "direct")
EXACT_OPTIONS = {
    "edict": lambda d: dict(p=d(st.floats(0.5, 1.0)), leapfrog=d(st.booleans()), strength=d(st.floats(0.2, 1.0))),
    "ddpm": lambda d: dict(eta=d(st.floats(0.05, 1.0))),
    "direct": lambda d: dict(inversion_guidance=d(st.floats(0.0, 4.0))),
}


@pytest.mark.parametrize("name", EXACT_INVERSIONS)
@given(data=st.data())
def test_exact_inversions_round_trip_in_float64(name, data, fuzz_count):
    """EDICT, edit-friendly DDPM and Direct Inversion reconstruct the latent to ~1e-10 in float64, on random
    networks, latents, grids, guidance scales and method options."""
    model = latent_model(data.draw(st.integers(0, 2**16)), F64, data.draw(st.sampled_from(["scaled_linear", "linear"])))
    b, h, w = data.draw(st.integers(1, 2)), data.draw(st.integers(2, 5)), data.draw(st.integers(2, 5))
    z = torch.randn(b, 4, h, w, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 2**16))), dtype=F64)
    z = z * data.draw(st.floats(0.1, 3.0))
    steps, guidance = data.draw(st.integers(1, 6)), data.draw(st.floats(0.0, 10.0))
    gens = generators_from_seeds(data.draw(st.lists(st.integers(0, 2**31 - 1), min_size=b, max_size=b)))
    fuzz_count("inversion", "invariant")
    with torch.no_grad():
        r = run_valid(
            lambda: invert(
                name, model, z, "a red circle", num_steps=steps, guidance=guidance, dtype=F64, generator=gens,
                is_latent=True, **EXACT_OPTIONS[name](data.draw),
            )
        )  # fmt: skip
        rec = reconstruct(r)
    _close(rec, z, 1e-10 * (1 + float(z.abs().max())))


@pytest.mark.parametrize("name", sorted(INVERSION_METHODS))
@given(data=st.data())
def test_inversion_batch_invariance_and_seed(name, data, fuzz_count):
    """Inverting a batch inverts each latent as if alone (with one generator per latent), and the same
    seeds give the same inversion."""
    model = latent_model(data.draw(st.integers(0, 2**16)), F64)  # float32 matmuls differ with the batch size
    b = 2 if name == "null_text" else data.draw(st.integers(2, 3))  # null-text optimises: the slow one
    z = torch.randn(b, 4, 3, 3, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 2**16))), dtype=F64)
    seeds = data.draw(st.lists(st.integers(0, 2**31 - 1), min_size=b, max_size=b, unique=True))
    kw = dict(num_steps=data.draw(st.integers(1, 1 if name == "null_text" else 4)), dtype=F64, is_latent=True)
    kw["guidance"] = data.draw(st.floats(0.0, 8.0))
    if name == "null_text":
        kw["inner_steps"] = 1
    fuzz_count("inversion", "invariant")

    def run(rows):
        with torch.no_grad():
            r = invert(
                name, model, z[rows], "a red circle", generator=generators_from_seeds([seeds[i] for i in rows]), **kw
            )
            return r.latents, reconstruct(r)

    lat, rec = run_valid(lambda: run(list(range(b))))
    lat2, rec2 = run(list(range(b)))
    assert torch.equal(lat, lat2) and torch.equal(rec, rec2), "same seed, different inversion"
    i = data.draw(st.integers(0, b - 1))
    lat1, rec1 = run([i])
    _rows_equal(lat.select(-4, i).unsqueeze(-4) if name != "edict" else lat[:, i : i + 1], lat1, name)
    _rows_equal(rec[i : i + 1], rec1, name)


# -------------------------------------------------------------------------------------------------
# Masked samplers
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DISCRETE))
@given(data=st.data())
def test_discrete_batch_invariance_and_seed(name, data, fuzz_count):
    """Token ids: the same seeds give the same samples, and each row equals the row sampled alone (one
    generator per row, any partially masked start)."""
    model, n, x_init, opts, seeds = data.draw(discrete_problems(name))
    fn = DISCRETE[name]
    fuzz_count("discrete", "invariant")

    def run(rows):
        init = None if x_init is None else x_init[rows]
        return fn(model, len(rows), generator=generators_from_seeds([seeds[r] for r in rows]), x_init=init, **opts)

    out = run_valid(lambda: run(list(range(n))))
    assert torch.equal(out, run(list(range(n)))), "same seed, different tokens"
    i = data.draw(st.integers(0, n - 1))
    _rows_equal(out[i : i + 1], run([i]), name)
