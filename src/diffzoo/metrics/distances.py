"""Sample-based distances between distributions: sliced Wasserstein, unbiased MMD^2, Frechet distance, NLL.

All take two sample sets of shape ``(n, d)`` (images are flattened) and compute in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffzoo.core.errors import check_choice, check_tensor

Tensor = torch.Tensor


def _flat(x: Tensor, arg: str) -> Tensor:
    check_tensor(x, arg, floating=True)
    if x.ndim < 2:
        raise ValueError(f"{arg}: expected (n, d) samples, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _same_dim(x: Tensor, y: Tensor) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} features like x, got {y.shape[1]}")


def sliced_wasserstein(x: Tensor, y: Tensor, num_projections: int = 256, p: int = 2,
                       generator: torch.Generator | None = None) -> Tensor:
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


def _sqdist(a: Tensor, b: Tensor) -> Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T).clamp(min=0)


def mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] | None = None) -> Tensor:
    """Unbiased MMD^2 with a sum of RBF kernels (Gretton et al. 2012, Eq. 3).

    ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))``; by default ``h`` is the median pairwise distance of
    the pooled samples times 0.5, 1 and 2. The estimate can be slightly negative when ``x ~ y``.
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    _same_dim(x, y)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("x, y: the unbiased MMD needs at least 2 samples in each set")
    dxx, dyy, dxy = _sqdist(x, x), _sqdist(y, y), _sqdist(x, y)
    if bandwidths is None:
        pooled = torch.cat([dxx.flatten(), dyy.flatten(), dxy.flatten()])
        med = pooled[pooled > 0].median().sqrt() if bool((pooled > 0).any()) else torch.tensor(1.0, dtype=torch.float64)
        bandwidths = [float(med) * s for s in (0.5, 1.0, 2.0)]
    if any(h <= 0 for h in bandwidths):
        raise ValueError(f"bandwidths: expected positive values, got {list(bandwidths)}")

    def k(d2: Tensor) -> Tensor:
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = k(dxx), k(dyy), k(dxy)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


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
