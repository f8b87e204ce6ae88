"""A text-conditional K-view denoiser of normal+depth maps: the network of the Direct2.5 analogue.

*Direct2.5: Diverse Text-to-3D Generation via Multi-view 2.5D Diffusion* (Lu et al., CVPR 2024,
arXiv 2311.15980) fine-tunes a 2-D diffusion UNet to denoise K views jointly by extending its
self-attention across the views (the tokens of all views attend to each other). :class:`MultiViewUNet`
keeps that mechanism at toy scale: one small UNet shared by the K views (``(B, K, C, H, W)`` inputs are
folded into ``(B K, C, H, W)``), each view told its camera by a learned view embedding; at the 8x8
level its self-attention layers run over the tokens of *all* K views when ``joint=True`` (cross-view
attention), or over each view's own tokens when ``joint=False`` -- the baseline "same network denoising
each view independently", identical parameters and equal compute up to the attention's token count.

Text conditioning: ``cond`` is ``(B, T)`` integer tokens (slot ``i`` of ``T``; 0 is the null token of
classifier-free guidance, ``cond=None`` means all-null), embedded per slot and added to the time embedding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_tensor
from diffzoo.models.mlp import TimeMLP
from diffzoo.models.registry import register_arch
from diffzoo.models.unet import ResBlock, _norm

Tensor = torch.Tensor


class ViewAttention(nn.Module):
    """Multi-head self-attention over ``(B K, C, h, w)`` features, across the K views when ``joint``."""

    def __init__(self, ch: int, views: int, heads: int = 4, joint: bool = True):
        super().__init__()
        self.views, self.heads, self.joint = int(views), int(heads), bool(joint)
        self.norm = _norm(ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = nn.Linear(ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        bk, c, h, w = x.shape
        tok = self.norm(x).flatten(2).transpose(1, 2)  # (BK, hw, C)
        if self.joint:
            tok = tok.reshape(bk // self.views, self.views * h * w, c)
        q, k, v = self.qkv(tok).unflatten(-1, (3, self.heads, c // self.heads)).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        out = self.proj(out).reshape(bk, h * w, c).transpose(1, 2).reshape(bk, c, h, w)
        return x + out


class MultiViewUNet(nn.Module):
    """epsilon-UNet for ``(B, views, in_ch, res, res)`` with cross-view (``joint``) or per-view attention."""

    def __init__(
        self,
        views: int = 4,
        in_ch: int = 4,
        res: int = 16,
        ch: int = 32,
        emb_dim: int = 128,
        vocab_size: int = 14,
        num_tokens: int = 3,
        heads: int = 4,
        joint: bool = True,
    ):
        super().__init__()
        if res % 2:
            raise ValueError(f"res: expected an even resolution, got {res}")
        self.views, self.in_ch, self.res, self.joint = int(views), int(in_ch), int(res), bool(joint)
        self.vocab_size, self.num_tokens = int(vocab_size), int(num_tokens)
        self.sample_shape = (self.views, self.in_ch, self.res, self.res)
        c2 = 2 * ch
        self.time = TimeMLP(ch, emb_dim)
        self.text = nn.Embedding(self.num_tokens * self.vocab_size, emb_dim)
        self.view = nn.Embedding(self.views, emb_dim)
        self.pos = nn.Parameter(torch.zeros(self.views, c2, res // 2, res // 2))
        self.inp = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.d1 = ResBlock(ch, ch, emb_dim)
        self.down = nn.Conv2d(ch, c2, 3, stride=2, padding=1)
        self.d2 = ResBlock(c2, c2, emb_dim)
        self.attn1 = ViewAttention(c2, self.views, heads, joint)
        self.mid = ResBlock(c2, c2, emb_dim)
        self.attn2 = ViewAttention(c2, self.views, heads, joint)
        self.u2 = ResBlock(2 * c2, c2, emb_dim)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, ch, 3, padding=1))
        self.u1 = ResBlock(2 * ch, ch, emb_dim)
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, in_ch, 3, padding=1))

    def embed(self, t: Tensor, cond: Any, b: int, device: torch.device) -> Tensor:
        """Per-view embeddings ``(B K, emb)``: time + text tokens + view."""
        t = t.expand(b) if t.ndim == 0 else t
        emb = self.time(t.to(device).float())
        if cond is not None:
            tok = torch.as_tensor(cond, device=device).long()
            check_tensor(tok, "cond", ndim=2, shape=(b, self.num_tokens))
            if int(tok.min()) < 0 or int(tok.max()) >= self.vocab_size:
                raise ValueError(f"cond: token ids must lie in [0, {self.vocab_size}), got [{tok.min()}, {tok.max()}]")
        else:
            tok = torch.zeros(b, self.num_tokens, dtype=torch.long, device=device)
        slots = torch.arange(self.num_tokens, device=device) * self.vocab_size
        emb = emb + self.text(tok + slots).sum(1)
        emb = emb[:, None] + self.view.weight[None]
        return emb.reshape(b * self.views, -1)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        check_tensor(x, "x", ndim=5, shape=(None, self.views, self.in_ch, self.res, self.res))
        b = x.shape[0]
        emb = self.embed(t, cond, b, x.device)
        h0 = self.inp(x.reshape(b * self.views, self.in_ch, self.res, self.res))
        h1 = self.d1(h0, emb)
        h2 = self.d2(self.down(h1), emb) + self.pos.repeat(b, 1, 1, 1)
        h = self.attn2(self.mid(self.attn1(h2), emb))
        h = self.up(self.u2(torch.cat([h, h2], 1), emb))
        h = self.u1(torch.cat([h, h1], 1), emb)
        return self.out(h).reshape(x.shape)


@register_arch("multiview_unet")
def build_multiview_unet(**config: Any) -> MultiViewUNet:
    return MultiViewUNet(**config)
