"""Measurement operators ``y = A(x) + sigma_y n`` with adjoint ``A^T`` and pseudo-inverse ``A^+``.

Images are ``(B, C, H, W)``; every operator is built for one image shape ``in_shape = (C, H, W)`` and
raises a ``ValueError`` naming the argument when given another. The pseudo-inverse is exact in closed
form where one exists (inpainting, average-pool super-resolution, colourisation, orthogonalised
compressed sensing: ``A A^T = c I``) and computed once from the SVD otherwise (blur, Gaussian
compressed sensing), ``A^+ = V S^{-1} U^T`` with singular values below ``rcond * s_max`` dropped
(DDNM, Wang et al. 2023, Sec. 3.3 and App. "SVD-based operators"). For every linear operator
``A A^+ A = A`` (the range-null-space identity DDNM rests on), ``A^+ A`` is an orthogonal projector,
and ``<A x, y> = <x, A^T y>``; the tests check all three.

The range-null-space correction ``x - lam A^+(A x - y)`` (DDNM Eq. 8/17) lives here once, as
:meth:`LinearOperator.project`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diffzoo.core.errors import check_batch, check_choice, check_finite, check_int, check_range, check_tensor
from diffzoo.core.random import randn

Tensor = torch.Tensor
Shape = tuple[int, int, int]


def _shape3(in_shape: Sequence[int]) -> Shape:
    try:  # integers only: int(8.5) would silently build an operator for another shape
        s = tuple(operator.index(v) for v in in_shape)
    except TypeError:
        raise TypeError(f"in_shape: expected (C, H, W) with positive integer sizes, got {in_shape!r}") from None
    if len(s) != 3 or min(s) < 1:
        raise ValueError(f"in_shape: expected (C, H, W) with positive sizes, got {tuple(in_shape)}")
    return s  # type: ignore[return-value]


class Operator:
    """Base class: a (possibly nonlinear) forward map with a noise model."""

    linear = True

    def __init__(self, in_shape: Sequence[int]):
        self.in_shape: Shape = _shape3(in_shape)

    # --- interface --------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def meas_shape(self) -> tuple[int, ...]:
        """Shape of one measurement (without the batch dimension)."""
        return tuple(self.forward(torch.zeros(1, *self.in_shape, dtype=torch.float64)).shape[1:])

    # --- checks -----------------------------------------------------------------------------
    def check_image(self, x: Tensor, arg: str = "x") -> Tensor:
        check_tensor(x, arg, ndim=4, floating=True, shape=(None, *self.in_shape))
        return check_batch(x, arg)

    def check_measurement(self, y: Tensor, arg: str = "y") -> Tensor:
        check_tensor(y, arg, floating=True, shape=(None, *self.meas_shape()))
        check_batch(y, arg)
        check_finite(y, arg)
        return y

    # --- measurement ------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        """The forward map ``A(x)`` (``x`` checked: shape, non-empty batch, finite values)."""
        return self.forward(check_finite(self.check_image(x), "x"))

    __call__ = A

    def measure(self, x: Tensor, sigma_y: float = 0.0, generator: torch.Generator | list | None = None) -> Tensor:
        """Noisy measurement ``y = A(x) + sigma_y n``, ``n ~ N(0, I)`` (per-sample generators allowed)."""
        check_range(sigma_y, "sigma_y", lo=0.0)
        y = self.A(x)
        if sigma_y > 0:
            y = y + sigma_y * randn(y.shape, generator, y.dtype, y.device)
        return y


class LinearOperator(Operator):
    """A linear operator with adjoint and pseudo-inverse."""

    def adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def pinv(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def At(self, y: Tensor) -> Tensor:
        """The adjoint ``A^T y``."""
        return self.adjoint(self.check_measurement(y))

    def A_pinv(self, y: Tensor) -> Tensor:
        """The Moore-Penrose pseudo-inverse ``A^+ y``."""
        return self.pinv(self.check_measurement(y))

    def project(self, x0: Tensor, y: Tensor, lam: float | Tensor = 1.0) -> Tensor:
        """Range-null-space correction (DDNM Eq. 8; Eq. 17 with ``lam``): ``x0 - lam A^+(A x0 - y)``.

        With ``lam = 1`` this is ``A^+ y + (I - A^+ A) x0``: its range part is fixed by ``y`` and its
        null-space part comes from ``x0``, so ``A(result) = y`` whenever ``y`` is in the range of ``A``.
        """
        self.check_image(x0, "x0")
        if self.check_measurement(y).shape[0] not in (1, x0.shape[0]):
            raise ValueError(f"y: batch {y.shape[0]} does not match x0's batch {x0.shape[0]} (give 1 or {x0.shape[0]})")
        r = self.forward(x0) - y
        corr = self.pinv(r)
        if torch.is_tensor(lam) and lam.ndim == 1:
            lam = lam.reshape(-1, 1, 1, 1)
        return x0 - lam * corr

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense matrix of ``A`` acting on flattened images (for tests and SVD)."""
        n = math.prod(self.in_shape)
        eye = torch.eye(n, dtype=dtype).reshape(n, *self.in_shape)
        return self.forward(eye).reshape(n, -1).T


# -------------------------------------------------------------------------------------------------
# Dense (per-channel) matrix operators with an SVD pseudo-inverse
# -------------------------------------------------------------------------------------------------


class MatrixOperator(LinearOperator):
    """``y[:, c] = M x[:, c].flatten()`` for each channel ``c``; ``M`` is ``m x (H W)``.

    ``A^+`` comes from the SVD of ``M`` in float64 (singular values below ``rcond * s_max`` dropped),
    unless ``orthonormal_rows=True`` declares ``M M^T = I`` so that ``A^+ = A^T`` exactly.
    """

    def __init__(self, matrix: Tensor, in_shape: Sequence[int], rcond: float = 1e-6, orthonormal_rows: bool = False):
        super().__init__(in_shape)
        c, h, w = self.in_shape
        check_tensor(matrix, "matrix", ndim=2, floating=True, shape=(None, h * w))
        check_range(rcond, "rcond", lo=0.0, hi=1.0)
        self.M = matrix.to(torch.float64)
        if orthonormal_rows:
            self.M_pinv = self.M.T.clone()
        else:
            u, s, vh = torch.linalg.svd(self.M, full_matrices=False)
            keep = s > rcond * (s.max() if s.numel() else 0.0)
            inv = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
            self.M_pinv = (vh.T * inv) @ u.T
            self.singular_values = s

    def _apply(self, mat: Tensor, v: Tensor) -> Tensor:
        return v @ mat.to(v.dtype).T.to(v.device)

    def forward(self, x: Tensor) -> Tensor:
        return self._apply(self.M, x.flatten(2))

    def meas_shape(self) -> tuple[int, ...]:
        return (self.in_shape[0], self.M.shape[0])

    def adjoint(self, y: Tensor) -> Tensor:
        return self._apply(self.M.T, y).reshape(y.shape[0], *self.in_shape)

    def pinv(self, y: Tensor) -> Tensor:
        return self._apply(self.M_pinv, y).reshape(y.shape[0], *self.in_shape)


def zero_operator(in_shape: Sequence[int]) -> MatrixOperator:
    """``A = 0`` (one zero measurement per channel): every posterior sampler must reduce to the prior."""
    _, h, w = _shape3(in_shape)
    return MatrixOperator(torch.zeros(1, h * w, dtype=torch.float64), in_shape)


def _conv_matrix(kernel: Tensor, h: int, w: int) -> Tensor:
    """The ``(HW x HW)`` matrix of a zero-padded 'same' 2-D convolution with ``kernel``."""
    kh, kw = kernel.shape
    eye = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    k = kernel.to(torch.float64).flip(0, 1)[None, None]  # true convolution (not correlation)
    pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    out = F.conv2d(F.pad(eye, pad), k)
    return out.reshape(h * w, h * w).T


class Blur(MatrixOperator):
    """Convolution blur ``y = k * x`` (zero boundary, same size) with an SVD pseudo-inverse."""

    def __init__(self, in_shape: Sequence[int], kernel: Tensor, rcond: float = 1e-3):
        check_tensor(kernel, "kernel", ndim=2)
        if bool((kernel < 0).any()) or float(kernel.sum()) <= 0:
            raise ValueError("kernel: expected non-negative entries with a positive sum")
        _, h, w = _shape3(in_shape)
        self.kernel = (kernel / kernel.sum()).to(torch.float64)
        super().__init__(_conv_matrix(self.kernel, h, w), in_shape, rcond=rcond)

    def meas_shape(self) -> tuple[int, ...]:
        return self.in_shape

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).reshape(x.shape[0], *self.in_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        return super().adjoint(y.flatten(2))

    def pinv(self, y: Tensor) -> Tensor:
        return super().pinv(y.flatten(2))


def gaussian_blur(in_shape: Sequence[int], sigma: float = 1.0, size: int = 5, rcond: float = 1e-3) -> Blur:
    """Isotropic Gaussian blur of std ``sigma`` pixels on a ``size x size`` support."""
    check_range(sigma, "sigma", 0.0, math.inf, lo_open=True, hi_open=True)
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    return Blur(in_shape, g[:, None] * g[None, :], rcond)


def motion_blur(in_shape: Sequence[int], length: int = 5, angle: float = 0.0, rcond: float = 1e-3) -> Blur:
    """Linear motion blur: a line of ``length`` pixels at ``angle`` degrees (bilinear rasterised)."""
    if check_int(length, "length") < 1:
        raise ValueError(f"length: expected a positive integer, got {length}")
    check_range(angle, "angle", -math.inf, math.inf, lo_open=True, hi_open=True)
    size = length if length % 2 == 1 else length + 1
    k = torch.zeros(size, size, dtype=torch.float64)
    c = (size - 1) / 2
    th = math.radians(angle)
    for s in torch.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length).tolist():
        px, py = c + s * math.cos(th), c - s * math.sin(th)
        x0, y0 = math.floor(px), math.floor(py)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < size and 0 <= yi < size and wgt > 0:
                k[yi, xi] += wgt
    return Blur(in_shape, k, rcond)


class CompressedSensing(MatrixOperator):
    """Block compressed sensing ``y = Phi x`` with ``q = ceil(ratio * H W)`` measurements per channel.

    ``orthogonal=True`` (IDM, Sec. 4.1): ``Phi`` = the first ``q`` rows of ``U V^T`` from the SVD of a
    Gaussian matrix, so ``Phi Phi^T = I`` and ``A^+ = A^T`` exactly. ``orthogonal=False``: i.i.d.
    ``N(0, 1/q)`` entries, pseudo-inverse from the SVD. The whole ``H x W`` image is one block
    (digits are 8 x 8 = 64 pixels; IDM uses 32 x 32 blocks of permuted pixels).
    """

    def __init__(self, in_shape: Sequence[int], ratio: float, orthogonal: bool = True, seed: int = 0):
        check_range(ratio, "ratio", lo=0.0, hi=1.0, lo_open=True)
        _, h, w = _shape3(in_shape)
        n = h * w
        q = max(1, math.ceil(ratio * n - 1e-9))
        g = torch.Generator().manual_seed(check_int(seed, "seed"))
        gauss = torch.randn(n, n, generator=g, dtype=torch.float64)
        self.ratio, self.orthogonal, self.seed = float(ratio), orthogonal, seed
        if orthogonal:
            u, _, vh = torch.linalg.svd(gauss)
            phi = (u @ vh)[:q]
        else:
            phi = gauss[:q] / math.sqrt(q)
        super().__init__(phi, in_shape, orthonormal_rows=orthogonal)


# -------------------------------------------------------------------------------------------------
# Operators with closed-form pseudo-inverses
# -------------------------------------------------------------------------------------------------


class Inpainting(LinearOperator):
    """Keep the pixels where ``mask`` (``(H, W)`` or ``(C, H, W)``, bool) is True: ``y = x[mask]``.

    ``A A^T = I``, so ``A^+ = A^T`` (zero-fill) exactly.
    """

    def __init__(self, in_shape: Sequence[int], mask: Tensor):
        super().__init__(in_shape)
        check_tensor(mask, "mask", ndim=(2, 3))
        m = mask.to(torch.bool)
        if m.ndim == 2:
            m = m.expand(self.in_shape[0], *m.shape)
        if tuple(m.shape) != self.in_shape:
            raise ValueError(f"mask: expected shape {self.in_shape[1:]} or {self.in_shape}, got {tuple(mask.shape)}")
        self.mask = m.contiguous()
        self.index = self.mask.flatten().nonzero().flatten()

    def meas_shape(self) -> tuple[int, ...]:
        return (int(self.index.numel()),)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, self.index.to(x.device)]

    def adjoint(self, y: Tensor) -> Tensor:
        out = y.new_zeros(y.shape[0], math.prod(self.in_shape))
        out[:, self.index.to(y.device)] = y
        return out.reshape(y.shape[0], *self.in_shape)

    pinv = adjoint


def box_inpainting(in_shape: Sequence[int], box: Sequence[int] | None = None) -> Inpainting:
    """Missing box ``(top, left, height, width)``; default: the central half-size square."""
    c, h, w = _shape3(in_shape)
    if box is None and min(h, w) < 2:
        raise ValueError(f"in_shape: the default box (the central half) needs H, W >= 2, got {h}x{w}; pass box=")
    top, left, bh, bw = box if box is not None else (h // 4, w // 4, h // 2, w // 2)
    if not (0 <= top < h and 0 <= left < w and bh > 0 and bw > 0):
        raise ValueError(f"box: expected (top, left, height, width) inside {h}x{w}, got {tuple(box or ())}")
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[top : top + bh, left : left + bw] = False
    return Inpainting(in_shape, mask)


def random_inpainting(in_shape: Sequence[int], missing: float = 0.5, seed: int = 0) -> Inpainting:
    """Each pixel (all channels together) is missing with probability ``missing`` (fixed seed)."""
    check_range(missing, "missing", lo=0.0, hi=1.0, hi_open=True)
    _, h, w = _shape3(in_shape)
    g = torch.Generator().manual_seed(check_int(seed, "seed"))
    return Inpainting(in_shape, torch.rand(h, w, generator=g) >= missing)


class AveragePoolSR(LinearOperator):
    """Super-resolution by ``factor x factor`` average pooling.

    ``A A^T = I / factor^2`` so ``A^+ = factor^2 A^T`` = nearest-neighbour upsampling, exactly.
    """

    def __init__(self, in_shape: Sequence[int], factor: int = 2):
        super().__init__(in_shape)
        _, h, w = self.in_shape
        if check_int(factor, "factor") < 1 or h % factor or w % factor:
            raise ValueError(f"factor: expected a positive divisor of H={h} and W={w}, got {factor}")
        self.factor = int(factor)

    def meas_shape(self) -> tuple[int, ...]:
        c, h, w = self.in_shape
        return (c, h // self.factor, w // self.factor)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.factor)

    def pinv(self, y: Tensor) -> Tensor:
        return y.repeat_interleave(self.factor, 2).repeat_interleave(self.factor, 3)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.pinv(y) / self.factor**2


class Colorization(LinearOperator):
    """Colourisation: ``y`` = the channel mean (grey image). ``A^+`` replicates grey to all channels."""

    def __init__(self, in_shape: Sequence[int]):
        super().__init__(in_shape)
        if self.in_shape[0] < 2:
            raise ValueError(f"in_shape: colourisation needs a multi-channel image, got C={self.in_shape[0]}")

    def meas_shape(self) -> tuple[int, ...]:
        return (1, *self.in_shape[1:])

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(1, keepdim=True)

    def pinv(self, y: Tensor) -> Tensor:
        return y.expand(-1, self.in_shape[0], -1, -1).clone()

    def adjoint(self, y: Tensor) -> Tensor:
        return self.pinv(y) / self.in_shape[0]


# -------------------------------------------------------------------------------------------------
# A nonlinear operator (for DPS)
# -------------------------------------------------------------------------------------------------


class Saturation(Operator):
    """Nonlinear sensor: ``y = tanh(gain * L x)`` for a linear ``L`` (a saturating detector).

    Differentiable, so DPS applies; DDNM does not (no linear range-null-space split). Because tanh is
    invertible on (-1, 1), :meth:`invert` gives ``L^+ atanh(y) / gain`` for initialisation/inspection.
    """

    linear = False

    def __init__(self, inner: LinearOperator, gain: float = 1.0):
        super().__init__(inner.in_shape)
        check_range(gain, "gain", 0.0, math.inf, lo_open=True, hi_open=True)
        self.inner, self.gain = inner, float(gain)

    def meas_shape(self) -> tuple[int, ...]:
        return self.inner.meas_shape()

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.gain * self.inner.forward(x))

    def jacobian_scale(self, x: Tensor) -> Tensor:
        """``gain (1 - tanh^2(gain L x))`` ``(B, m)``: the Jacobian at ``x`` is ``diag(scale) L`` (Gauss-Newton)."""
        return self.gain * (1 - torch.tanh(self.gain * self.inner.forward(x)) ** 2).flatten(1)

    def invert(self, y: Tensor) -> Tensor:
        z = torch.atanh(self.check_measurement(y).clamp(-1 + 1e-6, 1 - 1e-6)) / self.gain
        return self.inner.pinv(z)


# -------------------------------------------------------------------------------------------------
# Registry
# -------------------------------------------------------------------------------------------------

OPERATORS = (
    "box_inpaint",
    "random_inpaint",
    "sr",
    "gaussian_blur",
    "motion_blur",
    "colorize",
    "cs",
    "cs_gaussian",
    "saturation",
    "zero",
)


def get_operator(
    name: str,
    in_shape: Sequence[int],
    *,
    ratio: float = 0.25,
    factor: int = 2,
    missing: float = 0.5,
    sigma: float = 1.0,
    length: int = 5,
    angle: float = 30.0,
    seed: int = 0,
    gain: float = 2.0,
    rcond: float = 1e-3,
) -> Operator:
    """Build an operator by name: ``box_inpaint``, ``random_inpaint`` (``missing``), ``sr`` (``factor``),
    ``gaussian_blur`` (``sigma``), ``motion_blur`` (``length``, ``angle``), ``colorize``, ``cs`` (orthogonal,
    ``ratio``), ``cs_gaussian`` (``ratio``), ``saturation`` (tanh of a Gaussian blur, ``gain``), ``zero``.
    ``rcond``: relative singular-value cut of the blur pseudo-inverses (truncated SVD; raise it, e.g. to 0.1,
    for noisy measurements)."""

    check_choice(name, OPERATORS, "operator")
    if name == "box_inpaint":
        return box_inpainting(in_shape)
    if name == "random_inpaint":
        return random_inpainting(in_shape, missing, seed)
    if name == "sr":
        return AveragePoolSR(in_shape, factor)
    if name == "gaussian_blur":
        return gaussian_blur(in_shape, sigma, rcond=rcond)
    if name == "motion_blur":
        return motion_blur(in_shape, length, angle, rcond=rcond)
    if name == "colorize":
        return Colorization(in_shape)
    if name == "cs":
        return CompressedSensing(in_shape, ratio, True, seed)
    if name == "cs_gaussian":
        return CompressedSensing(in_shape, ratio, False, seed)
    if name == "saturation":
        return Saturation(gaussian_blur(in_shape, sigma, rcond=rcond), gain)
    return zero_operator(in_shape)
