"""Turning a network into a fake-quantized one in place: :func:`prepare`, the :class:`QuantSpec` that rebuilds
it, modes, calibration of activation ranges and the reconstruction units.

Every ``nn.Conv2d``/``nn.Linear`` becomes a :class:`~diffzoo.quant.layers.QuantLayer` (other layer types stay
float: normalisations, embeddings, activations -- as in the papers); diffusers ``Attention`` modules get a
:class:`~diffzoo.quant.layers.QuantAttnProcessor`, ``qkv``/``proj`` self-attentions a
:class:`~diffzoo.quant.layers.QuantSelfAttention`. The first and last conv/linear keep 8-bit weights when
``wbits < 8`` (BRECQ / Q-Diffusion keep them at 8 bits). Split-shortcut points are found by tracing one call:
a module whose input is the output of a channel ``torch.cat`` of two tensors gets ``split = channels of the
first`` on each of its layers that read the whole concatenation (Q-Diffusion's split quantizer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_choice
from diffzoo.quant.layers import QuantAttnProcessor, QuantLayer, QuantSelfAttention, is_qkv_attention
from diffzoo.quant.quantizer import ActQuantizer, TimeContext, check_bits

Tensor = torch.Tensor

#: Module class names that are reconstructed as one block (BRECQ): residual blocks, transformer blocks and
#: attention; every other quantized layer is reconstructed on its own.
BLOCK_TYPES = ("ResBlock", "ResnetBlock2D", "BasicTransformerBlock", "Attention", "QuantSelfAttention")


@dataclass
class QuantSpec:
    """What :func:`prepare` needs to rebuild a quantized network's structure (stored in a zoo JSON)."""

    wbits: int = 8
    abits: int = 8
    attention: bool = True
    splits: dict[str, int] = field(default_factory=dict)
    groups: int = 1
    edges: list[float] = field(default_factory=list)
    keep8: list[str] = field(default_factory=list)
    act_qmax: int | None = None
    skip: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_bits(self.wbits, "wbits")
        check_bits(self.abits, "abits")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ValueError(f"groups: expected a positive integer, got {self.groups!r}")
        if len(self.edges) not in (0, self.groups - 1):
            raise ValueError(f"edges: expected {self.groups - 1} group edges, got {len(self.edges)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantSpec:
        if not isinstance(d, dict):
            raise TypeError(f"quant: expected an object, got {type(d).__name__}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"quant: unknown key(s) {sorted(unknown)}")
        return cls(**d)


def quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantLayer]]:
    for name, m in model.named_modules():
        if isinstance(m, QuantLayer):
            yield name, m


def act_quantizers(model: nn.Module) -> Iterator[tuple[str, ActQuantizer]]:
    for name, m in model.named_modules():
        if isinstance(m, ActQuantizer):
            yield name, m


def _set_child(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _time_arg(args: tuple, kwargs: dict) -> Tensor | None:
    for key in ("timestep", "t", "timesteps"):
        if key in kwargs and isinstance(kwargs[key], Tensor):
            return kwargs[key]
    if len(args) > 1 and isinstance(args[1], (Tensor, int, float)):
        return torch.as_tensor(args[1])
    return None


def find_splits(model: nn.Module, example: tuple[tuple, dict]) -> dict[str, int]:
    """Names of conv/linear layers reading a two-part channel concatenation -> the first part's channels.

    Traced on one call ``model(*args, **kwargs)`` with ``torch.cat`` observed (no change to the model)."""
    cats: dict[int, int] = {}
    real_cat = torch.cat

    def cat(tensors: Any, dim: int = 0, **kw: Any) -> Tensor:
        out = real_cat(tensors, dim, **kw)
        ts = list(tensors)
        if len(ts) == 2 and out.ndim == 4 and dim in (1, -3):
            cats[id(out)] = ts[0].shape[1]
        return out

    hits: dict[str, int] = {}
    keep: list[Tensor] = []

    def hook(name: str):
        def fn(mod: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], Tensor) and id(args[0]) in cats:
                keep.append(args[0])
                hits[name] = cats[id(args[0])]

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if n]
    torch.cat = cat  # type: ignore[assignment]
    try:
        with torch.no_grad():
            model(*example[0], **example[1])
    finally:
        torch.cat = real_cat  # type: ignore[assignment]
        for h in handles:
            h.remove()
    splits: dict[str, int] = {}
    for name, k in hits.items():
        mod = model.get_submodule(name)
        total = None
        for sub_name, sub in mod.named_modules():
            w = getattr(sub, "weight", None)
            if isinstance(sub, (nn.Conv2d, QuantLayer)) and w is not None and w.ndim == 4:
                total = total or _cat_channels(model, name)
                if w.shape[1] == total and 0 < k < total:
                    splits[f"{name}.{sub_name}" if sub_name else name] = k
    return splits


def _cat_channels(model: nn.Module, name: str) -> int | None:
    mod = model.get_submodule(name)
    first = next((m for m in mod.modules() if isinstance(m, (nn.Conv2d, nn.GroupNorm, QuantLayer))), None)
    if isinstance(first, nn.GroupNorm):
        return first.num_channels
    return None if first is None else first.weight.shape[1]


def prepare(model: nn.Module, spec: QuantSpec, *, weight_init: str = "mse") -> nn.Module:
    """Replace ``model``'s conv/linear layers (and attention) by quantized ones, in place, following
    ``spec``; installs the :class:`TimeContext` pre-hook. Returns ``model`` (activations not calibrated yet)."""
    if getattr(model, "quant_spec", None) is not None:
        raise ValueError("model: already quantized")
    check_choice(weight_init, ("mse", "max", "none"), "weight_init")
    ctx = TimeContext(torch.tensor(spec.edges, dtype=torch.float64) if spec.edges else None)
    targets = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    names = [n for n, _ in targets]
    unknown = sorted(set(spec.splits) - set(names)) + sorted(set(spec.keep8) - set(names))
    if unknown:
        raise ValueError(f"quant: layer(s) {unknown[:3]} not found in the model")
    for name, m in targets:
        if name in spec.skip:
            continue
        wbits = max(spec.wbits, 8) if name in spec.keep8 and spec.wbits < 8 else spec.wbits
        q = QuantLayer(
            m,
            wbits,
            spec.abits,
            split=spec.splits.get(name, 0),
            groups=spec.groups,
            ctx=ctx,
            weight_init=weight_init,
            act_qmax=spec.act_qmax,
        )
        _set_child(model, name, q)
    if spec.attention:
        for name, m in list(model.named_modules()):
            if type(m).__name__ == "Attention" and hasattr(m, "set_processor"):
                m.set_processor(QuantAttnProcessor(spec.abits, spec.groups, ctx, spec.act_qmax))
            elif is_qkv_attention(m) and not isinstance(m, QuantSelfAttention):
                _set_child(model, name, QuantSelfAttention(m, spec.abits, spec.groups, ctx, spec.act_qmax))
    model.quant_spec = spec  # type: ignore[assignment]
    model.quant_ctx = ctx  # type: ignore[assignment]
    model.register_forward_pre_hook(lambda mod, args, kw: ctx.set(_time_arg(args, kw)), with_kwargs=True)
    return model


def default_spec(
    model: nn.Module,
    wbits: int,
    abits: int,
    *,
    split: bool,
    example: tuple[tuple, dict] | None,
    attention: bool = True,
    groups: int = 1,
    edges: list[float] | None = None,
    act_qmax: int | None = None,
) -> QuantSpec:
    """A :class:`QuantSpec` for ``model``: first/last layer at 8 bits, split points traced on ``example``."""
    names = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    if not names:
        raise TypeError(f"model: {type(model).__name__} has no Conv2d/Linear layer to quantize")
    convs = [n for n, m in model.named_modules() if type(m) is nn.Conv2d]
    ends = [convs[0], convs[-1]] if convs else [names[0], names[-1]]
    splits = find_splits(model, example) if split and example is not None else {}
    return QuantSpec(wbits, abits, attention, splits, groups, list(edges or []), ends, act_qmax)


def set_mode(model: nn.Module, mode: str, *, weights: bool = True, acts: bool = True) -> None:
    """``mode``: ``float``, ``sim`` or ``int8`` for every quantized layer; in ``sim`` mode ``weights``/``acts``
    switch the weight and activation quantizers on or off."""
    check_choice(mode, ("float", "sim", "int8"), "mode")
    for _, q in quant_layers(model):
        q.mode = mode
        q.quant_w = weights
    for _, a in act_quantizers(model):
        a.enabled = acts and mode != "float"
    for m in model.modules():
        if isinstance(m, QuantAttnProcessor):
            m.quantize = acts and mode != "float"


@contextlib.contextmanager
def calibrating(model: nn.Module, init: str = "mse") -> Iterator[None]:
    """Within the block every activation quantizer records ranges; at exit they are set (see
    :class:`~diffzoo.quant.quantizer.ActQuantizer`)."""
    qs = [a for _, a in act_quantizers(model)]
    for a in qs:
        a.start_calibration(init)
    try:
        yield
    finally:
        for a in qs:
            a.finish_calibration()


def block_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Reconstruction units in module order: the outermost :data:`BLOCK_TYPES` modules holding quantized
    layers, then every quantized layer outside them (BRECQ: blocks, and layer by layer for the rest)."""
    units: list[tuple[str, nn.Module]] = []
    covered: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(c + ".") for c in covered):
            continue
        if type(m).__name__ in BLOCK_TYPES and any(isinstance(s, QuantLayer) for s in m.modules()):
            units.append((name, m))
            covered.append(name)
        elif isinstance(m, QuantLayer):
            units.append((name, m))
    return units


__all__ = [
    "BLOCK_TYPES",
    "QuantSpec",
    "act_quantizers",
    "block_units",
    "calibrating",
    "default_spec",
    "find_splits",
    "prepare",
    "quant_layers",
    "set_mode",
]
