"""One interface over real watermarking libraries and diffzoo's learned watermarks: embed/decode bits.

Real libraries (the optional extra ``provenance``; imported lazily, a missing one is a one-line error
naming the method and the fix):

* ``dwtDct``, ``dwtDctSvd``, ``rivaGan`` -- ``invisible-watermark`` (the Stable Diffusion reference
  watermark; ``imwatermark``). Its public ``WatermarkEncoder`` refuses images under 256x256 pixels in area,
  so we call its embedding classes (``EmbedMaxDct``, ``EmbedDwtDctSvd``, ``RivaWatermark``) directly,
  with our own capacity rule: the DWT-DCT methods put one bit per 4x4 block of the Haar LL band
  (``(H // 8) * (W // 8)`` blocks, repeated cyclically), so a message may be at most that long;
  RivaGAN (Zhang et al., arXiv 1909.01285) carries exactly 32 bits and needs sides >= 32 here.
* ``blind`` -- ``blind-watermark`` (DWT-DCT-SVD with a key): at most ``block_num - 1`` bits, where
  ``block_num = (ceil(H/2) // 4) * (ceil(W/2) // 4)``.

Network watermarks: :class:`NetworkWatermark` wraps a ``LearnedWatermark`` (``learned``) and
:class:`WOUAFWatermark` reads WOUAF fingerprints from images (embedding happens in the decoder).
Images are ``(B, 3, H, W)`` tensors in ``[-1, 1]``; bits ``(B, n)`` of 0/1; every ``embed`` quantises its
output to 8 bits (what a deployed image carries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from diffzoo.core.errors import check_choice, check_finite, check_tensor
from diffzoo.provenance.bits import check_bits

Tensor = torch.Tensor

INSTALL_HINT = "install the optional extra: pip install 'diffzoo[provenance]' (invisible-watermark, blind-watermark)"


def _check_images(x: Tensor, arg: str = "image") -> Tensor:
    check_tensor(x, arg, ndim=4, floating=True)
    if x.shape[1] != 3 or x.shape[0] == 0:
        raise ValueError(f"{arg}: expected a non-empty batch (B, 3, H, W), got shape {tuple(x.shape)}")
    check_finite(x, arg)
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"{arg}: pixel values must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]")
    return x


def quantize8(x: Tensor) -> Tensor:
    """Round to the 256 levels of an 8-bit image (in [-1, 1] units)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def _to_bgr(x: Tensor) -> list[np.ndarray]:
    arr = ((x.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a[..., ::-1]) for a in arr]


def _from_bgr(arrs: list[np.ndarray], like: Tensor) -> Tensor:
    t = torch.from_numpy(np.stack([np.ascontiguousarray(a[..., ::-1]) for a in arrs]).astype(np.float32))
    return (t.permute(0, 3, 1, 2) / 127.5 - 1).to(like.dtype).to(like.device)


@dataclass
class Watermark:
    """A bit watermark: ``embed(x, bits) -> x_w``, ``decode(x, n) -> bits``; ``capacity(h, w)`` bits
    (``None``: any), ``min_size`` pixels per side, ``fixed_bits`` (a method that takes one length only)."""

    name: str
    embed_fn: Callable[[Tensor, Tensor], Tensor]
    decode_fn: Callable[[Tensor, int], Tensor]
    capacity_fn: Callable[[int, int], int]
    min_size: int = 8
    fixed_bits: int | None = None
    differentiable_decoder: Callable[[Tensor], Tensor] | None = None

    def capacity(self, h: int, w: int) -> int:
        return int(self.capacity_fn(h, w))

    def check(self, x: Tensor, n: int) -> None:
        _check_images(x)
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            raise ValueError(f"image: {self.name} needs at least {self.min_size}x{self.min_size} pixels, got {h}x{w}")
        if self.fixed_bits is not None and n != self.fixed_bits:
            raise ValueError(f"bits: {self.name} carries exactly {self.fixed_bits} bits, got {n}")
        cap = self.capacity(h, w)
        if n > cap:
            raise ValueError(
                f"bits: a {n}-bit message exceeds {self.name}'s capacity of {cap} bits at {h}x{w}; "
                "use a shorter message or a larger image"
            )

    def embed(self, x: Tensor, bits: Tensor) -> Tensor:
        bits = check_bits(bits)
        _check_images(x)
        if bits.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"bits: batch {bits.shape[0]} does not match the images' batch {x.shape[0]}")
        self.check(x, bits.shape[1])
        return quantize8(self.embed_fn(x, bits.expand(x.shape[0], -1)))

    def decode(self, x: Tensor, n: int) -> Tensor:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"bits: expected a positive message length, got {n!r}")
        self.check(x, n)
        return self.decode_fn(x, n).float()


def _imwatermark(method: str) -> Any:
    try:
        from imwatermark import dwtDctSvd, maxDct, rivaGan  # noqa: F401
    except ImportError as e:
        raise ValueError(f"method: {method!r} needs invisible-watermark ({e}); {INSTALL_HINT}") from None
    return maxDct, dwtDctSvd, rivaGan


def _dct_capacity(h: int, w: int) -> int:
    return (h // 8) * (w // 8)


def _dwt_embed(cls_name: str) -> tuple[Callable, Callable]:
    def embed(x: Tensor, bits: Tensor) -> Tensor:
        maxdct, svd, _ = _imwatermark(cls_name)
        cls = maxdct.EmbedMaxDct if cls_name == "dwtDct" else svd.EmbedDwtDctSvd
        out = [cls(list(b.int().tolist()), wmLen=len(b)).encode(a) for a, b in zip(_to_bgr(x), bits)]
        return _from_bgr(out, x)

    def decode(x: Tensor, n: int) -> Tensor:
        maxdct, svd, _ = _imwatermark(cls_name)
        cls = maxdct.EmbedMaxDct if cls_name == "dwtDct" else svd.EmbedDwtDctSvd
        return torch.tensor(np.stack([np.asarray(cls([], wmLen=n).decode(a), dtype=np.float32) for a in _to_bgr(x)]))

    return embed, decode


def _riva_embed(x: Tensor, bits: Tensor) -> Tensor:
    _, _, riva = _imwatermark("rivaGan")
    riva.RivaWatermark.loadModel()
    out = [riva.RivaWatermark(list(b.int().tolist()), 32).encode(a) for a, b in zip(_to_bgr(x), bits)]
    return _from_bgr(out, x)


def _riva_decode(x: Tensor, n: int) -> Tensor:
    _, _, riva = _imwatermark("rivaGan")
    riva.RivaWatermark.loadModel()
    return torch.tensor(np.stack([riva.RivaWatermark([], 32).decode(a).astype(np.float32) for a in _to_bgr(x)]))


def _blind() -> Any:
    try:
        from blind_watermark import WaterMark, bw_notes
    except ImportError as e:
        raise ValueError(f"method: 'blind' needs blind-watermark ({e}); {INSTALL_HINT}") from None
    bw_notes.close()
    return WaterMark


def _blind_capacity(h: int, w: int) -> int:
    return max(0, (math.ceil(h / 2) // 4) * (math.ceil(w / 2) // 4) - 1)


def _blind_embed(x: Tensor, bits: Tensor) -> Tensor:
    wm_cls = _blind()
    out = []
    for a, b in zip(_to_bgr(x), bits):
        bwm = wm_cls(password_img=1, password_wm=1)
        bwm.read_img(img=a.astype(np.float32))
        bwm.read_wm([bool(v) for v in b.int().tolist()], mode="bit")
        out.append(np.clip(bwm.embed(), 0, 255).round().astype(np.uint8))
    return _from_bgr(out, x)


def _blind_decode(x: Tensor, n: int) -> Tensor:
    wm_cls = _blind()
    res = []
    for a in _to_bgr(x):
        bwm = wm_cls(password_img=1, password_wm=1)
        res.append(
            (np.asarray(bwm.extract(embed_img=a.astype(np.float32), wm_shape=n, mode="bit")) > 0.5).astype(np.float32)
        )
    return torch.tensor(np.stack(res))


def library_available(name: str) -> bool:
    """Whether the library behind watermark ``name`` imports."""
    try:
        (_blind if name == "blind" else (lambda: _imwatermark(name)))()
        return True
    except ValueError:
        return False


_dwt = _dwt_embed("dwtDct")
_svd = _dwt_embed("dwtDctSvd")

#: Real library watermarks: name -> :class:`Watermark`.
WATERMARKS: dict[str, Watermark] = {
    "dwtDct": Watermark("dwtDct", _dwt[0], _dwt[1], _dct_capacity, min_size=8),
    "dwtDctSvd": Watermark("dwtDctSvd", _svd[0], _svd[1], _dct_capacity, min_size=8),
    "rivaGan": Watermark("rivaGan", _riva_embed, _riva_decode, lambda h, w: 32, min_size=32, fixed_bits=32),
    "blind": Watermark("blind", _blind_embed, _blind_decode, _blind_capacity, min_size=16),
}


def get_watermark(name: str) -> Watermark:
    check_choice(name, WATERMARKS, "method")
    return WATERMARKS[name]


def network_watermark(net: Any, name: str = "learned") -> Watermark:
    """A :class:`Watermark` over a ``LearnedWatermark``-like network (``embed(x, bits)``, ``net(x) -> logits``);
    its decoder is differentiable (``differentiable_decoder``), so guided attacks can use it."""
    bits_n = int(net.bits)

    def embed(x: Tensor, bits: Tensor) -> Tensor:
        with torch.no_grad():
            return net.embed(x, bits)

    def decode(x: Tensor, n: int) -> Tensor:
        with torch.no_grad():
            return (net(x) > 0).float()

    return Watermark(
        name, embed, decode, lambda h, w: bits_n, min_size=16, fixed_bits=bits_n, differentiable_decoder=net
    )


def _decode_only(name: str, bits_n: int, logits: Callable[[Tensor], Tensor]) -> Watermark:
    """A decode-only :class:`Watermark` over differentiable ``logits(image)``: a generative watermark."""

    def embed(x: Tensor, bits: Tensor) -> Tensor:
        raise ValueError(f"method: {name}'s mark is generated with the image (see `diffzoo sample`), not added to one")

    def decode(x: Tensor, n: int) -> Tensor:
        with torch.no_grad():
            return (logits(x) > 0).float()

    return Watermark(
        name, embed, decode, lambda h, w: bits_n, min_size=16, fixed_bits=bits_n, differentiable_decoder=logits
    )


def latent_reader(net: Any, model: Any, name: str = "safe-sd") -> Watermark:
    """Safe-SD-style's watermark, read in latent space: bits are ``net(model.encode_image(x)) > 0`` (decode-only;
    the composite is differentiable, so guided attacks can use it)."""
    return _decode_only(name, int(net.bits), lambda x: net(model.encode_image(x)))


def fingerprint_reader(net: Any, name: str = "wouaf") -> Watermark:
    """WOUAF's fingerprint decoder as a decode-only :class:`Watermark` (the fingerprint is generated by the
    modulated VAE decoder, not embedded afterwards)."""
    return _decode_only(name, int(net.bits), net)
