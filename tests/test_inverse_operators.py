"""Operators: A A+ A = A, A+ A a projector, adjoint identity, exact closed-form pseudo-inverses,
noise model, and errors for bad input."""

import math

import pytest
import torch

from diffzoo.inverse.operators import (
    OPERATORS,
    AveragePoolSR,
    CompressedSensing,
    LinearOperator,
    Saturation,
    gaussian_blur,
    get_operator,
)

SHAPES = {"colorize": (3, 8, 8)}
LINEAR = [n for n in OPERATORS if n != "saturation"]


def _op(name, **kw):
    return get_operator(name, SHAPES.get(name, (1, 8, 8)), **kw)


@pytest.mark.parametrize("name", LINEAR)
def test_pseudo_inverse_identities(name):
    op = _op(name)
    a = op.matrix()
    n = a.shape[1]
    ap = torch.stack(
        [op.pinv(e.reshape(1, *op.meas_shape()))[0].flatten() for e in torch.eye(a.shape[0], dtype=torch.float64)], 1
    )
    scale = max(1.0, float(torch.linalg.matrix_norm(a, 2)))
    tol = 1e-3 * scale if name.endswith("blur") else 1e-10 * scale  # blur drops s < 1e-3 s_max
    assert torch.allclose(a @ ap @ a, a, atol=tol), name
    p = ap @ a  # A+ A: symmetric and idempotent
    assert torch.allclose(p, p.T, atol=1e-8)
    assert torch.allclose(p @ p, p, atol=1e-8)
    assert p.shape == (n, n)


@pytest.mark.parametrize("name", ["gaussian_blur", "motion_blur", "cs_gaussian"])
def test_svd_pinv_matches_numpy_pinv(name):
    op = _op(name)
    rc = op.M_pinv
    ref = torch.linalg.pinv(op.M, rtol=1e-3 if name.endswith("blur") else 1e-6)
    assert torch.allclose(rc, ref, atol=1e-8)


@pytest.mark.parametrize("name", LINEAR)
def test_adjoint(name):
    op = _op(name)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *op.in_shape, generator=g, dtype=torch.float64)
    y = torch.randn(3, *op.meas_shape(), generator=g, dtype=torch.float64)
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.At(y)).sum()
    assert torch.allclose(lhs, rhs, atol=1e-9)


@pytest.mark.parametrize("name", ["box_inpaint", "random_inpaint", "sr", "colorize", "cs"])
def test_closed_form_pinv_is_exact(name):
    op = _op(name)
    a = op.matrix()
    ap = torch.stack(
        [op.pinv(e.reshape(1, *op.meas_shape()))[0].flatten() for e in torch.eye(a.shape[0], dtype=torch.float64)], 1
    )
    assert torch.allclose(ap, torch.linalg.pinv(a), atol=1e-10)


def test_project_satisfies_measurement_exactly():
    op = CompressedSensing((1, 8, 8), 0.1, seed=3)
    g = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(2, 4, 1, 8, 8, generator=g, dtype=torch.float64)
    y = op.A(x)
    xh = op.project(x0, y)
    assert (op.A(xh) - y).abs().max() < 1e-12
    # null-space part of x0 kept: (I - A+A) xh = (I - A+A) x0
    null = lambda v: v - op.pinv(op.A(v))
    assert torch.allclose(null(xh), null(x0), atol=1e-12)


def test_cs_sizes_and_orthogonality():
    for r in (0.01, 0.1, 0.25, 0.5, 1.0):
        op = CompressedSensing((1, 8, 8), r)
        assert op.M.shape[0] == math.ceil(r * 64)
        assert torch.allclose(op.M @ op.M.T, torch.eye(op.M.shape[0], dtype=torch.float64), atol=1e-12)


def test_noise_model_statistics():
    op = AveragePoolSR((1, 8, 8), 2)
    x = torch.zeros(4000, 1, 8, 8)
    y = op.measure(x, sigma_y=0.3, generator=torch.Generator().manual_seed(0))
    assert abs(float(y.std()) - 0.3) < 0.01 and abs(float(y.mean())) < 0.01
    assert torch.equal(op.measure(x[:2], 0.0), op.A(x[:2]))


def test_measure_per_sample_generators_batch_invariant():
    op = CompressedSensing((1, 8, 8), 0.5)
    x = torch.randn(3, 1, 8, 8)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    y3 = op.measure(x, 0.1, gens())
    y1 = op.measure(x[1:2], 0.1, gens()[1:2])
    assert torch.allclose(y3[1:2], y1, atol=1e-6)  # same noise; matmul rounding may differ by batch


def test_saturation_is_nonlinear_and_invertible():
    op = Saturation(gaussian_blur((1, 8, 8), 1.0, rcond=1e-12), gain=2.0)
    x = 0.3 * torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert not op.linear and not isinstance(op, LinearOperator)
    assert not torch.allclose(op.A(2 * x), 2 * op.A(x))
    assert torch.allclose(op.invert(op.A(x)), x, atol=1e-5)


def test_bad_input_errors():
    op = _op("cs")
    with pytest.raises(ValueError, match="x: expected shape"):
        op.A(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="ratio"):
        CompressedSensing((1, 8, 8), 0.0)
    with pytest.raises(ValueError, match="ratio"):
        CompressedSensing((1, 8, 8), 1.5)
    with pytest.raises(ValueError, match="sigma_y"):
        op.measure(torch.zeros(1, 1, 8, 8), sigma_y=-0.1)
    y = op.A(torch.zeros(1, 1, 8, 8))
    y[0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="y"):
        op.A_pinv(y)
    with pytest.raises(ValueError, match="y: expected shape"):
        op.A_pinv(torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="operator"):
        get_operator("nope", (1, 8, 8))
    with pytest.raises(ValueError, match="in_shape"):
        get_operator("colorize", (1, 8, 8))
    with pytest.raises(ValueError, match="factor"):
        AveragePoolSR((1, 8, 8), 3)
