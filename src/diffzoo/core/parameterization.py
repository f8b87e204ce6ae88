"""Exact conversions between the five prediction targets a denoiser may output, and x0 corrections.

With ``x_t = alpha x0 + sigma eps`` (Lai et al., *The Principles of Diffusion Models*, Table of
parameterisations; Salimans & Ho 2022 for ``v``; Liu et al. 2023 for flow velocity):

=============  ============================================================
``epsilon``    the noise ``eps``
``sample``     the clean data ``x0`` (also called ``x0``)
``v_prediction``  ``v = alpha eps - sigma x0`` (defined for any alpha, sigma)
``score``      ``grad log p_t(x_t) = -eps / sigma``
``velocity``   the probability-flow velocity ``u = alpha'(t) x0 + sigma'(t) eps``
=============  ============================================================

Every conversion goes through the pair ``(x0, eps)``, which two linear relations determine exactly:
both are linear in ``(x_t, pred)`` with coefficients that depend only on the time
(:func:`x0_eps_coefficients`, the one place these formulas live). ``v`` is inverted for general (not
only variance-preserving) ``alpha, sigma``. Where ``alpha = 0`` (zero terminal SNR, Lin et al. 2024)
``x0`` is undefined for ``epsilon`` and ``score`` predictions; ``v``, ``sample`` and ``velocity`` stay exact.

x0 corrections (applied by :class:`~diffzoo.core.denoiser.Denoiser` to the predicted ``x0``):
:class:`ClipX0` (clamping to ``[-r, r]``, as DDPM pixel models are sampled) and
:class:`DynamicThreshold` (Saharia et al. 2022, *Imagen*, Sec. 2.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffzoo.core.errors import check_choice

Tensor = torch.Tensor

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "score", "velocity")
_ALIASES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction", "flow": "velocity"}

# A linear map (x_t, pred) -> c_x x_t + c_p pred, or None for the prediction itself (c_x = 0, c_p = 1).
Linear = tuple[Tensor, Tensor] | None


def canonical_prediction_type(name: str) -> str:
    """Map aliases (``eps``, ``x0``, ``v``, ``flow``) to the canonical names; reject unknown names."""
    name = _ALIASES.get(name, name)
    check_choice(name, PREDICTION_TYPES, "prediction_type")
    return name


def _bc(c: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or per-sample coefficient against ``x`` (batch-first)."""
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim)) if c.ndim else c


def x0_eps_coefficients(
    prediction_type: str, alpha: Tensor, sigma: Tensor, d_alpha: Tensor | None = None, d_sigma: Tensor | None = None
) -> tuple[Linear, Linear]:
    """The maps ``(x_t, pred) -> x0`` and ``(x_t, pred) -> eps`` of a prediction type, as coefficient pairs.

    ``x0 = c_x x_t + c_p pred`` with ``(c_x, c_p)`` the first entry (``None``: ``x0 = pred``), likewise
    ``eps`` with the second. From ``x_t = alpha x0 + sigma eps`` and the definition of each type:

    * epsilon: ``x0 = (x_t - sigma eps) / alpha``
    * sample: ``eps = (x_t - alpha x0) / sigma``
    * v_prediction: ``x0 = (alpha x_t - sigma v) / n``, ``eps = (sigma x_t + alpha v) / n``, ``n = alpha^2 + sigma^2``
    * score: ``eps = -sigma s``, ``x0 = (x_t + sigma^2 s) / alpha``
    * velocity (``u = alpha' x0 + sigma' eps``): ``x0 = (sigma' x_t - sigma u) / det``,
      ``eps = (alpha u - alpha' x_t) / det``, ``det = alpha sigma' - sigma alpha'``

    ``alpha``/``sigma`` (and the derivatives, needed only for ``velocity``) are tensors of any shape;
    the coefficients have their broadcast shape.
    """
    kind = canonical_prediction_type(prediction_type)
    a, s = alpha, sigma
    if kind == "epsilon":
        return (1 / a, -s / a), None
    if kind == "sample":
        return None, (1 / s, -a / s)
    if kind == "v_prediction":
        n = a * a + s * s
        return (a / n, -s / n), (s / n, a / n)
    if kind == "score":
        return (1 / a, s * s / a), (torch.zeros_like(s), -s)
    if d_alpha is None or d_sigma is None:
        raise ValueError("d_alpha, d_sigma: required to convert a 'velocity' prediction")
    det = a * d_sigma - s * d_alpha
    return (d_sigma / det, -s / det), (-d_alpha / det, a / det)


def apply_linear(c: Linear, x_t: Tensor, pred: Tensor) -> Tensor:
    """``c_x x_t + c_p pred`` (``pred`` itself for ``None``); per-sample coefficients broadcast batch-first."""
    if c is None:
        return pred
    cx, cp = _bc(c[0], x_t), _bc(c[1], x_t)
    return cx * x_t + cp * pred


def to_x0_eps(
    pred: Tensor,
    prediction_type: str,
    x_t: Tensor,
    alpha: Tensor | float,
    sigma: Tensor | float,
    d_alpha: Tensor | float | None = None,
    d_sigma: Tensor | float | None = None,
) -> tuple[Tensor, Tensor]:
    """Recover ``(x0, eps)`` from a prediction of any type at state ``x_t`` (:func:`x0_eps_coefficients`).

    ``d_alpha``/``d_sigma`` (time derivatives) are needed only for ``velocity``.
    """
    a, s = _bc(alpha, x_t), _bc(sigma, x_t)
    da = None if d_alpha is None else _bc(d_alpha, x_t)
    ds = None if d_sigma is None else _bc(d_sigma, x_t)
    cx0, ceps = x0_eps_coefficients(prediction_type, a, s, da, ds)
    return apply_linear(cx0, x_t, pred), apply_linear(ceps, x_t, pred)


def from_x0_eps(
    x0: Tensor,
    eps: Tensor,
    prediction_type: str,
    alpha: Tensor | float,
    sigma: Tensor | float,
    d_alpha: Tensor | float | None = None,
    d_sigma: Tensor | float | None = None,
) -> Tensor:
    """Express the pair ``(x0, eps)`` as a prediction of the given type."""
    kind = canonical_prediction_type(prediction_type)
    a, s = _bc(alpha, x0), _bc(sigma, x0)
    if kind == "epsilon":
        return eps
    if kind == "sample":
        return x0
    if kind == "score":
        return -eps / s
    if kind == "v_prediction":
        return a * eps - s * x0
    if d_alpha is None or d_sigma is None:
        raise ValueError("d_alpha, d_sigma: required to produce a 'velocity' prediction")
    return _bc(d_alpha, x0) * x0 + _bc(d_sigma, x0) * eps


def convert(
    pred: Tensor,
    from_type: str,
    to_type: str,
    x_t: Tensor,
    alpha: Tensor | float,
    sigma: Tensor | float,
    d_alpha: Tensor | float | None = None,
    d_sigma: Tensor | float | None = None,
) -> Tensor:
    """Convert a prediction between any two types, exactly (up to floating point)."""
    if canonical_prediction_type(from_type) == canonical_prediction_type(to_type):
        return pred
    x0, eps = to_x0_eps(pred, from_type, x_t, alpha, sigma, d_alpha, d_sigma)
    return from_x0_eps(x0, eps, to_type, alpha, sigma, d_alpha, d_sigma)


def ddim_step(x0: Tensor, eps: Tensor, alpha_s: Tensor | float, sigma_s: Tensor | float) -> Tensor:
    """Deterministic DDIM transfer to time ``s`` (Song et al. 2021, Eq. 12 with eta = 0):
    ``x_s = alpha_s x0 + sigma_s eps``. The one place this formula lives.

    Fast form for sampler loops: ``alpha_s`` a 0-d tensor in ``x0``'s dtype and ``sigma_s`` a Python
    float (two fused kernels, no temporary coefficient tensors); otherwise scalars or per-sample tensors
    broadcast batch-first.
    """
    if isinstance(sigma_s, float) and torch.is_tensor(alpha_s) and alpha_s.ndim == 0:
        return torch.add(torch.mul(x0, alpha_s), eps, alpha=sigma_s)
    return _bc(alpha_s, x0) * x0 + _bc(sigma_s, x0) * eps


def ddim_transfer_coefficients(
    alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor, sigma_s: Tensor, along: str = "eps"
) -> tuple[Tensor, Tensor]:
    """:func:`ddim_step` as one linear map of the state and a single estimate: ``x_s = c_x x_t + c_e e``.

    ``along="eps"``: ``e`` is a noise estimate and ``x0 = (x_t - sigma_t e) / alpha_t`` is substituted,
    ``c_x = alpha_s / alpha_t``, ``c_e = sigma_s - alpha_s sigma_t / alpha_t`` (undefined at ``alpha_t = 0``).
    ``along="x0"``: ``e`` is a data estimate and ``eps = (x_t - alpha_t e) / sigma_t`` is substituted,
    ``c_x = sigma_s / sigma_t``, ``c_e = alpha_s - sigma_s alpha_t / sigma_t`` (Lu et al. 2022b, Eq. 9 with
    ``sigma_s / sigma_t`` and ``alpha_s (1 - e^{-h})``). Elementwise in the (float64) inputs.
    """
    check_choice(along, ("eps", "x0"), "along")
    if along == "eps":
        c_x = alpha_s / alpha_t
        return c_x, sigma_s - c_x * sigma_t
    c_x = sigma_s / sigma_t
    return c_x, alpha_s - c_x * alpha_t


# -------------------------------------------------------------------------------------------------
# x0 corrections
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipX0:
    """Clamp the predicted ``x0`` to ``[-limit, limit]`` (diffusers' ``clip_sample`` with
    ``clip_sample_range = limit``; DDPM pixel models, Ho et al. 2020, are sampled this way)."""

    limit: float = 1.0

    def __post_init__(self) -> None:
        if not float(self.limit) > 0:
            raise ValueError(f"limit: expected a positive clipping range, got {self.limit}")

    def __call__(self, x0: Tensor) -> Tensor:
        return x0.clamp(-self.limit, self.limit)


@dataclass(frozen=True)
class DynamicThreshold:
    """Dynamic thresholding (Saharia et al. 2022, *Imagen*, Sec. 2.3): per sample,
    ``s = clamp(quantile(|x0|, ratio), 1, max_value)`` over all its entries, then ``x0 <- clamp(x0, -s, s) / s``.

    ``s = 1`` is plain clipping to ``[-1, 1]``. Same as diffusers' ``thresholding=True`` with
    ``dynamic_thresholding_ratio = ratio`` and ``sample_max_value = max_value`` (half precision is
    thresholded in float32).
    """

    ratio: float = 0.995
    max_value: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < float(self.ratio) <= 1.0:
            raise ValueError(f"ratio: expected a quantile in (0, 1], got {self.ratio}")
        if not float(self.max_value) >= 1.0:
            raise ValueError(f"max_value: expected a value >= 1, got {self.max_value}")

    def __call__(self, x0: Tensor) -> Tensor:
        dtype = x0.dtype
        flat = x0.reshape(x0.shape[0], -1)
        if dtype not in (torch.float32, torch.float64):
            flat = flat.float()
        s = torch.quantile(flat.abs(), self.ratio, dim=1).clamp(min=1, max=self.max_value).unsqueeze(1)
        return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(dtype)
