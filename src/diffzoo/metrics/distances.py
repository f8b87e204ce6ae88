"""Sample-based distances between distributions: sliced Wasserstein, unbiased MMD^2, Frechet distance, NLL.

All take two sample sets of shape ``(n, d)`` (images are flattened) and compute in float64.
"""

from __future__ import annotations

from typing import Any

import torch

from diffzoo.core.errors import check_choice
from diffzoo.core.stats import flat_samples as _flat
from diffzoo.core.stats import mmd
from diffzoo.core.stats import same_dim as _same_dim

Tensor = torch.Tensor


def sliced_wasserstein(
    x: Tensor, y: Tensor, num_projections: int = 256, p: int = 2, generator: torch.Generator | None = None
) -> Tensor:
    """Sliced p-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015).

    ``SW_p(x, y) = (E_theta W_p^p(<theta, x>, <theta, y>))^(1/p)`` over uniform directions ``theta`` on
    the sphere; each 1-D ``W_p`` compares sorted projections (quantiles on a common grid when the
    sample sizes differ).
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    _same_dim(x, y)
    theta = torch.randn(x.shape[1], int(num_projections), generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (x @ theta).sort(0).values, (y @ theta).sort(0).values
    if px.shape[0] != py.shape[0]:
        m = max(px.shape[0], py.shape[0])
        q = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        px, py = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    return ((px - py).abs() ** p).mean().pow(1.0 / p)


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of ``(n, d)`` features, in float64."""
    f = _flat(features, "features")
    if f.shape[0] < 2:
        raise ValueError("features: need at least 2 rows for a covariance")
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _sqrtm_psd(a: Tensor) -> Tensor:
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(x: Tensor | tuple[Tensor, Tensor], y: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, Eq. 6).

    ``FD = |mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x^(1/2) S_y S_x^(1/2))^(1/2))``; the symmetric form of the
    matrix root keeps it real and exact for PSD covariances. ``x``/``y`` are feature sets or
    ``(mean, cov)`` pairs.
    """
    mx, sx = x if isinstance(x, tuple) else gaussian_stats(x)
    my, sy = y if isinstance(y, tuple) else gaussian_stats(y)
    if mx.shape != my.shape:
        raise ValueError(f"y: feature dimension {tuple(my.shape)} does not match x {tuple(mx.shape)}")
    r = _sqrtm_psd(sx)
    cross = torch.linalg.eigvalsh(r @ sy @ r).clamp(min=0).sqrt().sum()
    return ((mx - my) ** 2).sum() + sx.trace() + sy.trace() - 2 * cross


def nll(samples: Tensor, dataset: Any) -> Tensor:
    """Mean negative log-likelihood of ``samples`` under a toy dataset's exact density ``dataset.log_prob``."""
    if not hasattr(dataset, "log_prob"):
        raise ValueError(f"dataset: {type(dataset).__name__} has no exact log_prob")
    return -dataset.log_prob(_flat(samples, "samples")).mean()


def reduce(values: Tensor, reduction: str) -> Tensor:
    check_choice(reduction, ("mean", "none", "sum"), "reduction")
    return values.mean() if reduction == "mean" else values.sum() if reduction == "sum" else values


__all__ = ["frechet_distance", "gaussian_stats", "mmd", "nll", "reduce", "sliced_wasserstein"]
