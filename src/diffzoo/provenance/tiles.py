"""Mosaics: a 64x64 image as a 2x2 grid of 32x32 tiles, so a 32x32 model (TinySD) processes it tile-wise.

The watermark libraries need more pixels than the 32x32 shapes world offers (issue 15: about 8-16 bits on
32x32, 32 bits at 64x64), and TinySD's VAE does not generalise to 2x-upsampled scenes (measured in the
bench: VAE round-trip PSNR ~26 dB at 64x64 vs ~36 dB at its native 32x32). A 2x2 mosaic of native scenes
keeps TinySD exactly in distribution: :func:`to_tiles` / :func:`from_tiles` are exact inverses.
"""

from __future__ import annotations

import torch

from diffzoo.core.errors import check_int, check_tensor

Tensor = torch.Tensor


def to_tiles(x: Tensor, tile: int = 32) -> Tensor:
    """``(B, C, kT, mT) -> (B * k * m, C, T, T)`` in row-major tile order per image."""
    check_tensor(x, "image", ndim=4)
    check_int(tile, "tile", 1)
    b, c, h, w = x.shape
    if h % tile or w % tile:
        raise ValueError(f"image: sides must be multiples of tile={tile}, got {h}x{w}")
    k, m = h // tile, w // tile
    return x.reshape(b, c, k, tile, m, tile).permute(0, 2, 4, 1, 3, 5).reshape(b * k * m, c, tile, tile)


def from_tiles(t: Tensor, grid: tuple[int, int] = (2, 2)) -> Tensor:
    """Inverse of :func:`to_tiles`: ``(B * k * m, C, T, T) -> (B, C, kT, mT)``."""
    check_tensor(t, "tiles", ndim=4)
    k, m = grid
    n, c, h, w = t.shape
    if n % (k * m):
        raise ValueError(f"tiles: {n} tiles is not a multiple of {k}x{m}")
    return t.reshape(n // (k * m), k, m, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n // (k * m), c, k * h, m * w)
