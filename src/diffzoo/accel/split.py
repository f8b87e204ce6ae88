"""Encoder/decoder splits of UNets, by calling their public submodules (never a copy of their ``forward``).

A split cuts a UNet into levels: ``stem`` (input convolution; the first skip feature), ``down(i)`` (down
level ``i``, appending its skip features), ``mid`` (the middle block), ``up(j)`` (up level ``j``, ``j = 0``
the deepest, consuming :meth:`UNetSplit.up_skips` skip features from the end of the list) and ``head``
(output normalisation and convolution). The *encoder* of Faster Diffusion (Li et al. 2023, arXiv
2312.09608, Sec. 3.2) is ``stem + down + mid``; the *decoder* is ``up + head``. DeepCache (Ma, Fang, Wang
2023, arXiv 2312.00858) keeps a shallow branch (``stem``, the first ``depth`` down levels, the last
``depth`` up levels, ``head``) and caches the deep branch's output (the input of up level ``L - depth``).

Splits exist for diffusers' ``UNet2DConditionModel`` / ``UNet2DModel`` (the call order of their
``forward``: time embedding, class embedding, ``conv_in``, ``down_blocks``, ``mid_block``, ``up_blocks``
with ``upsample_size`` forwarding, ``conv_norm_out``/``conv_act``/``conv_out``) and for diffzoo's digits
UNet (``embed``, ``inp``, ``down``/``downsample``, ``mid1``/``attn``/``mid2``, ``up``/``upsample``,
``out``). :func:`split_unet` picks one, or raises ``ValueError`` naming ``model`` for a network it cannot
split (an option that changes the call order, e.g. ``addition_embed_type``, ControlNet residuals, a
Fourier time embedding, skip-connection ``skip_conv`` blocks).

``cond`` follows :func:`diffzoo.core.denoiser.from_diffusers_unet`: ``encoder_hidden_states`` for a
``UNet2DConditionModel``, ``class_labels`` for a ``UNet2DModel``, keyword arguments for a dict; class
labels (``None``: the null class) for the digits UNet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

Tensor = torch.Tensor


class Features(NamedTuple):
    """What the encoder hands the decoder: the middle block's output and the skip features."""

    h: Tensor
    skips: tuple[Tensor, ...]


def repeat_batch(v: Any, k: int) -> Any:
    """``v`` with its batch dimension repeated ``k`` times (block-wise, ``[v; v; ...]``); dicts, tuples and
    lists recursively; ``None`` and non-tensors unchanged."""
    if k == 1 or v is None:
        return v
    if isinstance(v, Tensor):
        return torch.cat([v] * k) if v.ndim else v
    if isinstance(v, dict):
        return {key: repeat_batch(val, k) for key, val in v.items()}
    if isinstance(v, (tuple, list)):
        return type(v)(repeat_batch(val, k) for val in v)
    return v


class UNetSplit:
    """The level interface (see the module docstring); subclasses implement the six level functions."""

    kind = "unet"
    module: torch.nn.Module
    num_levels: int

    def context(self, x: Tensor, t: Tensor, cond: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def stem(self, x: Tensor, ctx: Any) -> tuple[Tensor, list[Tensor]]:  # pragma: no cover - interface
        raise NotImplementedError

    def down(self, i: int, h: Tensor, ctx: Any, skips: list[Tensor]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def mid(self, h: Tensor, ctx: Any) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def up(self, j: int, h: Tensor, ctx: Any, skips: list[Tensor]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def up_skips(self, j: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def head(self, h: Tensor, ctx: Any) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    # ------------------------------------------------------------------------------ compositions
    def encode(self, x: Tensor, ctx: Any, record: list[Tensor] | None = None) -> Features:
        """Input convolution, every down level and the middle block (``record``: appends each level's output)."""
        h, skips = self.stem(x, ctx)
        for i in range(self.num_levels):
            h = self.down(i, h, ctx, skips)
            if record is not None:
                record.append(h)
        h = self.mid(h, ctx)
        if record is not None:
            record.append(h)
        return Features(h, tuple(skips))

    def decode(
        self, feats: Features, ctx: Any, start: int = 0, record: list[Tensor] | None = None, capture: int | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Up levels ``start..L-1`` and the head on ``feats`` (the skip tuple is not modified). Returns the
        output and, with ``capture = j``, the input of up level ``j`` (DeepCache's cached feature)."""
        h, skips, captured = feats.h, list(feats.skips), None
        for j in range(start, self.num_levels):
            if j == capture:
                captured = h
            h = self.up(j, h, ctx, skips)
            if record is not None:
                record.append(h)
        return self.head(h, ctx), captured

    def __call__(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """The whole network through the split (equals the model's own forward)."""
        ctx = self.context(x, t, cond)
        return self.decode(self.encode(x, ctx), ctx)[0]

    def shallow_skips(self, depth: int) -> int:
        """Skip features the last ``depth`` up levels consume (the first ones of the skip list)."""
        return sum(self.up_skips(j) for j in range(self.num_levels - depth, self.num_levels))

    def shallow(self, x: Tensor, ctx: Any, deep: Tensor, depth: int) -> Tensor:
        """DeepCache's shallow branch: stem, the first ``depth`` down levels, then the last ``depth`` up
        levels on the cached deep feature ``deep``, then the head."""
        h, skips = self.stem(x, ctx)
        for i in range(depth):
            h = self.down(i, h, ctx, skips)
        n = self.shallow_skips(depth)
        return self.decode(Features(deep, tuple(skips[:n])), ctx, start=self.num_levels - depth)[0]


# ------------------------------------------------------------------------------------------------------
# diffusers
# ------------------------------------------------------------------------------------------------------


@dataclass
class _DiffusersCtx:
    emb: Tensor
    ehs: Tensor | None
    upsample: bool  # forward upsample sizes (input not a multiple of the overall up factor)


class DiffusersSplit(UNetSplit):
    """Split of a diffusers ``UNet2DConditionModel`` (``conditional``) or ``UNet2DModel``."""

    kind = "diffusers"

    def __init__(self, unet: torch.nn.Module):
        cfg = unet.config
        name = type(unet).__name__
        self.conditional = name == "UNet2DConditionModel"
        bad = []
        if getattr(cfg, "center_input_sample", False):
            bad.append("center_input_sample")
        if self.conditional:
            if getattr(cfg, "addition_embed_type", None) is not None:
                bad.append(f"addition_embed_type={cfg.addition_embed_type!r}")
            if getattr(cfg, "time_cond_proj_dim", None) is not None:
                bad.append("time_cond_proj_dim")
            if getattr(unet, "position_net", None) is not None:
                bad.append("GLIGEN position_net")
        else:
            if getattr(cfg, "time_embedding_type", "positional") != "positional":
                bad.append(f"time_embedding_type={cfg.time_embedding_type!r}")
            if any(hasattr(b, "skip_conv") for b in list(unet.down_blocks) + list(unet.up_blocks)):
                bad.append("skip_conv blocks")
        if bad:
            raise ValueError(f"model: cannot split this {name} into encoder and decoder ({', '.join(bad)})")
        self.module = unet
        self.num_levels = len(unet.down_blocks)
        if len(unet.up_blocks) != self.num_levels:
            raise ValueError(f"model: {name} has {self.num_levels} down but {len(unet.up_blocks)} up blocks")
        self.up_factor = 2 ** sum(1 for b in unet.up_blocks if getattr(b, "upsamplers", None) is not None)

    def _unpack(self, cond: Any) -> tuple[Tensor | None, Tensor | None]:
        if isinstance(cond, dict):
            extra = set(cond) - {"encoder_hidden_states", "class_labels"}
            if any(cond[k] is not None for k in extra):
                raise ValueError(f"cond: keyword(s) {sorted(extra)} are not supported by the cached UNet")
            return cond.get("encoder_hidden_states"), cond.get("class_labels")
        return (cond, None) if self.conditional else (None, cond)

    def context(self, x: Tensor, t: Tensor, cond: Any) -> _DiffusersCtx:
        u = self.module
        ehs, labels = self._unpack(cond)
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        if self.conditional:
            emb = u.time_embedding(u.get_time_embed(sample=x, timestep=t), None)
            class_emb = u.get_class_embed(sample=x, class_labels=labels)
            if class_emb is not None:
                emb = torch.cat([emb, class_emb], dim=-1) if u.config.class_embeddings_concat else emb + class_emb
            if u.time_embed_act is not None:
                emb = u.time_embed_act(emb)
            ehs = u.process_encoder_hidden_states(encoder_hidden_states=ehs, added_cond_kwargs={})
        else:
            emb = u.time_embedding(u.time_proj(t).to(dtype=u.dtype))
            if u.class_embedding is not None:
                if labels is None:
                    raise ValueError("cond: this UNet2DModel is class-conditional; give class labels")
                if u.config.class_embed_type == "timestep":
                    labels = u.time_proj(labels)
                emb = emb + u.class_embedding(labels).to(dtype=u.dtype)
            elif labels is not None:
                raise ValueError("cond: this UNet2DModel has no class embedding")
        upsample = any(d % self.up_factor != 0 for d in x.shape[-2:])
        return _DiffusersCtx(emb, ehs, upsample)

    def stem(self, x: Tensor, ctx: _DiffusersCtx) -> tuple[Tensor, list[Tensor]]:
        h = self.module.conv_in(x)
        return h, [h]

    def down(self, i: int, h: Tensor, ctx: _DiffusersCtx, skips: list[Tensor]) -> Tensor:
        block = self.module.down_blocks[i]
        if getattr(block, "has_cross_attention", False):
            h, res = block(hidden_states=h, temb=ctx.emb, encoder_hidden_states=ctx.ehs)
        else:
            h, res = block(hidden_states=h, temb=ctx.emb)
        skips.extend(res)
        return h

    def mid(self, h: Tensor, ctx: _DiffusersCtx) -> Tensor:
        block = self.module.mid_block
        if block is None:
            return h
        if getattr(block, "has_cross_attention", False):
            return block(h, ctx.emb, encoder_hidden_states=ctx.ehs)
        return block(h, ctx.emb)

    def up_skips(self, j: int) -> int:
        return len(self.module.up_blocks[j].resnets)

    def up(self, j: int, h: Tensor, ctx: _DiffusersCtx, skips: list[Tensor]) -> Tensor:
        block = self.module.up_blocks[j]
        n = len(block.resnets)
        res = tuple(skips[-n:])
        del skips[-n:]
        size = skips[-1].shape[2:] if ctx.upsample and j < self.num_levels - 1 and skips else None
        if getattr(block, "has_cross_attention", False):
            return block(
                hidden_states=h,
                temb=ctx.emb,
                res_hidden_states_tuple=res,
                encoder_hidden_states=ctx.ehs,
                upsample_size=size,
            )
        return block(hidden_states=h, temb=ctx.emb, res_hidden_states_tuple=res, upsample_size=size)

    def head(self, h: Tensor, ctx: _DiffusersCtx) -> Tensor:
        u = self.module
        if u.conv_norm_out is not None:
            h = u.conv_act(u.conv_norm_out(h))
        return u.conv_out(h)


# ------------------------------------------------------------------------------------------------------
# diffzoo's digits UNet (duck-typed: algorithms never import a network class)
# ------------------------------------------------------------------------------------------------------

DIGITS_ATTRS = (
    "embed",
    "inp",
    "down",
    "downsample",
    "mid1",
    "attn",
    "mid2",
    "up",
    "upsample",
    "out",
    "mults",
    "blocks",
)


class DigitsSplit(UNetSplit):
    """Split of diffzoo's :class:`~diffzoo.models.unet.DigitsUNet` (the layout of its ``encode``/``decode``)."""

    kind = "diffzoo"

    def __init__(self, unet: torch.nn.Module):
        self.module = unet
        self.num_levels = len(unet.mults)
        self.blocks = int(unet.blocks)

    def context(self, x: Tensor, t: Tensor, cond: Any) -> Tensor:
        return self.module.embed(torch.as_tensor(t, device=x.device), cond, x.shape[0], x.device)

    def stem(self, x: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.module.inp(x)
        return h, [h]

    def down(self, i: int, h: Tensor, emb: Tensor, skips: list[Tensor]) -> Tensor:
        m = self.module
        for b in range(self.blocks):
            h = m.down[i * self.blocks + b](h, emb)
            skips.append(h)
        if i < self.num_levels - 1:
            h = m.downsample[i](h)
            skips.append(h)
        return h

    def mid(self, h: Tensor, emb: Tensor) -> Tensor:
        m = self.module
        return m.mid2(m.attn(m.mid1(h, emb)), emb)

    def up_skips(self, j: int) -> int:
        return self.blocks + 1

    def up(self, j: int, h: Tensor, emb: Tensor, skips: list[Tensor]) -> Tensor:
        m = self.module
        for b in range(self.blocks + 1):
            h = m.up[j * (self.blocks + 1) + b](torch.cat([h, skips.pop()], 1), emb)
        if j < self.num_levels - 1:
            h = m.upsample[j](h)
        return h

    def head(self, h: Tensor, emb: Tensor) -> Tensor:
        return self.module.out(h)


def split_unet(model: Any) -> UNetSplit:
    """The encoder/decoder split of ``model`` (a diffusers ``UNet2DConditionModel``/``UNet2DModel`` or
    diffzoo's digits UNet); ``ValueError`` naming ``model`` when it cannot be split."""
    if isinstance(model, UNetSplit):
        return model
    name = type(model).__name__
    if name in ("UNet2DConditionModel", "UNet2DModel"):
        return DiffusersSplit(model)
    if isinstance(model, torch.nn.Module) and all(hasattr(model, a) for a in DIGITS_ATTRS):
        return DigitsSplit(model)
    raise ValueError(
        f"model: cannot split a {name} into encoder and decoder (supported: diffusers UNet2DConditionModel / "
        "UNet2DModel and diffzoo's digits UNet)"
    )


__all__ = ["DiffusersSplit", "DigitsSplit", "Features", "UNetSplit", "repeat_batch", "split_unet"]
