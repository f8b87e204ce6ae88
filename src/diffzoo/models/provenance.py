"""Networks of the provenance family: a StegaStamp-style learned watermark and WOUAF's fingerprinted decoder.

* :class:`LearnedWatermark` -- encoder ``(image, bits) -> residual`` and decoder ``image -> bit logits``,
  StegaStamp-style (Tancik et al., *StegaStamp: Invisible Hyperlinks in Physical Photographs*, arXiv
  1904.05343): the message is mapped by a linear layer to a coarse 3-channel spatial map, upsampled to
  the image, concatenated with it and turned into a bounded residual ``tanh(CNN([x, m]) + m)`` (the
  direct ``+ m`` path is ours: without it the residual collapsed to zero in short CPU trainings); the
  decoder is a strided CNN pooled to 4x4 and a linear layer (StegaStamp flattens its features). With
  ``tile`` set, a larger image is watermarked tile by tile (every tile carries the whole message) and its
  bit logits are averaged over the tiles -- the network is trained on 32x32 tiles, 4x cheaper than 64x64
  mosaics. Trained end to end with differentiable attacks by
  ``diffzoo train learned-watermark``. A reduced reconstruction: no spatial-transformer network, no LPIPS,
  no critic.
* :class:`WOUAFDecoder` -- WOUAF (Kim et al., *WOUAF: Weight Modulation for User Attribution and
  Fingerprinting in Text-to-Image Diffusion Models*, CVPR 2024, arXiv 2306.04744; official
  ``kylemin/WOUAF``): a copy of TinySD's VAE decoder whose every ResNet convolution and attention
  q/k/v projection is weight-modulated by a user fingerprint: ``phi in {0,1}^n -> M (2 FC) -> w``,
  per layer ``s = A_l(w) in R^{C_in}`` (bias initialised to 1, weight to 0: identity at start) and
  ``W'[o, i] = s_i W[o, i]`` with no demodulation. Scaling input channel ``i`` of the weight equals
  scaling input channel ``i`` of the layer's input (also with zero padding), so the per-sample grouped
  convolution of the paper is computed exactly as ``conv(x * s)``; a fingerprint decoder (a small CNN, the
  paper uses a ResNet-50) reads ``phi`` back from the image.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.models.registry import register_arch
from diffzoo.models.tinysd import build_vae

Tensor = torch.Tensor


class BitDecoder(nn.Module):
    """Strided CNN + 4x4 average pooling + linear: image ``(B, 3, H, W)`` in ``[-1, 1]`` -> ``(B, bits)`` logits
    (``in_channels=4, strided=1``: reads 8x8 VAE latents instead)."""

    def __init__(self, bits: int = 32, width: int = 32, depth: int = 4, in_channels: int = 3, strided: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = int(in_channels)
        for i in range(depth):
            out = width * min(2**i, 4)
            layers += [nn.Conv2d(c, out, 3, stride=2 if i < strided else 1, padding=1), nn.GELU()]
            c = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c * 16, bits)
        self.bits = int(bits)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "image", ndim=4, floating=True)
        # pool to 4x4, not 1x1: a message laid out spatially must keep its layout (global pooling could
        # not learn at all in our trainings)
        return self.head(F.adaptive_avg_pool2d(self.body(x), 4).flatten(1))


class LearnedWatermark(nn.Module):
    """StegaStamp-style encoder/decoder pair (see the module docstring).

    ``embed(x, bits) = clamp(x + strength * tanh(E(x, m)), -1, 1)`` with ``m = 2 bits - 1``;
    ``forward(x) = decode(x)`` returns bit logits (bit 1 where the logit is positive).

    ``channels=4, clamp=False, read_latents=True`` makes it Safe-SD-style's latent watermark: ``embed`` fuses
    the message into TinySD's scaled VAE latents (unbounded) and ``forward`` reads it back from latents --
    of an image, ``s * mean(E(x))`` (:func:`diffzoo.provenance.latent_reader` composes the two). Reading
    the decoded *image* directly did not learn at all in 600 steps (a one-off probe: bit accuracy 0.50).
    """

    def __init__(
        self,
        bits: int = 32,
        width: int = 32,
        map_size: int = 16,
        strength: float = 0.05,
        tile: int = 0,
        channels: int = 3,
        clamp: bool = True,
        read_latents: bool = False,
    ):
        super().__init__()
        self.bits, self.map_size, self.strength, self.tile = int(bits), int(map_size), float(strength), int(tile)
        self.channels, self.clamp, self.read_latents = int(channels), bool(clamp), bool(read_latents)
        self.msg = nn.Linear(bits, channels * map_size * map_size)
        self.enc = nn.Sequential(
            nn.Conv2d(2 * channels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        self.decoder = (
            BitDecoder(bits, width, in_channels=channels, strided=1) if read_latents else BitDecoder(bits, width)
        )

    def residual(self, x: Tensor, bits: Tensor) -> Tensor:
        check_tensor(x, "image", ndim=4, floating=True)
        check_tensor(bits, "bits", ndim=2)
        if bits.shape != (x.shape[0], self.bits):
            raise ValueError(f"bits: expected shape ({x.shape[0]}, {self.bits}), got {tuple(bits.shape)}")
        if x.shape[1] != self.channels:
            raise ValueError(f"image: expected {self.channels} channels, got shape {tuple(x.shape)}")
        m = self.msg(2 * bits.to(x.dtype) - 1).view(-1, self.channels, self.map_size, self.map_size)
        m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)
        # the message pattern is also added directly (a learned spread-spectrum carrier the CNN adapts to
        # the content): the decoder sees a message-dependent signal from the first step
        return torch.tanh(self.enc(torch.cat([x, m], 1)) + m)

    def _split(self, x: Tensor) -> tuple[Tensor, int, int]:
        """``tile`` > 0 and a larger image: its ``tile x tile`` tiles as a batch (each carries the message)."""
        t = self.tile
        b, c, h, w = x.shape
        if t <= 0 or (h == t and w == t):
            return x, 1, 1
        if h % t or w % t:
            raise ValueError(f"image: sides must be multiples of the watermark's tile size {t}, got {h}x{w}")
        k, m = h // t, w // t
        return x.reshape(b, c, k, t, m, t).permute(0, 2, 4, 1, 3, 5).reshape(b * k * m, c, t, t), k, m

    def embed(self, x: Tensor, bits: Tensor) -> Tensor:
        check_tensor(x, "image", ndim=4, floating=True)
        xt, k, m = self._split(x)
        bt = bits.repeat_interleave(k * m, 0) if k * m > 1 else bits
        y = xt + self.strength * self.residual(xt, bt)
        y = y.clamp(-1, 1) if self.clamp else y
        if k * m == 1:
            return y
        b, c, t = x.shape[0], x.shape[1], self.tile
        return y.reshape(b, k, m, c, t, t).permute(0, 3, 1, 4, 2, 5).reshape(x.shape)

    def forward(self, x: Tensor) -> Tensor:
        """Bit logits; a tiled image's logits are the mean over its tiles."""
        check_tensor(x, "image", ndim=4, floating=True)
        xt, k, m = self._split(x)
        return self.decoder(xt).reshape(x.shape[0], k * m, self.bits).mean(1)


@register_arch("learned-watermark")
def build_learned_watermark(**config: Any) -> LearnedWatermark:
    return LearnedWatermark(**config)


# -------------------------------------------------------------------------------------------------
# WOUAF
# -------------------------------------------------------------------------------------------------


class Modulated(nn.Module):
    """``layer(x * s)`` with ``s = affine(w)`` per sample: WOUAF's ``W'[o, i] = s_i W[o, i]`` (no demodulation).

    ``w`` is set by the owning :class:`WOUAFDecoder` before each decode (``None``: the plain layer).
    """

    def __init__(self, layer: nn.Module, in_features: int, w_dim: int):
        super().__init__()
        self.layer = layer
        self.affine = nn.Linear(w_dim, in_features)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)
        self.w: Tensor | None = None

    def forward(self, x: Tensor, *args: Any, **kw: Any) -> Tensor:
        if self.w is None:
            return self.layer(x, *args, **kw)
        s = self.affine(self.w)
        if x.shape[0] != s.shape[0]:
            raise ValueError(f"fingerprint: batch {s.shape[0]} does not match the latents' batch {x.shape[0]}")
        s = s[:, :, None, None] if x.ndim == 4 else s[:, None, :]
        return self.layer(x * s, *args, **kw)


class WOUAFDecoder(nn.Module):
    """A TinySD VAE decoder modulated by a fingerprint, plus the fingerprint decoder (see module docstring).

    ``decode(z, phi)``: ``z`` are *scaled* latents (``s * E(x)``, the UNet's space), ``phi`` ``(B, bits)`` in
    {0, 1} (``None``: the unmodulated decoder, which equals the copied original exactly); returns images in
    ``[-1, 1]``. ``forward(x)`` is the fingerprint decoder's logits.
    """

    def __init__(
        self,
        vae: dict[str, Any] | None = None,
        bits: int = 32,
        w_dim: int = 128,
        detector_width: int = 32,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        full = build_vae(**(vae or {}))
        self.decoder = full.decoder
        self.post_quant_conv = full.post_quant_conv
        self.bits, self.w_dim, self.scaling_factor = int(bits), int(w_dim), float(scaling_factor)
        self.mapping = nn.Sequential(nn.Linear(bits, w_dim), nn.LeakyReLU(0.2), nn.Linear(w_dim, w_dim))
        self.detector = BitDecoder(bits, detector_width)
        self.modulated: list[Modulated] = []
        for parent in list(self.decoder.modules()):
            for name in ("conv1", "conv2", "to_q", "to_k", "to_v"):
                layer = getattr(parent, name, None)
                if isinstance(layer, nn.Conv2d):
                    mod = Modulated(layer, layer.in_channels, w_dim)
                elif isinstance(layer, nn.Linear):
                    mod = Modulated(layer, layer.in_features, w_dim)
                else:
                    continue
                setattr(parent, name, mod)
                self.modulated.append(mod)

    def init_affines(self, std: float) -> None:
        """Affine weights ~ N(0, std^2) (bias stays 1). ``std = 0`` is the exact identity; the official code's
        StyleGAN fully-connected layers start at ``1 / sqrt(w_dim)``, a small random modulation."""
        for m in self.modulated:
            if std > 0:
                nn.init.normal_(m.affine.weight, std=float(std))
            else:
                nn.init.zeros_(m.affine.weight)

    def load_vae_decoder(self, vae: nn.Module) -> None:
        """Copy a diffusers ``AutoencoderKL``'s decoder weights (the modulation stays at identity)."""
        own = self.decoder.state_dict()
        src = vae.decoder.state_dict()
        mapped = {}
        for k in own:
            plain = k.replace(".layer.", ".")
            if ".affine." in k:
                continue
            mapped[k] = src[plain]
        self.decoder.load_state_dict(mapped, strict=False)
        self.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())

    def decode(self, z: Tensor, phi: Tensor | None) -> Tensor:
        check_tensor(z, "latents", ndim=4, floating=True)
        w = None
        if phi is not None:
            check_tensor(phi, "fingerprint", ndim=2)
            if phi.shape != (z.shape[0], self.bits):
                raise ValueError(f"fingerprint: expected shape ({z.shape[0]}, {self.bits}), got {tuple(phi.shape)}")
            w = self.mapping(2 * phi.to(z.dtype) - 1)
        for m in self.modulated:
            m.w = w
        try:
            return self.decoder(self.post_quant_conv(z / self.scaling_factor)).clamp(-1, 1)
        finally:
            for m in self.modulated:
                m.w = None

    def forward(self, x: Tensor) -> Tensor:
        return self.detector(x)


@register_arch("wouaf-decoder")
def build_wouaf_decoder(**config: Any) -> WOUAFDecoder:
    return WOUAFDecoder(**config)


__all__: Sequence[str] = (
    "BitDecoder",
    "LearnedWatermark",
    "Modulated",
    "WOUAFDecoder",
    "build_learned_watermark",
    "build_wouaf_decoder",
)
