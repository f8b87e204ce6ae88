"""Two-sample statistics that algorithms use as losses and metrics report: the unbiased MMD^2.

It lives in core because it is both a training/distillation loss (LSD's trajectory matching,
:mod:`diffzoo.discrete.lsd`) and an evaluation metric (:mod:`diffzoo.metrics`, which re-exports it);
samples are flattened to ``(n, d)`` and computed in float64, differentiably.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffzoo.core.errors import check_tensor

Tensor = torch.Tensor


def flat_samples(x: Tensor, arg: str) -> Tensor:
    check_tensor(x, arg, floating=True)
    if x.ndim < 2:
        raise ValueError(f"{arg}: expected (n, d) samples, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def same_dim(x: Tensor, y: Tensor) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} features like x, got {y.shape[1]}")


def _sqdist(a: Tensor, b: Tensor) -> Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T).clamp(min=0)


def mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] | None = None) -> Tensor:
    """Unbiased MMD^2 with a sum of RBF kernels (Gretton et al. 2012, Eq. 3).

    ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))``; by default ``h`` is the median pairwise distance of
    the pooled samples times 0.5, 1 and 2. The estimate can be slightly negative when ``x ~ y``.
    """
    x, y = flat_samples(x, "x"), flat_samples(y, "y")
    same_dim(x, y)
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
