"""Sampler correctness: convergence order on an exact Gaussian-mixture denoiser, batch invariance,
float64, DDPM's distribution, NFE counts, callbacks and error messages."""

from __future__ import annotations

import math

import pytest
import torch

from diffzoo.core import Denoiser, get_schedule
from diffzoo.core.analytic import GaussianMixture
from diffzoo.core.random import generators_from_seeds
from diffzoo.sampling import (
    SAMPLERS,
    SPACINGS,
    ddim,
    ddpm,
    flow_euler,
    get_timesteps,
    heun,
    initial_noise,
    nfe,
    sample,
    steps_for_nfe,
)


@pytest.fixture(scope="module")
def gmm() -> GaussianMixture:
    return GaussianMixture(
        [[-1.0, -1.0], [1.0, 1.0], [1.5, -1.0], [-1.5, 1.0]], [0.3, 0.2, 0.25, 0.4], [0.3, 0.2, 0.3, 0.2]
    )


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_proj: int = 64, seed: int = 0) -> float:
    """Sliced W1 between equal-size point clouds (local helper, independent of diffzoo.metrics)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(a.shape[1], n_proj, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=0)
    pa, _ = (a.double() @ d).sort(0)
    pb, _ = (b.double() @ d).sort(0)
    return float((pa - pb).abs().mean())


# ---------------------------------------------------------------------------------------------- order
@pytest.fixture(scope="module")
def edm_convergence(gmm):
    """Errors vs a 1000-step Heun reference on EDM's schedule and Karras grid (Karras et al. 2022)."""
    sch = get_schedule("edm")
    den = gm_den = gmm.denoiser(sch)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    ref = heun(gm_den, x, get_timesteps(sch, 1000, "karras"))
    out = {}
    for name in ("ddim", "euler", "heun", "dpmpp_2m", "plms", "pndm"):
        errs = [
            float((SAMPLERS[name](den, x, get_timesteps(sch, n, "karras")) - ref).norm(dim=1).mean())
            for n in (8, 16, 32, 64)
        ]
        out[name] = errs
    return out


def _slope(errs: list[float]) -> float:
    """Least-squares slope of -log(err) against log(steps) over a doubling sequence."""
    xs = [math.log(2) * i for i in range(len(errs))]
    ys = [-math.log(e) for e in errs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)


@pytest.mark.parametrize(
    "name,lo,hi",
    [
        ("ddim", 0.85, 1.3),
        ("euler", 0.85, 1.3),
        ("heun", 1.8, 3.0),
        ("dpmpp_2m", 1.8, 3.0),
        ("plms", 2.0, 4.5),
        ("pndm", 2.0, 4.5),
    ],
)
def test_convergence_order(edm_convergence, name, lo, hi):
    assert lo <= _slope(edm_convergence[name]) <= hi, edm_convergence[name]


def test_higher_order_methods_beat_ddim_at_equal_steps(edm_convergence):
    for name in ("heun", "dpmpp_2m", "plms", "pndm"):
        assert all(e < d for e, d in zip(edm_convergence[name][1:], edm_convergence["ddim"][1:])), name


def test_euler_is_ddim(gmm):
    """Euler in the VE frame and the DDIM transfer are the same map (Karras et al. 2022, Sec. 4)."""
    sch = get_schedule("linear")
    den = gmm.denoiser(sch)
    x = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ts = get_timesteps(sch, 12, "karras")
    assert torch.allclose(SAMPLERS["euler"](den, x, ts), ddim(den, x, ts), atol=1e-12, rtol=0)


def test_flow_euler_equals_ddim_on_rectified_flow(gmm):
    sch = get_schedule("rectified_flow")
    den = gmm.denoiser(sch)
    x = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ts = get_timesteps(sch, 7, "uniform")
    assert torch.allclose(flow_euler(den, x, ts), ddim(den, x, ts), atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------- randomness / dtype
def test_ddpm_is_ddim_eta_one(gmm):
    sch = get_schedule("cosine")
    den = gmm.denoiser(sch)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))
    ts = get_timesteps(sch, 10, "leading")
    a = ddpm(den, x, ts, generator=torch.Generator().manual_seed(4))
    b = ddim(den, x, ts, eta=1.0, generator=torch.Generator().manual_seed(4))
    c = ddim(den, x, ts, eta=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("name", ["ddpm", "dpmpp_2m", "pndm"])
def test_batch_invariance_with_per_sample_generators(gmm, name):
    sch = get_schedule("linear")
    den = gmm.denoiser(sch)
    ts = get_timesteps(sch, 8, "uniform")
    seeds = [11, 12, 13, 14, 15]
    full = sample(
        name,
        den,
        initial_noise(den, (5, 2), ts, generators_from_seeds(seeds)),
        ts,
        generator=generators_from_seeds(seeds),
    )
    part = sample(
        name,
        den,
        initial_noise(den, (2, 2), ts, generators_from_seeds(seeds[3:])),
        ts,
        generator=generators_from_seeds(seeds[3:]),
    )
    assert torch.allclose(full[3:], part, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"flow_euler"}))
def test_float64_runs_and_agrees_with_float32(gmm, name):
    sch = get_schedule("linear")
    den = gmm.denoiser(sch)
    ts = get_timesteps(sch, 10, "trailing")
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    out64 = sample(name, den, x, ts, generator=torch.Generator().manual_seed(7))
    out32 = sample(name, den, x.float(), ts, generator=torch.Generator().manual_seed(7))
    assert out64.dtype == torch.float64 and out32.dtype == torch.float32
    if name != "ddpm":  # ddpm draws float32 vs float64 noise: different streams
        assert torch.allclose(out64, out32.double(), atol=1e-4)


def test_ddpm_many_steps_matches_the_mixture(gmm):
    sch = get_schedule("linear")
    den = gmm.denoiser(sch)
    ts = get_timesteps(sch, 1000, "leading")
    n = 2000
    x = initial_noise(den, (n, 2), ts, torch.Generator().manual_seed(8), torch.float64)
    out = ddpm(den, x, ts, generator=torch.Generator().manual_seed(9))
    truth = gmm.sample(n, torch.Generator().manual_seed(10))
    baseline = sliced_wasserstein(gmm.sample(n, torch.Generator().manual_seed(11)), truth)
    bad = sliced_wasserstein(truth * 1.15, truth)  # a 15% scale error must be clearly worse
    got = sliced_wasserstein(out, truth)
    assert got < 2.0 * baseline + 0.01 and got < bad
    assert abs(float(gmm.log_prob(out).mean()) - float(gmm.log_prob(truth).mean())) < 0.1


# ---------------------------------------------------------------------------- bookkeeping and errors
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nfe_and_callback(gmm, name):
    sch = get_schedule("rectified_flow" if name == "flow_euler" else "linear")
    den = gmm.denoiser(sch)
    ts = get_timesteps(sch, 6, "uniform")
    seen = []
    sample(name, den, torch.randn(4, 2), ts, callback=seen.append, generator=torch.Generator().manual_seed(0))
    assert den.nfe == nfe(name, 6)
    assert [d["i"] for d in seen] == list(range(6))
    assert set(seen[0]) == {"i", "t", "s", "x", "x0", "eps"} and seen[-1]["s"] == sch.t_end
    assert steps_for_nfe(name, nfe(name, 6)) == 6


def test_timesteps_shape_and_end():
    for sch in (get_schedule("linear"), get_schedule("edm"), get_schedule("vp_cosine"), get_schedule("rectified_flow")):
        for sp in SPACINGS:
            kw = {"sigma_min": 1e-2, "sigma_max": 50.0} if sp == "karras" and sch.name == "rectified_flow" else {}
            ts = get_timesteps(sch, 9, sp, **kw)
            assert ts.dtype == torch.float64 and ts.shape == (10,) and ts[-1] == sch.t_end
            assert bool((ts[1:] < ts[:-1]).all()) and float(ts[0]) <= sch.t_max


def test_karras_grid_matches_formula():
    sch = get_schedule("edm")
    ts = get_timesteps(sch, 5, "karras")
    i = torch.arange(5, dtype=torch.float64) / 4
    want = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert torch.allclose(ts[:-1], want, rtol=1e-12)
    lin = get_schedule("linear")
    kt = get_timesteps(lin, 5, "karras")
    lo, hi = lin.sigma_min_max()
    assert torch.allclose(lin.ve_sigma(kt[:-1]), (hi ** (1 / 7) + i * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7, rtol=1e-6)


def test_errors_name_the_bad_argument(gmm):
    sch = get_schedule("linear")
    den = gmm.denoiser(sch)
    x = torch.randn(3, 2)
    ts = get_timesteps(sch, 5)
    with pytest.raises(ValueError, match="sampler"):
        sample("euler_a", den, x, ts)
    with pytest.raises(ValueError, match="spacing"):
        get_timesteps(sch, 5, "cosine")
    with pytest.raises(ValueError, match="num_steps"):
        get_timesteps(sch, 0)
    with pytest.raises(ValueError, match="sigma_min"):
        get_timesteps(get_schedule("rectified_flow"), 5, "karras")
    with pytest.raises(ValueError, match="num_steps"):
        get_timesteps(sch, 1000, "uniform")
    with pytest.raises(ValueError, match="decreasing"):
        ddim(den, x, ts.flip(0))
    with pytest.raises(ValueError, match="t_max"):
        ddim(den, x, torch.tensor([1500.0, 10.0, -1.0]))
    with pytest.raises(ValueError, match="timesteps"):
        ddim(den, x, torch.tensor([10.0]))
    with pytest.raises(ValueError, match="eta"):
        ddim(den, x, ts, eta=1.5)
    with pytest.raises(ValueError, match="generator"):
        ddpm(den, x, ts, generator=generators_from_seeds([1, 2]))
    with pytest.raises(ValueError, match="F-PNDM"):
        sample("pndm", den, x, get_timesteps(sch, 3))
    with pytest.raises(TypeError, match="x"):
        ddim(den, x.long(), ts)
    with pytest.raises(TypeError, match="denoiser"):
        ddim(lambda x, t, c: x, x, ts)


def test_samplers_keep_no_state(gmm):
    """Running twice gives the same result (no hidden step index), and a velocity-type denoiser works."""
    sch = get_schedule("rectified_flow")
    den = gmm.denoiser(sch)
    vel = Denoiser(lambda x, t, c: -den.x0(x, t) + den.eps(x, t), sch, "velocity", validate=False)
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ts = get_timesteps(sch, 5)
    a, b = flow_euler(vel, x, ts), flow_euler(vel, x, ts)
    assert torch.equal(a, b) and torch.allclose(a, flow_euler(den, x, ts), atol=1e-10)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_no_host_sync_inside_the_loop(gmm, name, monkeypatch):
    """Between the first and the last network call, samplers never read a tensor back to Python
    (``.item()``, ``bool()``, ``float()``, ``.tolist()``): schedules are precomputed before the loop."""
    sch = get_schedule("rectified_flow" if name == "flow_euler" else "vp_cosine")
    exact = gmm.denoiser(sch)
    state = {"in_loop": False, "syncs": 0}

    def net(x, t, cond):
        state["in_loop"] = False
        out = exact.net(x, t, cond)
        state["in_loop"] = True
        return out

    den = Denoiser(net, sch, "sample", validate=False)
    for attr in ("item", "__bool__", "__float__", "tolist"):
        orig = getattr(torch.Tensor, attr)

        def spy(self, *a, _orig=orig, **k):
            if state["in_loop"]:
                state["syncs"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, attr, spy)
    ts = get_timesteps(sch, 6, "uniform")
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    sample(name, den, x, ts, generator=torch.Generator().manual_seed(1))
    state["in_loop"] = False
    assert den.nfe == nfe(name, 6) and state["syncs"] == 0


# ------------------------------------------------------------------------ precomputed fast path
@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction", "score", "velocity"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_x0_eps_at_equals_x0_eps(kind, dtype):
    """The loop's precomputed path returns exactly what Denoiser.x0_eps returns, x0 correction included."""
    from diffzoo.core.parameterization import DynamicThreshold

    sch = get_schedule("rectified_flow" if kind == "velocity" else "cosine")
    ts = get_timesteps(sch, 7, "uniform")[:-1]
    x = torch.randn(5, 2, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    for corr in (None, DynamicThreshold(0.9, 1.5)):
        den = Denoiser(lambda x, t, c: torch.sin(x) + t.reshape(-1, 1, 1).to(x.dtype), sch, kind, x0_correction=corr)
        times = den.prepare_times(ts, x)
        for k in range(ts.numel()):
            x0, eps = den.x0_eps(x, ts[k])
            x0b, epsb = den.x0_eps_at(x, times, k)
            assert torch.equal(x0, x0b) and torch.equal(eps, epsb)
            assert torch.equal(den.x0_at(x, times, k), x0) and torch.equal(den.eps_at(x, times, k), eps)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_an_overriding_x0_eps_is_honoured_by_every_sampler(gmm, name):
    """A subclass that overrides x0_eps (as inverse-problem wrappers do) is called for every evaluation."""
    sch = get_schedule("rectified_flow" if name == "flow_euler" else "linear")
    exact = gmm.denoiser(sch)
    calls = []

    class Shifted(Denoiser):
        def x0_eps(self, x, t, cond=None):
            calls.append(float(t))
            x0, eps = super().x0_eps(x, t, cond)
            return x0 + 0.25, eps + 0.5  # samplers move along x0, eps or both: change both

    den = Shifted(exact.net, sch, "sample", validate=False)
    ts = get_timesteps(sch, 6, "uniform")
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = sample(name, den, x, ts, generator=torch.Generator().manual_seed(1))
    base = sample(name, exact, x, ts, generator=torch.Generator().manual_seed(1))
    assert len(calls) == nfe(name, 6) and not torch.allclose(out, base)


def test_validation_checks_the_result_once_and_never_syncs_in_the_loop(gmm, monkeypatch):
    """Default settings (validate=True): no host sync between the first and the last network call; a
    non-finite network output is still reported (FloatingPointError) when the sampler returns."""
    sch = get_schedule("vp_cosine")
    exact = gmm.denoiser(sch)
    state = {"syncs": 0, "at_calls": []}

    def net(x, t, cond):
        state["at_calls"].append(state["syncs"])
        return exact.net(x, t, cond)

    for attr in ("item", "__bool__", "__float__", "tolist"):
        orig = getattr(torch.Tensor, attr)

        def spy(self, *a, _orig=orig, **k):
            state["syncs"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, attr, spy)
    den = Denoiser(net, sch, "sample")
    assert den.validate
    ts = get_timesteps(sch, 6, "uniform")
    for name in ("ddim", "dpmpp_2m", "euler", "heun", "plms", "pndm"):
        state["at_calls"].clear()
        sample(name, den, torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), ts)
        assert state["at_calls"][0] == state["at_calls"][-1], name
    monkeypatch.undo()
    bad = Denoiser(lambda x, t, c: x * float("nan"), sch, "sample")
    with pytest.raises(FloatingPointError, match="NaN"):
        ddim(bad, torch.randn(4, 2), ts)
    assert torch.isnan(ddim(Denoiser(bad.net, sch, "sample", validate=False), torch.randn(4, 2), ts)).all()


def test_nfe_of_heun_depends_on_the_end_of_the_grid(gmm):
    sch = get_schedule("edm")
    den = gmm.denoiser(sch)
    x = torch.randn(4, 2, dtype=torch.float64)
    for ts, end0 in ((get_timesteps(sch, 5, "karras"), True), (get_timesteps(sch, 5, "karras")[:-1], False)):
        den.nfe = 0
        heun(den, x, ts)
        assert den.nfe == nfe("heun", ts.numel() - 1, ends_at_zero=end0)
    assert nfe("heun", 5) == 9 and nfe("heun", 5, ends_at_zero=False) == 10 and nfe("ddim", 5, False) == 5
    assert steps_for_nfe("heun", 9) == 5 and steps_for_nfe("heun", 9, ends_at_zero=False) == 4
