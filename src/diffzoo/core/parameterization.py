"""Exact conversions between the five prediction targets a denoiser may output.

With ``x_t = alpha x0 + sigma eps`` (Lai et al., *The Principles of Diffusion Models*, Table of
parameterisations; Salimans & Ho 2022 for ``v``; Liu et al. 2023 for flow velocity):

=============  ============================================================
``epsilon``    the noise ``eps``
``sample``     the clean data ``x0`` (also called ``x0``)
``v_prediction``  ``v = alpha eps - sigma x0`` (defined for any alpha, sigma)
``score``      ``grad log p_t(x_t) = -eps / sigma``
``velocity``   the probability-flow velocity ``u = alpha'(t) x0 + sigma'(t) eps``
=============  ============================================================

Every conversion goes through the pair ``(x0, eps)``, which two linear relations determine exactly.
``v`` is inverted for general (not only variance-preserving) ``alpha, sigma``.
"""

from __future__ import annotations

import torch

from diffzoo.core.errors import check_choice

Tensor = torch.Tensor

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "score", "velocity")
_ALIASES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction", "flow": "velocity"}


def canonical_prediction_type(name: str) -> str:
    """Map aliases (``eps``, ``x0``, ``v``, ``flow``) to the canonical names; reject unknown names."""
    name = _ALIASES.get(name, name)
    check_choice(name, PREDICTION_TYPES, "prediction_type")
    return name


def _bc(c: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or per-sample coefficient against ``x`` (batch-first)."""
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim)) if c.ndim else c


def to_x0_eps(pred: Tensor, prediction_type: str, x_t: Tensor, alpha: Tensor | float, sigma: Tensor | float,
              d_alpha: Tensor | float | None = None, d_sigma: Tensor | float | None = None) -> tuple[Tensor, Tensor]:
    """Recover ``(x0, eps)`` from a prediction of any type at state ``x_t``.

    ``d_alpha``/``d_sigma`` (time derivatives) are needed only for ``velocity``.
    """
    kind = canonical_prediction_type(prediction_type)
    a, s = _bc(alpha, x_t), _bc(sigma, x_t)
    if kind == "epsilon":
        return (x_t - s * pred) / a, pred
    if kind == "sample":
        return pred, (x_t - a * pred) / s
    if kind == "score":
        eps = -s * pred
        return (x_t - s * eps) / a, eps
    if kind == "v_prediction":
        # v = a eps - s x0 and x_t = a x0 + s eps  =>  x0 = (a x_t - s v)/(a^2+s^2), eps = (s x_t + a v)/(a^2+s^2)
        n = a * a + s * s
        return (a * x_t - s * pred) / n, (s * x_t + a * pred) / n
    # velocity: u = a' x0 + s' eps; det = a s' - s a'
    if d_alpha is None or d_sigma is None:
        raise ValueError("d_alpha, d_sigma: required to convert a 'velocity' prediction")
    da, ds = _bc(d_alpha, x_t), _bc(d_sigma, x_t)
    det = a * ds - s * da
    return (ds * x_t - s * pred) / det, (a * pred - da * x_t) / det


def from_x0_eps(x0: Tensor, eps: Tensor, prediction_type: str, alpha: Tensor | float, sigma: Tensor | float,
                d_alpha: Tensor | float | None = None, d_sigma: Tensor | float | None = None) -> Tensor:
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


def convert(pred: Tensor, from_type: str, to_type: str, x_t: Tensor, alpha: Tensor | float,
            sigma: Tensor | float, d_alpha: Tensor | float | None = None,
            d_sigma: Tensor | float | None = None) -> Tensor:
    """Convert a prediction between any two types, exactly (up to floating point)."""
    if canonical_prediction_type(from_type) == canonical_prediction_type(to_type):
        return pred
    x0, eps = to_x0_eps(pred, from_type, x_t, alpha, sigma, d_alpha, d_sigma)
    return from_x0_eps(x0, eps, to_type, alpha, sigma, d_alpha, d_sigma)


def ddim_step(x0: Tensor, eps: Tensor, alpha_s: Tensor | float, sigma_s: Tensor | float) -> Tensor:
    """Deterministic DDIM transfer to time ``s`` (Song et al. 2021, Eq. 12 with eta = 0):
    ``x_s = alpha_s x0 + sigma_s eps``. The one place this formula lives."""
    return _bc(alpha_s, x0) * x0 + _bc(sigma_s, x0) * eps
