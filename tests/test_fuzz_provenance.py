"""Property-based fuzzing of the provenance registries (issue 15): :data:`diffzoo.provenance.attacks.ATTACKS`
(valid strengths give a finite image of the same shape in [-1, 1]; out-of-range or NaN strengths, unknown
names, wrong ranks/channels and NaN images raise a one-line error naming the argument) and
:data:`diffzoo.provenance.watermarks.WATERMARKS` (messages within capacity embed and decode to the right
shape; longer ones, wrong sizes and non-binary messages raise naming ``bits``/``image``)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("hypothesis")

from fuzz_support import expect_error, run_valid
from hypothesis import given, settings
from hypothesis import strategies as st

from diffzoo.provenance.attacks import ATTACKS, classical
from diffzoo.provenance.bits import random_bits
from diffzoo.provenance.watermarks import WATERMARKS, library_available

VALID = {
    "jpeg": (1, 100),
    "jpeg_diff": (1, 100),
    "blur": (0, 3),
    "noise": (0, 0.5),
    "resize": (0.1, 1),
    "crop": (0.2, 1),
    "rotation": (-180, 180),
    "brightness": (0, 4),
}
INVALID = {
    "jpeg": st.one_of(st.floats(-50, 0.99), st.floats(100.01, 1e4)),
    "jpeg_diff": st.one_of(st.floats(-50, 0.99), st.floats(100.01, 1e4)),
    "blur": st.one_of(st.floats(-10, -1e-3), st.floats(20.01, 1e3)),
    "noise": st.one_of(st.floats(-10, -1e-3), st.floats(2.01, 1e3)),
    "resize": st.one_of(st.floats(-1, 0.04), st.floats(1.01, 10)),
    "crop": st.one_of(st.floats(-1, 0.09), st.floats(1.01, 10)),
    "rotation": st.one_of(st.floats(-1e4, -180.01), st.floats(180.01, 1e4)),
    "brightness": st.one_of(st.floats(-10, -1e-3), st.floats(4.01, 100)),
}


def _img(seed: int, b: int = 1, size: int = 16) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_fuzz_tables_cover_the_registry():
    assert set(VALID) == set(ATTACKS) == set(INVALID)


@pytest.mark.parametrize("name", sorted(ATTACKS))
@settings(max_examples=15, deadline=None)
@given(u=st.floats(0, 1), seed=st.integers(0, 2**16), b=st.integers(1, 2), size=st.sampled_from([8, 16, 24]))
def test_attack_valid_inputs(name, u, seed, b, size):
    lo, hi = VALID[name]
    x = _img(seed, b, size)
    y = run_valid(lambda: classical(name, x, lo + u * (hi - lo), torch.Generator().manual_seed(seed)))
    assert y.shape == x.shape and bool(torch.isfinite(y).all()) and float(y.abs().max()) <= 1 + 1e-6


@pytest.mark.parametrize("name", sorted(ATTACKS))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_attack_bad_strength(name, data):
    s = data.draw(st.one_of(INVALID[name], st.just(float("nan"))))
    expect_error(lambda: classical(name, _img(0), s), "strength")


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_bad_images(name):
    lo, hi = VALID[name]
    s = (lo + hi) / 2
    expect_error(lambda: classical(name, torch.zeros(3, 16, 16), s), "image")
    expect_error(lambda: classical(name, torch.zeros(1, 4, 16, 16), s), "image")
    expect_error(lambda: classical(name, torch.full((1, 3, 16, 16), float("nan")), s), "image")
    expect_error(lambda: classical(name, _img(0), "strong"), "strength")


@settings(max_examples=10, deadline=None)
@given(name=st.text(min_size=1, max_size=8).filter(lambda s: s not in ATTACKS))
def test_attack_unknown_method(name):
    expect_error(lambda: classical(name, _img(0), 1.0), "method")


LIBS = [n for n in sorted(WATERMARKS) if library_available(n)]


@pytest.mark.skipif(not LIBS, reason="no watermark library installed (extra 'provenance')")
@pytest.mark.parametrize("name", LIBS)
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16), size=st.sampled_from([32, 48, 64]), data=st.data())
def test_watermark_valid_and_capacity(name, seed, size, data):
    wm = WATERMARKS[name]
    cap = wm.capacity(size, size)
    n = wm.fixed_bits or data.draw(st.integers(1, max(1, min(cap, 48))))
    x = _img(seed, 1, size)
    bits = random_bits(1, n, torch.Generator().manual_seed(seed))
    xw = run_valid(lambda: wm.embed(x, bits))
    assert xw.shape == x.shape and float(xw.abs().max()) <= 1
    assert wm.decode(xw, n).shape == (1, n)
    too_long = (wm.fixed_bits or cap) + data.draw(st.integers(1, 40))
    expect_error(lambda: wm.embed(x, random_bits(1, too_long)), "bits")
    expect_error(lambda: wm.embed(x, bits + 2), "bits")
    expect_error(lambda: wm.embed(_img(seed, 1, 4), random_bits(1, 1)), "image", "bits")
    expect_error(lambda: wm.decode(x, 0), "bits")
