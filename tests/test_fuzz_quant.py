"""Property-based fuzzing of the quantization registry :data:`diffzoo.quant.METHODS` (issue 13): every method
at valid bit-widths gives a finite network whose quantized weights lie on their grid; unknown methods,
unsupported or non-integer bit-widths, a non-CalibSet bank and bad calibration names raise a one-line
ValueError/TypeError naming the argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("hypothesis")

from fuzz_support import expect_error, run_valid
from hypothesis import given
from hypothesis import strategies as st

from diffzoo.quant import BITS, METHODS, CalibSet, QuantLayer, quantize

NAMES = sorted(METHODS)


class _Net(nn.Module):
    """A tiny conv net with a time input and a concatenated skip (exercises split quantizers)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.t = nn.Linear(1, 4)
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.a(x) + self.t(t[:, None].float() / 1000)[:, :, None, None]
        return self.b(torch.cat([h, self.a(x)], 1))


def _bank(seed: int) -> CalibSet:
    g = torch.Generator().manual_seed(seed)
    calls = [((torch.randn(4, 2, 4, 4, generator=g), torch.full((4,), float(t))), {}) for t in (900, 500, 100)]
    return CalibSet.from_calls(calls)


@pytest.mark.parametrize("method", NAMES)
@given(
    wbits=st.sampled_from([2, 4, 8, 32]),
    abits=st.sampled_from([4, 8, 16]),
    iters=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_quant_method_valid_inputs(method, wbits, abits, iters, seed):
    net, bank = _Net(), _bank(seed)
    res = run_valid(lambda: quantize(net, bank, method, wbits, abits, n_calib=8, iters=iters, batch_size=4, groups=2))
    out = bank.call(res.model)
    assert out.shape == (12, 2, 4, 4) and bool(torch.isfinite(out).all())
    for m in res.model.modules():
        if isinstance(m, QuantLayer):
            for wq, w in zip(m.wq, m.weight_parts(), strict=True):
                if wq.enabled:
                    grid = (wq.codes(w) - wq.zp) * wq.delta
                    assert torch.allclose(wq(w), grid, atol=1e-6)


@given(name=st.text(min_size=0, max_size=8).filter(lambda s: s not in METHODS))
def test_quant_unknown_method(name):
    expect_error(lambda: quantize(_Net(), _bank(0), name, 8, 8), "method")


@pytest.mark.parametrize("method", NAMES)
@given(
    which=st.sampled_from(["wbits", "abits"]),
    bits=st.one_of(st.integers(-5, 40).filter(lambda b: b not in BITS), st.floats(1, 9), st.just("8")),
)
def test_quant_bad_bits(method, which, bits):
    kw = {"wbits": 8, "abits": 8, which: bits}
    expect_error(lambda: quantize(_Net(), _bank(0), method, kw["wbits"], kw["abits"]), which)


@pytest.mark.parametrize("method", NAMES)
@given(case=st.sampled_from(["bank", "calibration", "n_calib", "iters"]))
def test_quant_bad_inputs(method, case):
    bank, kw = _bank(0), {}
    if case == "bank":
        bank = bank.args[0]
    elif case == "calibration":
        kw["calibration"] = "random"
    elif case == "n_calib":
        kw["n_calib"] = 0
    else:
        kw["iters"] = -1
    expect_error(lambda: quantize(_Net(), bank, method, 8, 8, **kw), case)
