"""Image fidelity metrics for ``(B, C, H, W)`` batches: PSNR and Gaussian-window SSIM.

``data_range`` is the width of the value range (2.0 for diffzoo's ``[-1, 1]`` images, 1.0 for
``[0, 1]``, 255 for bytes). Both return one value per image with ``reduction="none"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffzoo.core.errors import check_range, check_tensor
from diffzoo.metrics.distances import reduce

Tensor = torch.Tensor


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    check_tensor(x, "x", ndim=4, floating=True)
    check_tensor(y, "y", ndim=4, floating=True)
    if x.shape != y.shape:
        raise ValueError(f"y: expected shape {tuple(x.shape)} like x, got {tuple(y.shape)}")
    return x.to(torch.float64), y.to(torch.float64)


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` per image (inf for identical images).

    ``reduction="pooled"``: the PSNR of the MSE over the whole batch (finite unless every image is exact;
    use it where some reconstructions can be pixel-perfect, e.g. discrete tokens).
    """
    x, y = _pair(x, y)
    check_range(data_range, "data_range", 0, None, lo_open=True)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    if reduction == "pooled":
        return 10 * torch.log10(data_range**2 / mse.mean())
    return reduce(10 * torch.log10(data_range**2 / mse), reduction)


def gaussian_window(size: int, sigma: float) -> Tensor:
    """Normalised 2-D Gaussian window ``(size, size)``."""
    c = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(c**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 2.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "mean",
) -> Tensor:
    """Structural similarity (Wang et al. 2004, Eq. 13) with a Gaussian window (``sigma = 1.5``).

    Local means, variances and covariance are Gaussian-weighted over valid windows; the window
    shrinks to the largest odd size that fits images smaller than ``win_size``. The SSIM map is
    averaged over channels and positions per image.
    """
    x, y = _pair(x, y)
    check_range(data_range, "data_range", 0, None, lo_open=True)
    size = min(int(win_size), x.shape[-1], x.shape[-2])
    size = size if size % 2 else size - 1
    if size < 1:
        raise ValueError(f"x: images of shape {tuple(x.shape[-2:])} are too small for SSIM")
    c = x.shape[1]
    w = gaussian_window(size, sigma * size / win_size if size < win_size else sigma)
    # the window is the outer product of a 1-D Gaussian: filter rows then columns (same sums, ~size/2 x cheaper)
    g = w.sum(0).to(x)
    gr, gc = g.view(1, 1, 1, size).expand(c, 1, 1, size), g.view(1, 1, size, 1).expand(c, 1, size, 1)

    def filt(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, gr, groups=c), gc, groups=c)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return reduce(smap.flatten(1).mean(1), reduction)


__all__ = ["gaussian_window", "psnr", "ssim"]
