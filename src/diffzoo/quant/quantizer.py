"""Uniform affine fake quantizers with a straight-through estimator (STE), as in BRECQ / Q-Diffusion.

``x_q = delta * (clamp(round_ste(x / delta) + z, qmin, qmax) - z)`` (Q-Diffusion, arXiv 2302.04304, Sec. 3;
BRECQ, arXiv 2102.05426). Rounding is round-half-to-even (``torch.round``, the same convention as
``torch.quantize_per_tensor`` and the int8 kernels of :mod:`diffzoo.quant.int8`).

* :class:`WeightQuantizer`: per-output-channel ``delta``/``z`` (asymmetric, codes ``0 .. 2^b - 1``),
  initialised by ``max`` or the MSE range search of Q-Diffusion's code (80 shrink factors ``1 - 0.01 i`` of
  ``[min, max]``, error ``||x - x_q||_p^p`` with ``p = 2.4``, best per channel); optional AdaRound
  (Nagel et al. 2020, arXiv 2004.10568): ``W_q = delta (clamp(floor(W/delta) + h(V) + z) - z)``,
  ``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``, ``zeta = 1.1, gamma = -0.1``.
* :class:`ActQuantizer`: per-tensor activation quantizer, initialised over a calibration set (the MSE- or
  max-best range of every calibration batch, averaged over the batches: "smoothed"), step sizes learnable
  (LSQ, Esser et al. 2019, arXiv 1902.08153: the gradient of ``delta`` flows through the STE formula).
  Time-aware (QuEST, arXiv 2402.03666): ``groups > 1`` keeps one ``(delta, z)`` per timestep group; the
  group of each sample is set by :class:`TimeContext` before the network runs.

Bit-widths: 2..8 and 16, or 32 (= no quantization; the output equals the input exactly).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffzoo.core.errors import check_tensor

Tensor = torch.Tensor

#: Bit-widths a quantizer accepts (32 = full precision, a pass-through).
BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)
#: Lp norm of the MSE range search (Q-Diffusion / BRECQ code: p = 2.4) and its number of shrink factors.
LP_NORM = 2.4
SEARCH_STEPS = 80
ZETA, GAMMA = 1.1, -0.1


def check_bits(bits: object, arg: str = "bits") -> int:
    """``bits`` as an int in :data:`BITS`, else a one-line error naming ``arg``."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{arg}: expected an integer bit-width, got {type(bits).__name__}")
    if bits not in BITS:
        raise ValueError(f"{arg}: unsupported bit-width {bits}; expected one of {list(BITS)}")
    return bits


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward, identity gradient backward (straight-through estimator)."""
    return (x.round() - x).detach() + x


def fake_quant(x: Tensor, delta: Tensor, zp: Tensor, qmin: int, qmax: int) -> Tensor:
    """Quantize-dequantize ``x`` on the grid ``delta * (k - zp)``, ``k in [qmin, qmax]`` (STE in ``x`` and
    ``delta``: LSQ's gradient)."""
    q = torch.clamp(round_ste(x / delta) + zp, qmin, qmax)
    return (q - zp) * delta


def lp_error(x: Tensor, xq: Tensor, dims: tuple[int, ...] | None, p: float = LP_NORM) -> Tensor:
    """``mean |x - xq|^p`` over ``dims`` (all when ``None``)."""
    err = (x - xq).abs().pow(p)
    return err.mean() if dims is None else err.mean(dim=dims)


def range_to_params(lo: Tensor, hi: Tensor, qmax: int) -> tuple[Tensor, Tensor]:
    """``(delta, zero point)`` of the asymmetric grid ``[0, qmax]`` covering ``[min(lo, 0), max(hi, 0)]``."""
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    delta = ((hi - lo) / qmax).clamp_min(1e-8)
    zp = torch.round(-lo / delta)
    return delta, zp


def search_range(x: Tensor, bits: int, channel_dim: int | None, method: str = "mse") -> tuple[Tensor, Tensor]:
    """``(delta, zp)`` for ``x``: per channel along ``channel_dim`` (``None``: per tensor), by ``max`` or the
    ``mse`` (Lp, p = 2.4) search over shrunk ranges ``(1 - 0.01 i) [min, max]``, ``i < 80``."""
    qmax = 2**bits - 1
    x = x.detach().float()
    with torch.no_grad():
        return _search(x, qmax, channel_dim, method)


def _search(x: Tensor, qmax: int, channel_dim: int | None, method: str) -> tuple[Tensor, Tensor]:
    if channel_dim is None:
        flat = x.reshape(1, -1)
    else:
        flat = x.transpose(0, channel_dim).reshape(x.shape[channel_dim], -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    best_d, best_z = range_to_params(lo, hi, qmax)
    if method == "max":
        return _shape(best_d, x, channel_dim), _shape(best_z, x, channel_dim)
    if method != "mse":
        raise ValueError(f"method: expected 'max' or 'mse', got {method!r}")
    best_err = torch.full_like(lo, math.inf)
    shrink = 1.0 - 0.01 * torch.arange(SEARCH_STEPS, dtype=flat.dtype)
    chunk = max(1, min(SEARCH_STEPS, 2**23 // max(1, flat.numel())))
    for i in range(0, SEARCH_STEPS, chunk):  # candidates in chunks, vectorised: (k, C, N)
        s = shrink[i : i + chunk, None]
        d, z = range_to_params(lo[None] * s, hi[None] * s, qmax)
        err = lp_error(flat[None], fake_quant(flat[None], d[..., None], z[..., None], 0, qmax), (2,))
        k = err.argmin(0)
        err, d, z = err.gather(0, k[None])[0], d.gather(0, k[None])[0], z.gather(0, k[None])[0]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_d, best_z = torch.where(better, d, best_d), torch.where(better, z, best_z)
    return _shape(best_d, x, channel_dim), _shape(best_z, x, channel_dim)


def _shape(v: Tensor, x: Tensor, channel_dim: int | None) -> Tensor:
    if channel_dim is None:
        return v.reshape(())
    shape = [1] * x.ndim
    shape[channel_dim] = -1
    return v.reshape(shape)


class WeightQuantizer(nn.Module):
    """Per-output-channel asymmetric weight quantizer (channel dim 0), with optional AdaRound."""

    def __init__(self, weight: Tensor, bits: int, method: str = "mse"):
        super().__init__()
        self.bits = check_bits(bits, "wbits")
        check_tensor(weight, "weight", floating=True)
        shape = (weight.shape[0],) + (1,) * (weight.ndim - 1)
        self.register_buffer("delta", torch.ones(shape))
        self.register_buffer("zp", torch.zeros(shape))
        self.alpha: nn.Parameter | None = None  # AdaRound's V (None: round to nearest)
        self.soft = False  # AdaRound: soft (h(V) in [0, 1]) during reconstruction, hard after
        if self.enabled and method != "none":  # "none": the scales are loaded afterwards (zoo entries)
            self.init(weight, method)

    @property
    def enabled(self) -> bool:
        return self.bits < 32

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    def init(self, weight: Tensor, method: str = "mse") -> None:
        d, z = search_range(weight, self.bits, 0, method)
        self.delta.copy_(d)
        self.zp.copy_(z)

    def init_adaround(self, weight: Tensor) -> None:
        """AdaRound's V such that ``h(V)`` equals the fractional part of ``W / delta`` (the rounding of the
        initial soft weight equals round-to-nearest)."""
        rest = (weight / self.delta - torch.floor(weight / self.delta)).detach()
        p = ((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
        self.alpha = nn.Parameter(torch.log(p / (1 - p)))
        self.soft = True

    def h(self) -> Tensor:
        assert self.alpha is not None
        return torch.clamp(torch.sigmoid(self.alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def round_loss(self, beta: float) -> Tensor:
        """AdaRound's regulariser ``sum(1 - |2 h(V) - 1|^beta)`` (0 when every ``h`` is 0 or 1)."""
        if self.alpha is None:
            return torch.zeros(())
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def codes(self, weight: Tensor) -> Tensor:
        """Integer codes ``k in [0, 2^b - 1]`` of ``weight`` (AdaRound's hard rounding when it is set)."""
        if self.alpha is not None:
            k = torch.floor(weight / self.delta) + (self.alpha >= 0).to(weight.dtype) + self.zp
        else:
            k = torch.round(weight / self.delta) + self.zp
        return k.clamp(0, self.qmax)

    def forward(self, weight: Tensor) -> Tensor:
        if not self.enabled:
            return weight
        if self.alpha is None:
            return fake_quant(weight, self.delta, self.zp, 0, self.qmax)
        base = torch.floor(weight / self.delta).detach()
        h = self.h() if self.soft else (self.alpha >= 0).to(weight.dtype)
        return (torch.clamp(base + h + self.zp, 0, self.qmax) - self.zp) * self.delta

    def extra_repr(self) -> str:
        return f"bits={self.bits}, adaround={self.alpha is not None}"


class TimeContext:
    """Shared by a model's time-aware quantizers: the timestep group of each sample of the current call.

    ``edges`` (``G - 1`` increasing network times) split the time axis into ``G`` groups; ``set(t)`` is
    called before every network call (a forward pre-hook installed by :func:`~diffzoo.quant.model.prepare`).
    """

    def __init__(self, edges: Tensor | None = None):
        self.edges = torch.zeros(0) if edges is None else edges.detach().double().flatten()
        self.groups: Tensor | None = None

    @property
    def num_groups(self) -> int:
        return int(self.edges.numel()) + 1

    def group_of(self, t: Tensor) -> Tensor:
        return torch.bucketize(t.detach().double().flatten().cpu(), self.edges, right=True)

    def set(self, t: Tensor | None) -> None:
        self.groups = None if t is None else self.group_of(t)


class ActQuantizer(nn.Module):
    """Per-tensor activation quantizer with ``groups`` (timestep groups, QuEST) step sizes; LSQ-learnable.

    Calibration: between :meth:`start_calibration` and :meth:`finish_calibration` every forward records
    the range chosen on that batch (``mse`` or ``max``) for the current group; the final range of a group
    is the mean over its batches (``max`` method: the maximum). Until calibrated it passes values through.
    """

    def __init__(self, bits: int, groups: int = 1, ctx: TimeContext | None = None, qmax: int | None = None):
        super().__init__()
        self.bits = check_bits(bits, "abits")
        self.groups = int(groups)
        self.ctx = ctx
        self.delta = nn.Parameter(torch.ones(self.groups), requires_grad=False)
        self.register_buffer("zp", torch.zeros(self.groups))
        # qmax < 2^b - 1: fbgemm's reduce_range for real int8 W8A8 (see diffzoo.quant.int8)
        self.register_buffer("qmax_t", torch.tensor(float(qmax if qmax is not None else 2**self.bits - 1)))
        self.register_buffer("ready", torch.tensor(False))
        self.enabled = True
        self._obs: dict[int, list[tuple[Tensor, Tensor]]] | None = None
        self._method = "mse"

    @property
    def qmax(self) -> int:
        return int(self.qmax_t)

    def start_calibration(self, method: str = "mse") -> None:
        if method not in ("mse", "max"):
            raise ValueError(f"init: expected 'mse' or 'max', got {method!r}")
        self._obs, self._method = {}, method

    def finish_calibration(self) -> None:
        if self._obs is None:
            return
        for g, obs in self._obs.items():
            lo = torch.stack([o[0] for o in obs])
            hi = torch.stack([o[1] for o in obs])
            lo, hi = (lo.min(), hi.max()) if self._method == "max" else (lo.mean(), hi.mean())
            d, z = range_to_params(lo, hi, self.qmax)
            self.delta.data[g] = d
            self.zp[g] = z
        if self._obs:
            seen = sorted(self._obs)
            for g in range(self.groups):  # a group without calibration data takes the nearest seen one's
                if g not in self._obs:
                    near = min(seen, key=lambda s: abs(s - g))
                    self.delta.data[g], self.zp[g] = self.delta.data[near], self.zp[near]
            self.ready.fill_(True)
        self._obs = None

    def _group_index(self, x: Tensor) -> Tensor | None:
        if self.groups == 1 or self.ctx is None or self.ctx.groups is None:
            return None
        g = self.ctx.groups.clamp(max=self.groups - 1)
        if g.numel() == 1 or bool((g == g[0]).all()):
            return g[:1]
        if x.shape[0] % g.numel() != 0:
            raise ValueError(f"x: batch {x.shape[0]} is not a multiple of the {g.numel()} timesteps of this call")
        return g.repeat_interleave(x.shape[0] // g.numel())

    def _observe(self, x: Tensor, g: Tensor | None) -> None:
        assert self._obs is not None
        gid = 0 if g is None else int(g[0])
        if g is not None and g.numel() > 1 and not bool((g == g[0]).all()):
            raise ValueError("calib: a calibration batch must hold one timestep group (sort it by time)")
        flat = x.detach().float().reshape(-1)
        if flat.numel() > 2**12:  # the range search on a fixed random subset of large tensors
            flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[: 2**12]]
        lo, hi = flat.min(), flat.max()
        if self._method == "mse":
            d, z = search_range(flat, self.bits if self.qmax == 2**self.bits - 1 else self.bits - 1, None, "mse")
            lo, hi = -z * d, (self.qmax - z) * d
        self._obs.setdefault(gid, []).append((lo, hi))

    def forward(self, x: Tensor) -> Tensor:
        if self.bits >= 32 or not self.enabled:
            return x
        g = self._group_index(x)
        if self._obs is not None:
            self._observe(x, g)
            return x
        if not bool(self.ready):
            return x
        if g is None:
            return fake_quant(x, self.delta[0], self.zp[0], 0, self.qmax)
        shape = (-1,) + (1,) * (x.ndim - 1)
        d = self.delta[g].reshape(shape) if g.numel() > 1 else self.delta[g[0]]
        z = self.zp[g].reshape(shape) if g.numel() > 1 else self.zp[g[0]]
        return fake_quant(x, d, z, 0, self.qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, groups={self.groups}, qmax={self.qmax}"


__all__ = [
    "BITS",
    "LP_NORM",
    "ActQuantizer",
    "TimeContext",
    "WeightQuantizer",
    "check_bits",
    "fake_quant",
    "range_to_params",
    "round_ste",
    "search_range",
]
