"""Quantized layers: conv/linear with weight and input-activation quantizers, split-shortcut quantizers and
attention with quantized matmul inputs (Q-Diffusion, arXiv 2302.04304, Sec. 3.3-3.4).

:class:`QuantLayer` wraps an ``nn.Conv2d`` or ``nn.Linear`` (the float weight is kept as ``weight``, so
the state-dict keys of the wrapped network do not change). ``split = k`` (Q-Diffusion's split shortcut)
gives the input channels ``[:k]`` and ``[k:]`` (the two halves of a decoder block's ``cat([h_up, h_skip])``)
their own activation *and* weight quantizers. A ``mode`` switches it between ``"float"``, ``"sim"``
(fake quantization) and ``"int8"`` (a real integer kernel, :mod:`diffzoo.quant.int8`).

:class:`QuantAttnProcessor` is a diffusers attention processor (an ``nn.Module``, so its quantizers are in
the state dict) computing ``softmax(q k^T / sqrt(d)) v`` with ``q``, ``k``, ``v`` and the softmax output
fake-quantized; :class:`QuantSelfAttention` does the same for a single-head ``qkv``/``proj`` attention
module (the digits UNet's). With ``quantize`` off (float mode, or a model lowered to int8 with float
attention, :func:`diffzoo.quant.int8.lower`) both run torch's fused ``scaled_dot_product_attention``
(diffusers' ``AttnProcessor2_0``) instead of the explicit matmuls the simulation needs.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from diffzoo.latent.attention import explicit_attention
from diffzoo.quant.quantizer import ActQuantizer, TimeContext, WeightQuantizer

Tensor = torch.Tensor
MODES = ("float", "sim", "int8")


class QuantLayer(nn.Module):
    """A conv2d/linear with per-channel weight quantizer(s) and per-tensor input quantizer(s)."""

    def __init__(
        self,
        layer: nn.Module,
        wbits: int,
        abits: int,
        *,
        split: int = 0,
        groups: int = 1,
        ctx: TimeContext | None = None,
        weight_init: str = "mse",
        act_qmax: int | None = None,
    ):
        super().__init__()
        if type(layer) not in (nn.Conv2d, nn.Linear):
            raise TypeError(f"layer: no quantizer for {type(layer).__name__} (supported: Conv2d, Linear)")
        self.kind = "conv" if isinstance(layer, nn.Conv2d) else "linear"
        w = layer.weight.detach().clone()
        self.weight = nn.Parameter(w, requires_grad=False)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        if self.kind == "conv":
            if layer.padding_mode != "zeros":
                raise TypeError(f"layer: no quantizer for Conv2d with padding_mode={layer.padding_mode!r}")
            self.conv_args = dict(
                stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups
            )
        self.in_features = w.shape[1]
        self.wbits, self.abits = wbits, abits
        self.split = int(split)
        if not 0 <= self.split < self.in_features:
            raise ValueError(f"split: expected 0 (none) or a channel index in [1, {self.in_features - 1}], got {split}")
        parts = [w[:, : self.split], w[:, self.split :]] if self.split else [w]
        self.wq = nn.ModuleList(WeightQuantizer(p, wbits, weight_init) for p in parts)
        self.aq = nn.ModuleList(ActQuantizer(abits, groups, ctx, act_qmax) for _ in parts)
        # per input part: [min, max] of its partial output (int8 output scale; diffzoo.quant.int8)
        self.register_buffer("out_range", torch.zeros(len(parts), 2))
        self.mode = "sim"
        self.quant_w = True
        self.int8: nn.Module | None = None  # set by diffzoo.quant.int8.lower

    def weight_parts(self) -> list[Tensor]:
        return [self.weight[:, : self.split], self.weight[:, self.split :]] if self.split else [self.weight]

    def quant_weight(self) -> Tensor:
        parts = [q(p) for q, p in zip(self.wq, self.weight_parts(), strict=True)]
        return torch.cat(parts, 1) if self.split else parts[0]

    def quant_input(self, x: Tensor) -> Tensor:
        if not self.split:
            return self.aq[0](x)
        dim = 1 if self.kind == "conv" else -1
        a, b = x.split([self.split, x.shape[dim] - self.split], dim)
        return torch.cat([self.aq[0](a), self.aq[1](b)], dim)

    def _compute(self, x: Tensor, w: Tensor) -> Tensor:
        if self.kind == "conv":
            return F.conv2d(x, w, self.bias, **self.conv_args)
        return F.linear(x, w, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "float":
            return self._compute(x, self.weight)
        if self.mode == "int8":
            if self.int8 is None:
                raise ValueError("mode: this layer has not been lowered to int8 (diffzoo.quant.int8.lower)")
            return self.int8(x)
        return self._compute(self.quant_input(x), self.quant_weight() if self.quant_w else self.weight)

    def extra_repr(self) -> str:
        return f"{self.kind}, wbits={self.wbits}, abits={self.abits}, split={self.split}, mode={self.mode}"


class QuantAttnProcessor(nn.Module):
    """A diffusers attention processor with quantized ``q``, ``k``, ``v`` and attention probabilities.

    The computation is diffusers' classic ``AttnProcessor`` (group norm, projections, ``baddbmm`` scores,
    softmax, ``bmm``, output projection, residual, rescale); the projections are :class:`QuantLayer`s.
    """

    def __init__(self, abits: int, groups: int = 1, ctx: TimeContext | None = None, act_qmax: int | None = None):
        super().__init__()
        self.q_quant = ActQuantizer(abits, groups, ctx, act_qmax)
        self.k_quant = ActQuantizer(abits, groups, ctx, act_qmax)
        self.v_quant = ActQuantizer(abits, groups, ctx, act_qmax)
        self.p_quant = ActQuantizer(abits, groups, ctx, act_qmax)
        self.quantize = True

    def __call__(  # the explicit signature lets diffusers pass ``temb`` (it filters kwargs by signature)
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)

    def _q(self, quantizer: ActQuantizer, x: Tensor) -> Tensor:
        return quantizer(x) if self.quantize else x

    def _qkv(self, q: Tensor, k: Tensor, v: Tensor, _cross: bool) -> tuple[Tensor, Tensor, Tensor]:
        return self._q(self.q_quant, q), self._q(self.k_quant, k), self._q(self.v_quant, v)

    def forward(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **_: Any,
    ) -> Tensor:
        if not self.quantize:
            return _fused_processor()(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return explicit_attention(
            attn,
            hidden_states,
            encoder_hidden_states,
            attention_mask,
            temb,
            qkv_hook=self._qkv,
            probs_hook=lambda probs, _cross: self._q(self.p_quant, probs),
        )


@functools.cache
def _fused_processor() -> Any:
    """diffusers' ``AttnProcessor2_0`` (stateless; imported on first use: diffusers is an optional extra)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    return AttnProcessor2_0()


def is_qkv_attention(module: nn.Module) -> bool:
    """A single-head spatial self-attention with ``norm``, a fused 1x1 ``qkv`` conv and a 1x1 ``proj``
    (the digits UNet's ``SelfAttention``; recognised by its structure, not its class)."""
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    return (
        isinstance(getattr(module, "norm", None), nn.GroupNorm)
        and isinstance(qkv, (nn.Conv2d, QuantLayer))
        and isinstance(proj, (nn.Conv2d, QuantLayer))
        and qkv.weight.shape[0] == 3 * proj.weight.shape[0]
    )


class QuantSelfAttention(nn.Module):
    """``x + proj(attention(qkv(norm(x))))`` with quantized ``q``, ``k``, ``v`` and probabilities; takes
    over the ``norm``/``qkv``/``proj`` modules of an :func:`is_qkv_attention` module (same state-dict keys)."""

    def __init__(self, module: nn.Module, abits: int, groups: int = 1, ctx: TimeContext | None = None, act_qmax=None):
        super().__init__()
        self.norm, self.qkv, self.proj = module.norm, module.qkv, module.proj
        self.processor = QuantAttnProcessor(abits, groups, ctx, act_qmax)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        p = self.processor
        if not p.quantize:  # fused float attention; out[c, i] = sum_j probs[i, j] v[c, j]
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))
        q, k, v = p._q(p.q_quant, q.transpose(1, 2)), p._q(p.k_quant, k.transpose(1, 2)), p._q(p.v_quant, v)
        probs = p._q(p.p_quant, torch.softmax(q @ k.transpose(1, 2) / c**0.5, -1))
        out = v @ probs.transpose(1, 2)
        return x + self.proj(out.reshape(b, c, h, w))


__all__ = ["MODES", "QuantAttnProcessor", "QuantLayer", "QuantSelfAttention", "is_qkv_attention"]
