"""Property-based fuzzing of the forensics registry :data:`diffzoo.forensics.protect.PROTECT_METHODS`
(issue 14): valid budgets, steps and seeds give a finite image inside the L-inf ball and the range;
invalid ones (budget outside (0, 1], unknown method, wrong rank/channels, NaN images, bad steps) raise a
one-line ValueError/TypeError naming the argument."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("hypothesis")

from fuzz_support import expect_error, latent_model, run_valid
from hypothesis import given
from hypothesis import strategies as st

from diffzoo.forensics.protect import PROTECT_METHODS, protect

METHODS = sorted(PROTECT_METHODS)


def _model():
    return latent_model(0)


def _images(seed: int, b: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 4, 8, 8, generator=g) * 1.8 - 0.9


@pytest.mark.parametrize("method", METHODS)
@given(
    eps=st.floats(1e-3, 1.0),
    step=st.floats(1e-3, 0.5),
    steps=st.integers(1, 2),
    seed=st.integers(0, 2**16),
    b=st.integers(1, 2),
)
def test_protect_valid_inputs(method, eps, step, steps, seed, b):
    model = _model()
    x = _images(seed, b)
    res = run_valid(
        lambda: protect(
            model, x, method, eps=eps, step_size=step, steps=steps, generator=torch.Generator().manual_seed(seed)
        )
    )
    assert res.image.shape == x.shape and bool(torch.isfinite(res.image).all())
    assert res.linf <= eps + 1e-5
    assert float(res.image.abs().max()) <= 1 + 1e-6
    assert len(res.losses) == steps and all(math.isfinite(v) for v in res.losses)


@pytest.mark.parametrize("method", METHODS)
@given(eps=st.one_of(st.floats(-2, 0), st.floats(1.0001, 50), st.just(float("nan"))))
def test_protect_bad_budget(method, eps):
    expect_error(lambda: protect(_model(), _images(0), method, eps=eps, steps=1), "eps")


@given(name=st.text(min_size=0, max_size=8).filter(lambda s: s not in PROTECT_METHODS))
def test_protect_unknown_method(name):
    expect_error(lambda: protect(_model(), _images(0), name, steps=1), "method")


@pytest.mark.parametrize("method", METHODS)
@given(
    case=st.sampled_from(["rank", "channels", "nan", "range", "steps", "step_size", "list"]),
)
def test_protect_bad_inputs(method, case):
    model, x = _model(), _images(0)
    kw = {"steps": 1}
    names = ("images",)
    if case == "rank":
        x = x[0]
    elif case == "channels":
        x = x[:, :3]
    elif case == "nan":
        x = x.clone()
        x[0, 0, 0, 0] = float("nan")
    elif case == "range":
        x = x * 3
    elif case == "steps":
        kw["steps"], names = 0, ("steps",)
    elif case == "step_size":
        kw["step_size"], names = 0.0, ("step_size",)
    else:
        x = x.tolist()
    expect_error(lambda: protect(model, x, method, **kw), *names)
