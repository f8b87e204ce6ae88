"""Wavelet-gated slim UNet of Spectral Diffusion (Yang, Zhou, Feng, Wang, "Diffusion Probabilistic Model
Made Slim", CVPR 2023, arXiv 2211.17106). Official code was not found; the blocks follow the paper's
description as re-derived in public sources (BRIEFS-addendum, section 5), so the network is "-style".

* :func:`haar_dwt` / :func:`haar_idwt`: the orthonormal 2-D Haar transform of each 2x2 block
  ``[[a, b], [c, d]]``: ``LL = (a+b+c+d)/2``, ``LH = (a+b-c-d)/2``, ``HL = (a-b+c-d)/2``, ``HH = (a-b-c+d)/2``
  (PyWavelets' ``dwt2(x, 'haar')`` = ``(LL, (LH, HL, HH))``, tested); the inverse is exact.
* :class:`WGDown` (replaces the strided convolution): DWT -> four sub-bands, gated channel-wise by a
  squeeze network on the block input (global average pool -> Linear -> SiLU -> Linear -> sigmoid, one gate per
  sub-band channel: time-adaptive because the features are), concatenated and mixed by a 1x1 convolution
  (the concat + 1x1 variant of the DKDM re-implementation; ``mode="sum"`` is the blog's plain gated sum).
* :class:`WGUp` (replaces nearest upsampling + conv): a ``kernel x kernel`` convolution to four sub-band
  groups, gated the same way, then the inverse DWT (2x the resolution). With ``kernel = 3`` (the default,
  our choice) it costs exactly what the plain layer costs (a 3x3 conv at the upsampled resolution), so the
  arms compare at equal MACs; ``kernel = 1`` is the DKDM-style 1x1 projection.
* :class:`WaveletUNet`: :class:`~diffzoo.models.unet.DigitsUNet` with every down/up-sampling layer replaced
  by the WG blocks (``wavelet=False`` keeps the plain layers: the "plain slim" arm of the same width).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_choice, check_tensor
from diffzoo.models.registry import register_arch
from diffzoo.models.unet import DigitsUNet

Tensor = torch.Tensor


def haar_dwt(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, 4, C, H/2, W/2)``: the sub-bands ``LL, LH, HL, HH`` (orthonormal Haar)."""
    check_tensor(x, "x", ndim=4, floating=True)
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"x: the Haar DWT needs even height and width, got {tuple(x.shape[-2:])}")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return 0.5 * torch.stack([a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d], 1)


def haar_idwt(bands: Tensor) -> Tensor:
    """The exact inverse of :func:`haar_dwt`: ``(B, 4, C, h, w) -> (B, C, 2h, 2w)``."""
    check_tensor(bands, "bands", ndim=5, floating=True)
    if bands.shape[1] != 4:
        raise ValueError(f"bands: expected 4 sub-bands in dim 1, got {bands.shape[1]}")
    ll, lh, hl, hh = bands.unbind(1)
    b, ch, h, w = ll.shape
    out = ll.new_empty(b, ch, 2 * h, 2 * w)
    out[..., 0::2, 0::2] = 0.5 * (ll + lh + hl + hh)
    out[..., 0::2, 1::2] = 0.5 * (ll + lh - hl - hh)
    out[..., 1::2, 0::2] = 0.5 * (ll - lh + hl - hh)
    out[..., 1::2, 1::2] = 0.5 * (ll - lh - hl + hh)
    return out


class SubbandGate(nn.Module):
    """Channel-wise sigmoid gates for ``4 * ch`` sub-band channels from the input's global average."""

    def __init__(self, cin: int, ch: int, hidden: int = 8):
        super().__init__()
        self.ch = ch
        self.net = nn.Sequential(nn.Linear(cin, hidden), nn.SiLU(), nn.Linear(hidden, 4 * ch))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(x.mean((-2, -1)))).reshape(x.shape[0], 4, self.ch, 1, 1)


class WGDown(nn.Module):
    """Wavelet-gated downsampling ``(B, C, H, W) -> (B, C, H/2, W/2)``."""

    def __init__(self, ch: int, mode: str = "conv", hidden: int = 8):
        super().__init__()
        self.mode = check_choice(mode, ("conv", "sum"), "mode")
        self.gate = SubbandGate(ch, ch, hidden)
        self.mix = nn.Conv2d(4 * ch, ch, 1) if mode == "conv" else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        bands = haar_dwt(x) * self.gate(x)
        return bands.sum(1) if self.mode == "sum" else self.mix(bands.flatten(1, 2))


class WGUp(nn.Module):
    """Wavelet-gated upsampling ``(B, C, h, w) -> (B, C, 2h, 2w)``: 1x1 conv to 4 gated sub-bands, inverse DWT."""

    def __init__(self, ch: int, hidden: int = 8, kernel: int = 3):
        super().__init__()
        self.ch = ch
        self.expand = nn.Conv2d(ch, 4 * ch, kernel, padding=kernel // 2)
        self.gate = SubbandGate(ch, ch, hidden)

    def forward(self, x: Tensor) -> Tensor:
        bands = self.expand(x).reshape(x.shape[0], 4, self.ch, *x.shape[-2:])
        return haar_idwt(bands * self.gate(x))


class WaveletUNet(DigitsUNet):
    """A slim :class:`~diffzoo.models.unet.DigitsUNet` whose down/up-sampling layers are WG blocks."""

    def __init__(
        self, wavelet: bool = True, wg_mode: str = "conv", gate_hidden: int = 8, up_kernel: int = 3, **kw: Any
    ):
        if "mults" in kw:
            kw["mults"] = tuple(kw["mults"])
        super().__init__(**kw)
        self.wavelet = bool(wavelet)
        if self.wavelet:
            self.downsample = nn.ModuleList(WGDown(m.in_channels, wg_mode, gate_hidden) for m in self.downsample)
            self.upsample = nn.ModuleList(WGUp(m[1].in_channels, gate_hidden, up_kernel) for m in self.upsample)


@register_arch("wavelet_unet")
def build_wavelet_unet(**config: Any) -> WaveletUNet:
    return WaveletUNet(**config)
