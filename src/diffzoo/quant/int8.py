"""Real int8 execution of a calibrated fake-quantized network on CPU (torch.ao eager static int8, x86/fbgemm).

Each :class:`~diffzoo.quant.layers.QuantLayer` becomes an integer island: ``quantize_per_tensor`` of its
input with the calibrated activation step and zero point (``quint8``) -> ``torch.ao.nn.quantized``
``Conv2d``/``Linear`` (weights ``qint8`` per output channel, with the *same* codes as the simulated model:
a ``b``-bit code ``k`` becomes ``k - 2^(b-1)`` with zero point ``z - 2^(b-1)``, so 4-bit codes fit exactly)
-> dequantize. Normalisations and activations stay float. The attention matmuls have no integer kernel
here: by default (``attention="float"``) they run unquantized on torch's fused ``scaled_dot_product_attention``
(the q/k/v/softmax fake quantization of the simulated model is dropped, so the lowered model differs from
the simulated one by that too); ``attention="sim"`` keeps their fake quantization (explicit matmuls, slow).
Time-aware activation scales (QuEST) are swapped per call from the model's timestep group.

What was checked on torch 2.13 (and why this backend): ``torch.ao.quantization.quantize_pt2e`` no longer
exists; the ``onednn`` engine refuses weight zero points (``qconv_prepack``: "ONEDNN only supports
symmetric quantization of weight"), ``x86``/``fbgemm`` accept per-channel affine weights. fbgemm multiplies
``u8 x s8`` pairs into int16 and saturates when activations use the full 0..255 range with full 8-bit weights
(measured: 0.45 max error on a 64-channel conv vs < step/2 with 0..127), which is why torch's own x86 qconfig
uses ``reduce_range``. Hence: W8A8 lowers only when activations were calibrated on 0..127 (``act_qmax=127``,
what ``diffzoo quantize --int8`` does); ``wbits <= 7`` lowers with full 8-bit activations (no pair can
saturate: ``255 * 64 * 2 < 32767``). ``abits <= 8`` per-tensor codes fit ``quint8`` exactly (A4 runs on the
int8 kernel with no speed gain from the 4 bits). The result differs from the simulated layer only by the
int8 kernel's output requantization (``<= out_step / 2`` per island, the output range observed on the
calibration set by :func:`observe_outputs`). The quantized-tensor API is deprecated in torch (it warns);
this module silences that warning.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from diffzoo.core.errors import check_choice
from diffzoo.quant.calib import CalibSet
from diffzoo.quant.layers import QuantAttnProcessor, QuantLayer
from diffzoo.quant.model import quant_layers, set_mode
from diffzoo.quant.quantizer import TimeContext

Tensor = torch.Tensor
ENGINE = "x86"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        yield


def int8_supported(q: QuantLayer) -> str | None:
    """``None`` when ``q`` can run on the int8 kernel, else the reason (one line)."""
    if q.wbits > 8:
        return f"wbits={q.wbits}: no integer kernel above 8 bits"
    if q.abits > 8:
        return f"abits={q.abits}: no integer kernel for activations above 8 bits"
    if q.wbits == 8 and any(a.qmax > 127 for a in q.aq):
        return "W8 with full 0..255 activations saturates fbgemm's int16 pairs; calibrate with act_qmax=127 (--int8)"
    if q.kind == "conv" and q.conv_args["groups"] != 1:
        return "grouped convolution"
    if not all(bool(a.ready) for a in q.aq):
        return "activation quantizer not calibrated"
    return None


def _partial(q: QuantLayer, x: Tensor) -> list[Tensor]:
    """The simulated layer's output per input part (bias on the first part)."""
    dim = 1 if q.kind == "conv" else -1
    xs = x.split([q.split, x.shape[dim] - q.split], dim) if q.split else [x]
    outs = []
    for i, (xp, wq, wp, aq) in enumerate(zip(xs, q.wq, q.weight_parts(), q.aq, strict=True)):
        b = q.bias if i == 0 else None
        xq, w = aq(xp), wq(wp)
        outs.append(F.conv2d(xq, w, b, **q.conv_args) if q.kind == "conv" else F.linear(xq, w, b))
    return outs


def observe_outputs(model: nn.Module, batches: Iterable[CalibSet]) -> None:
    """Record each quantized layer's partial-output range (``out_range``) on ``batches`` (simulated mode)."""
    set_mode(model, "sim")
    layers = dict(quant_layers(model))
    seen: dict[str, list[Tensor]] = {}

    def hook(name: str):
        def fn(mod: QuantLayer, args: tuple) -> None:
            parts = _partial(mod, args[0])
            r = torch.stack([torch.stack([p.min(), p.max()]) for p in parts]).detach()
            seen[name] = (
                [r]
                if name not in seen
                else [
                    torch.stack(
                        [torch.minimum(seen[name][0][:, 0], r[:, 0]), torch.maximum(seen[name][0][:, 1], r[:, 1])], 1
                    )
                ]
            )

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            for b in batches:
                b.call(model)
    finally:
        for h in handles:
            h.remove()
    for n, r in seen.items():
        layers[n].out_range.copy_(r[0])


class Int8Island(nn.Module):
    """quantize -> int8 conv/linear (per input part) -> dequantize; see the module docstring."""

    def __init__(self, q: QuantLayer, ctx: TimeContext | None):
        super().__init__()
        torch.backends.quantized.engine = ENGINE
        self.kind, self.split, self.ctx = q.kind, q.split, ctx
        self.mods = nn.ModuleList()
        self.in_scale: list[list[float]] = []
        self.in_zp: list[list[int]] = []
        self.in_qmax: list[int] = []
        with _quiet(), torch.no_grad():
            for i, (wq, wp, aq) in enumerate(zip(q.wq, q.weight_parts(), q.aq, strict=True)):
                off = 2 ** (wq.bits - 1)
                codes = (wq.codes(wp) - off).to(torch.int8)
                scales = wq.delta.flatten().double()
                zps = (wq.zp.flatten() - off).long()
                qw = torch._make_per_channel_quantized_tensor(codes, scales, zps, 0)
                bias = q.bias.detach() if (i == 0 and q.bias is not None) else None
                if q.kind == "conv":
                    a = q.conv_args
                    m = torch.ao.nn.quantized.Conv2d(
                        wp.shape[1],
                        wp.shape[0],
                        tuple(wp.shape[2:]),
                        stride=a["stride"],
                        padding=a["padding"],
                        dilation=a["dilation"],
                        bias=bias is not None,
                    )
                else:
                    m = torch.ao.nn.quantized.Linear(wp.shape[1], wp.shape[0], bias_=bias is not None)
                m.set_weight_bias(qw, bias)
                lo, hi = (float(v) for v in q.out_range[i])
                if hi <= lo:
                    raise ValueError("model: output ranges not observed; run diffzoo.quant.int8.observe_outputs first")
                lo, hi = min(lo, 0.0), max(hi, 0.0)
                scale = (hi - lo) / 255
                m.scale, m.zero_point = float(scale), int(round(-lo / scale))
                self.mods.append(m)
                self.in_scale.append([float(d) for d in aq.delta.detach()])
                self.in_zp.append([int(z) for z in aq.zp])
                self.in_qmax.append(aq.qmax)

    def _group(self) -> int:
        if self.ctx is None or self.ctx.groups is None or len(self.in_scale[0]) == 1:
            return 0
        g = self.ctx.groups
        if not bool((g == g[0]).all()):
            raise ValueError("t: the int8 model needs one timestep group per call (time-aware scales)")
        return min(int(g[0]), len(self.in_scale[0]) - 1)

    def forward(self, x: Tensor) -> Tensor:
        g = self._group()
        dim = 1 if self.kind == "conv" else -1
        xs = x.split([self.split, x.shape[dim] - self.split], dim) if self.split else [x]
        out = None
        with _quiet():
            for i, (xp, m) in enumerate(zip(xs, self.mods, strict=True)):
                sc, zp = self.in_scale[i][g], self.in_zp[i][g]
                # clamp to the simulated grid's range (no .contiguous(): fbgemm's NHWC outputs stay as they are)
                xp = xp.float().clamp(-zp * sc, (self.in_qmax[i] - zp) * sc)
                qx = torch.quantize_per_tensor(xp, sc, zp, torch.quint8)
                y = m(qx).dequantize()
                out = y if out is None else out + y
        return out


def lower(model: nn.Module, *, strict: bool = True, attention: str = "float") -> dict[str, str]:
    """Give every quantized layer that has an integer kernel an :class:`Int8Island` and switch the model to
    ``int8`` mode (the others stay simulated). Returns ``{layer: reason}`` for the layers left simulated;
    with ``strict`` any such layer is a ``ValueError`` naming it (asking for int8 where no kernel exists).
    ``attention``: ``"float"`` (fused float attention) or ``"sim"`` (fake-quantized q/k/v/probs kept)."""
    check_choice(attention, ("float", "sim"), "attention")
    ctx = getattr(model, "quant_ctx", None)
    skipped: dict[str, str] = {}
    layers = list(quant_layers(model))
    if not layers:
        raise ValueError("model: not quantized (diffzoo.quant.prepare / quantize first)")
    for name, q in layers:
        why = int8_supported(q)
        if why is not None:
            skipped[name] = why
            continue
        q.int8 = Int8Island(q, ctx)
    if strict and skipped:
        name, why = next(iter(skipped.items()))
        raise ValueError(f"int8: no integer kernel for layer {name!r}: {why}")
    set_mode(model, "sim")
    for _, q in layers:
        if q.int8 is not None:
            q.mode = "int8"
    if attention == "float":
        for m in model.modules():
            if isinstance(m, QuantAttnProcessor):
                m.quantize = False
    return skipped


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the weights: float32, and packed at their bit-width (two 4-bit codes per byte) + scales."""
    fp = packed = 0
    for _, q in quant_layers(model):
        n = q.weight.numel()
        fp += 4 * n
        bits = max(wq.bits for wq in q.wq)
        packed += (n + 1) // 2 if bits <= 4 else n * (1 if bits <= 8 else 4)
        packed += sum(8 * wq.delta.numel() for wq in q.wq)
    return {"float32": fp, "packed": packed}


__all__ = ["ENGINE", "Int8Island", "int8_supported", "lower", "observe_outputs", "weight_bytes"]
