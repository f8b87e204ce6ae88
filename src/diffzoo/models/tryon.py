"""An inpainting try-on UNet with four garment-conditioning switches: the network of the IDM-VTON analogue.

*Improving Diffusion Models for Authentic Virtual Try-on in the Wild* (IDM-VTON, Choi et al., ECCV 2024,
arXiv 2403.05139; code ``yisol/IDM-VTON``): an inpainting TryonNet denoises the masked person; the
garment enters (1) through an image-prompt adapter, its image embedding attended by extra
cross-attention layers (high-level semantics), and (2) through GarmentNet, a parallel UNet whose
self-attention features are concatenated to TryonNet's self-attention keys and values (low-level
detail); (3) detailed garment captions. :class:`TryonUNet` is one small network holding every module,
and ``mode`` switches which conditioning path it uses, so the variants compare at equal size:

* ``concat`` -- the garment image resized to the canvas and concatenated as input channels (baseline);
* ``adapter`` -- the IP-Adapter analogue: a garment encoder pools the garment into ``ctx_tokens`` tokens
  that TryonNet's cross-attention layers attend to;
* ``reference`` -- the GarmentNet analogue: a convolutional reference network over the garment whose
  features at 8x8 and 4x4 are appended to the keys/values of TryonNet's self-attention at 12x12 and 6x6;
* ``full`` -- ``adapter`` + ``reference`` + the detailed caption's tokens appended to the cross-attention
  context (the paper's full model).

Input: ``x (B, 3, 24, 24)`` (the noisy try-on image; only its masked region is read), ``t (B,)``, and
``cond`` a dict with ``person`` (the masked person, ``(B, 3, 24, 24)``), ``mask`` (``(B, 1, 24, 24)``,
1 = region to fill), ``garment`` (``(B, 3, 16, 16)``) and ``tokens`` (``(B, 4)`` caption tokens, used by
``full``). The convolutional reference network stands in for the paper's UNet copy (our simplification).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_choice, check_tensor
from diffzoo.models.mlp import TimeMLP
from diffzoo.models.registry import register_arch
from diffzoo.models.unet import ResBlock, _norm

Tensor = torch.Tensor

MODES = ("concat", "adapter", "reference", "full")


def _mha(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Multi-head scaled dot-product attention on ``(B, N, C)`` tokens."""
    b, n, c = q.shape

    def split(z: Tensor) -> Tensor:
        return z.reshape(b, -1, heads, c // heads).transpose(1, 2)

    out = nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, n, c)


class TryonAttention(nn.Module):
    """Self-attention whose keys/values may be extended by reference tokens (GarmentNet-style), then
    cross-attention to context tokens (image-prompt adapter / caption), both residual."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = int(heads)
        self.norm1 = _norm(ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj1 = nn.Linear(ch, ch)
        self.norm2 = nn.LayerNorm(ch)
        self.q2 = nn.Linear(ch, ch)
        self.kv2 = nn.Linear(ch, 2 * ch)
        self.proj2 = nn.Linear(ch, ch)

    def forward(self, x: Tensor, ref: Tensor | None = None, ctx: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        tok = self.norm1(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tok).chunk(3, -1)
        if ref is not None:  # reference features (B, C, h', w') through the same key/value projections
            _, rk, rv = self.qkv(self.norm1(ref).flatten(2).transpose(1, 2)).chunk(3, -1)
            k, v = torch.cat([k, rk], 1), torch.cat([v, rv], 1)
        out = tok_in = x.flatten(2).transpose(1, 2) + self.proj1(_mha(q, k, v, self.heads))
        if ctx is not None:
            kk, vv = self.kv2(ctx).chunk(2, -1)
            out = tok_in + self.proj2(_mha(self.q2(self.norm2(tok_in)), kk, vv, self.heads))
        return out.transpose(1, 2).reshape(b, c, h, w)


class RefBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block without time conditioning (the reference network's block)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), _norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class TryonUNet(nn.Module):
    """Inpainting epsilon-UNet 24 -> 12 -> 6 with attention at 12 and 6; see the module docstring."""

    def __init__(
        self,
        mode: str = "full",
        canvas: int = 24,
        garment: int = 16,
        ch: int = 32,
        emb_dim: int = 128,
        ctx_tokens: int = 4,
        caption_vocab: int = 13,
        caption_len: int = 4,
        heads: int = 4,
    ):
        super().__init__()
        check_choice(mode, MODES, "mode")
        if canvas % 4 or garment % 4:
            raise ValueError(f"canvas: expected canvas and garment sizes divisible by 4, got {canvas}, {garment}")
        self.mode, self.canvas, self.garment_size = mode, int(canvas), int(garment)
        self.caption_vocab, self.caption_len, self.ctx_tokens = int(caption_vocab), int(caption_len), int(ctx_tokens)
        self.sample_shape = (3, self.canvas, self.canvas)
        c2 = 2 * ch
        self.time = TimeMLP(ch, emb_dim)
        # TryonNet
        self.inp = nn.Conv2d(3 + 3 + 1 + 3, ch, 3, padding=1)
        self.r1 = ResBlock(ch, ch, emb_dim)
        self.down1 = nn.Conv2d(ch, c2, 3, stride=2, padding=1)
        self.r2 = ResBlock(c2, c2, emb_dim)
        self.a2 = TryonAttention(c2, heads)
        self.down2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)
        self.r3 = ResBlock(c2, c2, emb_dim)
        self.a3 = TryonAttention(c2, heads)
        self.r3u = ResBlock(2 * c2, c2, emb_dim)
        self.up2 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, c2, 3, padding=1))
        self.r2u = ResBlock(2 * c2, c2, emb_dim)
        self.a2u = TryonAttention(c2, heads)
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, ch, 3, padding=1))
        self.r1u = ResBlock(2 * ch, ch, emb_dim)
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1))
        self.pos2 = nn.Parameter(torch.zeros(1, c2, canvas // 2, canvas // 2))
        self.pos3 = nn.Parameter(torch.zeros(1, c2, canvas // 4, canvas // 4))
        # GarmentNet analogue (reference network)
        self.g_inp = nn.Conv2d(3, ch, 3, padding=1)
        self.g1 = RefBlock(ch)
        self.g_down1 = nn.Conv2d(ch, c2, 3, stride=2, padding=1)
        self.g2 = RefBlock(c2)
        self.g_down2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)
        self.g3 = RefBlock(c2)
        self.g_pos2 = nn.Parameter(torch.zeros(1, c2, garment // 2, garment // 2))
        self.g_pos3 = nn.Parameter(torch.zeros(1, c2, garment // 4, garment // 4))
        # image-prompt adapter analogue: a separate garment encoder pooled into context tokens
        self.ip_enc = nn.Sequential(
            nn.Conv2d(3, ch, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(ch, c2, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.ip_proj = nn.Linear(4 * c2, ctx_tokens * c2)
        self.ip_norm = nn.LayerNorm(c2)
        # detailed caption tokens (slot-wise embeddings)
        self.caption = nn.Embedding(self.caption_len * self.caption_vocab, c2)

    def uses(self, part: str) -> bool:
        """Whether this mode uses ``part`` (``concat``, ``adapter``, ``reference``, ``caption``)."""
        return {
            "concat": self.mode == "concat",
            "adapter": self.mode in ("adapter", "full"),
            "reference": self.mode in ("reference", "full"),
            "caption": self.mode == "full",
        }[part]

    def used_parameters(self) -> int:
        """Parameters on this mode's forward path (all modes hold the same parameters)."""
        skip: list[nn.Module | nn.Parameter] = []
        if not self.uses("reference"):
            skip += [self.g_inp, self.g1, self.g_down1, self.g2, self.g_down2, self.g3, self.g_pos2, self.g_pos3]
        if not self.uses("adapter"):
            skip += [self.ip_enc, self.ip_proj, self.ip_norm]
        if not self.uses("caption"):
            skip += [self.caption]
        if not (self.uses("adapter") or self.uses("caption")):
            skip += [m for a in (self.a2, self.a3, self.a2u) for m in (a.norm2, a.q2, a.kv2, a.proj2)]
        ids = set()
        for m in skip:
            for p in [m] if isinstance(m, nn.Parameter) else m.parameters():
                ids.add(id(p))
        return sum(p.numel() for p in self.parameters() if id(p) not in ids)

    def check_cond(self, cond: Any, b: int) -> dict[str, Tensor]:
        if not isinstance(cond, dict):
            raise TypeError(f"cond: expected a dict with person, mask, garment, tokens; got {type(cond).__name__}")
        for key, shape in (
            ("person", (b, 3, self.canvas, self.canvas)),
            ("mask", (b, 1, self.canvas, self.canvas)),
            ("garment", (b, 3, self.garment_size, self.garment_size)),
        ):
            if key not in cond:
                raise ValueError(f"cond: missing {key!r}")
            check_tensor(cond[key], key, ndim=4, shape=shape)
        return cond

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        check_tensor(x, "x", ndim=4, shape=(None, 3, self.canvas, self.canvas))
        b = x.shape[0]
        cond = self.check_cond(cond, b)
        dt = x.dtype
        mask, person, garment = cond["mask"].to(dt), cond["person"].to(dt), cond["garment"].to(dt)
        t = t.expand(b) if t.ndim == 0 else t
        emb = self.time(t.to(x.device).float()).to(dt)
        g_in = torch.zeros_like(person)
        if self.uses("concat"):
            g_in = nn.functional.interpolate(garment, size=(self.canvas, self.canvas), mode="nearest")
        refs: list[Tensor | None] = [None, None]
        if self.uses("reference"):
            g1 = self.g1(self.g_inp(garment))
            g2 = self.g2(self.g_down1(g1)) + self.g_pos2
            g3 = self.g3(self.g_down2(g2)) + self.g_pos3
            refs = [g2, g3]
        ctx_parts = []
        if self.uses("adapter"):
            ctx_parts.append(self.ip_norm(self.ip_proj(self.ip_enc(garment)).reshape(b, self.ctx_tokens, -1)))
        if self.uses("caption"):
            tok = cond.get("tokens")
            if tok is None:
                raise ValueError("cond: mode 'full' needs the caption 'tokens'")
            tok = check_tensor(tok, "tokens", ndim=2, shape=(b, self.caption_len)).long().to(x.device)
            if int(tok.min()) < 0 or int(tok.max()) >= self.caption_vocab:
                raise ValueError(f"tokens: ids must lie in [0, {self.caption_vocab})")
            ctx_parts.append(self.caption(tok + torch.arange(self.caption_len, device=x.device) * self.caption_vocab))
        ctx = torch.cat(ctx_parts, 1) if ctx_parts else None
        h0 = self.inp(torch.cat([x * mask, person, mask, g_in], 1))
        h1 = self.r1(h0, emb)
        h2 = self.a2(self.r2(self.down1(h1), emb) + self.pos2, refs[0], ctx)
        h3a = self.r3(self.down2(h2), emb)
        h3 = self.a3(h3a + self.pos3, refs[1], ctx)
        h = self.up2(self.r3u(torch.cat([h3, h3a], 1), emb))
        h = self.a2u(self.r2u(torch.cat([h, h2], 1), emb), refs[0], ctx)
        h = self.up1(h)
        h = self.r1u(torch.cat([h, h1], 1), emb)
        return self.out(h)


@register_arch("tryon_unet")
def build_tryon_unet(**config: Any) -> TryonUNet:
    return TryonUNet(**config)
