"""Attacks on image watermarks: classical post-processing and diffusion regeneration / guided editing.

Classical (WAVES-style distortions; all act on ``(B, 3, H, W)`` images in ``[-1, 1]`` and keep the size):
``jpeg`` (real JPEG through Pillow, quality ``q``), ``blur`` (Gaussian, sigma), ``noise`` (Gaussian, std in
[-1, 1] units), ``resize`` (down-scale by a factor and back), ``crop`` (centre crop keeping a fraction of
each side, resized back), ``rotation`` (degrees, bilinear, zero-padded corners), ``brightness`` (additive
shift, Pillow's ``ImageEnhance`` convention is multiplicative: we use ``x * factor`` on ``[0, 1]``).
Every one but ``jpeg`` is differentiable; :func:`jpeg_diff` is a differentiable JPEG approximation
(8x8 block DCT quantised with the standard luminance table, straight-through rounding) used in training,
and :func:`random_augment` draws one of them per batch (the "differentiable attacks" StegaStamp, arXiv
1904.05343, and WOUAF, arXiv 2306.04744, train through).

Diffusion attacks live in :mod:`diffzoo.provenance.regen` (regeneration, VAE round trip, guided, edit).
:data:`ATTACKS` maps every classical name to ``fn(x, strength, generator=None) -> x``.
"""

from __future__ import annotations

import io as _stdio
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffzoo.core.errors import check_choice, check_finite, check_range, check_tensor

Tensor = torch.Tensor


def _check(x: Tensor) -> Tensor:
    check_tensor(x, "image", ndim=4, floating=True)
    if x.shape[1] != 3:
        raise ValueError(f"image: expected 3 channels (B, 3, H, W), got shape {tuple(x.shape)}")
    return check_finite(x, "image")


def jpeg(x: Tensor, quality: float, generator: torch.Generator | None = None) -> Tensor:
    """Real JPEG compression (Pillow, 4:2:0 chroma subsampling) at ``quality`` in [1, 100]."""
    _check(x)
    check_range(quality, "strength", 1, 100)
    out = []
    arr = ((x.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for a in arr:
        buf = _stdio.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=int(round(quality)))
        buf.seek(0)
        out.append(torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()))
    return (torch.stack(out).permute(0, 3, 1, 2).to(x.dtype) / 127.5 - 1).to(x.device)


_LUMA = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float64,
)


def _dct_matrix(n: int = 8) -> Tensor:
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


def jpeg_diff(x: Tensor, quality: float, generator: torch.Generator | None = None) -> Tensor:
    """Differentiable JPEG-like distortion: per-channel 8x8 DCT, quantisation by the standard luminance
    table scaled for ``quality`` (the IJG rule), straight-through rounding. Sides must be multiples of 8."""
    _check(x)
    check_range(quality, "strength", 1, 100)
    b, c, h, w = x.shape
    if h % 8 or w % 8:
        raise ValueError(f"image: jpeg_diff needs sides that are multiples of 8, got {h}x{w}")
    q = float(quality)
    scale = 5000 / q if q < 50 else 200 - 2 * q
    table = ((_LUMA * scale + 50) / 100).floor().clamp(min=1).to(x)
    d = _dct_matrix().to(x)
    p = (x.clamp(-1, 1) + 1) * 127.5 - 128
    blocks = p.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)
    coef = d @ blocks @ d.T / table
    coef = coef + (coef.round() - coef).detach()
    rec = d.T @ (coef * table) @ d
    rec = rec.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)
    return ((rec + 128) / 127.5 - 1).clamp(-1, 1)


def blur(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels (kernel radius ``ceil(3 sigma)``, reflect padding)."""
    _check(x)
    check_range(sigma, "strength", 0, 20)
    if sigma < 1e-3:  # a kernel narrower than 1e-3 pixels is the identity (and would underflow)
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad_mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode=pad_mode), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode=pad_mode), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """Additive Gaussian noise of standard deviation ``std`` (images in [-1, 1]), clamped."""
    _check(x)
    check_range(std, "strength", 0, 2)
    e = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return (x + std * e).clamp(-1, 1)


def resize(x: Tensor, scale: float, generator: torch.Generator | None = None) -> Tensor:
    """Down-scale by ``scale`` in (0, 1] (bilinear, antialiased) and back up to the original size."""
    _check(x)
    check_range(scale, "strength", 0.05, 1)
    h, w = x.shape[-2:]
    small = F.interpolate(
        x,
        size=(max(1, round(h * scale)), max(1, round(w * scale))),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(-1, 1)


def crop(x: Tensor, keep: float, generator: torch.Generator | None = None) -> Tensor:
    """Centre crop keeping ``keep`` of each side, resized back (bilinear) to the original size."""
    _check(x)
    check_range(keep, "strength", 0.1, 1)
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
    t, left = (h - ch) // 2, (w - cw) // 2
    return F.interpolate(x[..., t : t + ch, left : left + cw], size=(h, w), mode="bilinear", align_corners=False).clamp(
        -1, 1
    )


def rotation(x: Tensor, degrees: float, generator: torch.Generator | None = None) -> Tensor:
    """Rotate by ``degrees`` about the centre (bilinear; corners filled with the image's mean colour)."""
    _check(x)
    check_range(degrees, "strength", -180, 180)
    a = math.radians(degrees)
    theta = torch.tensor(
        [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype, device=x.device
    )
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (F.grid_sample(x - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + mean).clamp(
        -1, 1
    )


def brightness(x: Tensor, factor: float, generator: torch.Generator | None = None) -> Tensor:
    """Multiply the ``[0, 1]`` intensities by ``factor`` (Pillow's ``ImageEnhance.Brightness``), clamped."""
    _check(x)
    check_range(factor, "strength", 0, 4)
    return ((x + 1) / 2 * factor).clamp(0, 1) * 2 - 1


#: Classical attacks: name -> ``fn(x, strength, generator=None)``.
ATTACKS: dict[str, Callable[..., Tensor]] = {
    "jpeg": jpeg,
    "jpeg_diff": jpeg_diff,
    "blur": blur,
    "noise": noise,
    "resize": resize,
    "crop": crop,
    "rotation": rotation,
    "brightness": brightness,
}
#: Strengths of the classical attacks in the benchmarks (moderate post-processing, as in WAVES/WOUAF).
CLASSICAL_GRID: dict[str, tuple[float, ...]] = {
    "jpeg": (90, 75, 50),
    "blur": (0.5, 1.0),
    "noise": (0.02, 0.05),
    "resize": (0.75, 0.5),
    "crop": (0.9, 0.8),
    "rotation": (5.0, 10.0),
    "brightness": (0.8, 1.2),
}
#: Identity strength of each classical attack (strength at which the attack returns the image).
IDENTITY = {
    "jpeg": None,
    "jpeg_diff": None,
    "blur": 0.0,
    "noise": 0.0,
    "resize": 1.0,
    "crop": 1.0,
    "rotation": 0.0,
    "brightness": 1.0,
}


def classical(name: str, x: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Run the classical attack ``name`` (see :data:`ATTACKS`)."""
    check_choice(name, ATTACKS, "method")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(f"strength: expected a number, got {type(strength).__name__}")
    return ATTACKS[name](x, float(strength), generator)


#: Ranges the training augmentation draws from (differentiable attacks only).
AUGMENT_RANGES: dict[str, tuple[float, float]] = {
    "jpeg_diff": (50, 95),
    "blur": (0.3, 1.2),
    "noise": (0.0, 0.06),
    "resize": (0.5, 1.0),
    "crop": (0.75, 1.0),
    "rotation": (-10.0, 10.0),
    "brightness": (0.75, 1.25),
}


#: the mildest (closest to the identity) strength of each training attack: ``level`` scales from here
AUGMENT_MILD: dict[str, float] = {
    "jpeg_diff": 95,
    "blur": 0.3,
    "noise": 0.0,
    "resize": 1.0,
    "crop": 1.0,
    "rotation": 0.0,
    "brightness": 1.0,
}


def random_augment(x: Tensor, generator: torch.Generator, p_identity: float = 0.2, level: float = 1.0) -> Tensor:
    """One random differentiable attack (uniform over :data:`AUGMENT_RANGES`, strength uniform in its
    range) applied to the whole batch, or the identity with probability ``p_identity``. ``level`` in
    ``[0, 1]`` moves the drawn strength toward the attack's mildest value (:data:`AUGMENT_MILD`): StegaStamp's
    curriculum ramps its perturbations in from zero."""
    check_range(level, "level", 0.0, 1.0)
    u = float(torch.rand((), generator=generator))
    if u < p_identity:
        return x
    names = list(AUGMENT_RANGES)
    name = names[int(torch.randint(len(names), (), generator=generator))]
    lo, hi = AUGMENT_RANGES[name]
    s = lo + (hi - lo) * float(torch.rand((), generator=generator))
    mild = AUGMENT_MILD[name]
    return ATTACKS[name](x, mild + level * (s - mild), generator)
