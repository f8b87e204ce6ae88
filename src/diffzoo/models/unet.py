"""A small class-conditional UNet for 8x8 digits (Ho et al. 2020 UNet, shrunk).

Layout (``ch=64``): 8x8 [ResBlock x2] -> down -> 4x4 [ResBlock x2] -> mid [ResBlock, self-attention,
ResBlock] -> 4x4 [ResBlock x2, concat skips] -> up -> 8x8 [ResBlock x2, concat skips] -> conv out.
Each ResBlock adds the (time + class) embedding after its first convolution (DDPM, App. B).
Class conditioning: ``cond`` is an integer label in ``0..num_classes-1``; the extra label
``num_classes`` is the *null* class used for classifier-free guidance (Ho & Salimans 2022, Sec. 3.2);
``cond=None`` means the null class. ``encode``/``decode`` expose the encoder/decoder split
(Faster Diffusion, Li et al. 2023) and the skip features.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.models.mlp import TimeMLP
from diffzoo.models.registry import register_arch

Tensor = torch.Tensor


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + embedding, GroupNorm-SiLU-conv, with a 1x1 skip when channels change."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.block1 = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.block2 = nn.Sequential(_norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.block1(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.block2(h)


class SelfAttention(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        out = nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class DigitsUNet(nn.Module):
    """Class-conditional epsilon-UNet for ``(B, in_ch, 8, 8)`` inputs."""

    def __init__(
        self,
        in_ch: int = 1,
        ch: int = 64,
        mults: tuple[int, ...] = (1, 2),
        blocks: int = 2,
        num_classes: int = 10,
        emb_dim: int = 128,
        time_scale: float = 1.0,
        attention: bool = True,
    ):
        super().__init__()
        self.in_ch, self.num_classes = int(in_ch), int(num_classes)
        self.sample_shape = (self.in_ch, 8, 8)  # the resolution it is built for
        self.time = TimeMLP(ch, emb_dim, time_scale)
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.inp = nn.Conv2d(in_ch, ch, 3, padding=1)
        chans = [ch * m for m in mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, cur = [ch], ch
        for i, c in enumerate(chans):
            for _ in range(blocks):
                self.down.append(ResBlock(cur, c, emb_dim))
                cur = c
                skips.append(cur)
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid1 = ResBlock(cur, cur, emb_dim)
        self.attn = SelfAttention(cur) if attention else nn.Identity()
        self.mid2 = ResBlock(cur, cur, emb_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c in reversed(list(enumerate(chans))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), c, emb_dim))
                cur = c
            if i > 0:
                self.upsample.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1))
                )
        self.out = nn.Sequential(_norm(cur), nn.SiLU(), nn.Conv2d(cur, in_ch, 3, padding=1))
        self.mults, self.blocks = tuple(mults), int(blocks)

    def embed(self, t: Tensor, cond: Any, batch: int, device: torch.device) -> Tensor:
        """Time embedding plus class embedding (``cond=None`` -> the null class)."""
        t = t.expand(batch) if t.ndim == 0 else t
        emb = self.time(t.to(device))
        if self.label is not None:
            labels = torch.full((batch,), self.num_classes, device=device) if cond is None else cond.to(device)
            emb = emb + self.label(labels.long())
        return emb

    def encode(self, x: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoder + middle block: returns the bottleneck features and the skip features."""
        h = self.inp(x)
        hs = [h]
        blk = iter(self.down)
        for i in range(len(self.mults)):
            for _ in range(self.blocks):
                h = next(blk)(h, emb)
                hs.append(h)
            if i < len(self.mults) - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        return h, hs

    def decode(self, h: Tensor, hs: list[Tensor], emb: Tensor) -> Tensor:
        """Decoder: consumes the skip features (a copy of the list is used)."""
        hs = list(hs)
        blk = iter(self.up)
        for j in range(len(self.mults)):
            for _ in range(self.blocks + 1):
                h = next(blk)(torch.cat([h, hs.pop()], 1), emb)
            if j < len(self.mults) - 1:
                h = self.upsample[j](h)
        return self.out(h)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        check_tensor(x, "x", ndim=4)
        emb = self.embed(t, cond, x.shape[0], x.device)
        h, hs = self.encode(x, emb)
        return self.decode(h, hs, emb)


@register_arch("digits_unet")
def build_digits_unet(**config: Any) -> DigitsUNet:
    if "mults" in config:
        config["mults"] = tuple(config["mults"])
    return DigitsUNet(**config)


class PatchUNet(nn.Module):
    """A :class:`DigitsUNet` run on ``p x p`` pixel patches: ``pixel_unshuffle`` folds a ``(B, C, S, S)``
    image into ``(B, C p^2, S/p, S/p)``, the UNet denoises that, and ``pixel_shuffle`` unfolds its output.
    The same network at ``1/p^2`` of the convolution cost -- what makes a 32x32 pixel DDPM trainable and
    samplable for 1000 ancestral steps on a CPU (used for the hallucination paper's SIMPLE SHAPES)."""

    def __init__(self, in_ch: int = 1, size: int = 32, patch: int = 2, **unet: Any):
        super().__init__()
        if size % patch:
            raise ValueError(f"size: {size} is not a multiple of patch {patch}")
        self.patch = int(patch)
        self.unet = DigitsUNet(in_ch=in_ch * self.patch**2, **unet)
        self.in_ch, self.num_classes = int(in_ch), self.unet.num_classes
        self.sample_shape = (self.in_ch, int(size), int(size))

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        check_tensor(x, "x", ndim=4, shape=(None, self.in_ch, None, None))
        if x.shape[-1] % self.patch or x.shape[-2] % self.patch:
            raise ValueError(f"x: spatial size {tuple(x.shape[-2:])} is not a multiple of patch {self.patch}")
        h = self.unet(nn.functional.pixel_unshuffle(x, self.patch), t, cond)
        return nn.functional.pixel_shuffle(h, self.patch)


@register_arch("patch_unet")
def build_patch_unet(**config: Any) -> PatchUNet:
    if "mults" in config:
        config["mults"] = tuple(config["mults"])
    return PatchUNet(**config)
