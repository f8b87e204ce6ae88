"""Quantized zoo entries: packed integer weights + scales in safetensors, rebuilt into a usable model on load.

A quantized entry is an ordinary zoo pair whose JSON has the base model's ``arch``/``arch_config``/``kind``
plus a ``quant`` object: ``{"targets": {submodule path ("" = the whole network): QuantSpec dict},
"method", "wbits", "abits", "int8", "base", "calibration", "settings"}``. The weights file holds, for every
quantized conv/linear ``L``, ``L.weight_codes`` (uint8: one code per byte, or two 4-bit-or-less codes per
byte, low nibble first) instead of ``L.weight``, beside its per-channel ``delta``/``zp``, activation step
sizes, biases and every float tensor of the rest of the network. :func:`zoo.load <diffzoo.zoo.load>` calls
:func:`load_quantized`: the base network is built from ``arch_config``, :func:`diffzoo.quant.prepare` gives
it the quantized structure, weights are decoded ``delta * (code - zp)`` (exactly the simulated model's
weights: they lie on the grid) and, with ``"int8": true``, :func:`diffzoo.quant.int8.lower` puts the layers
on the integer kernels. So ``diffzoo sample`` runs a quantized entry unchanged.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.random import generators_from_seeds, randn
from diffzoo.data import shapes
from diffzoo.latent.model import LatentModel
from diffzoo.quant.calib import CalibSet, record_calls
from diffzoo.quant.int8 import lower
from diffzoo.quant.layers import QuantLayer
from diffzoo.quant.model import QuantSpec, prepare, quant_layers
from diffzoo.sampling import get_timesteps, initial_noise, sample
from diffzoo.sampling.ddim import ddim

Tensor = torch.Tensor
CODES = ".weight_codes"


def _bits(q: QuantLayer) -> int:
    return max(wq.bits for wq in q.wq)


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Integer codes in ``[0, 2^bits - 1]`` (``bits <= 8``) as uint8: two per byte when ``bits <= 4``."""
    flat = codes.detach().flatten().to(torch.int64)
    if bool((flat < 0).any()) or bool((flat >= 2**bits).any()):
        raise ValueError(f"codes: values outside [0, {2**bits - 1}]")
    if bits > 4:
        return flat.to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return (flat[0::2] | (flat[1::2] << 4)).to(torch.uint8)


def unpack_codes(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of :func:`pack_codes` (``numel`` codes, int64)."""
    p = packed.to(torch.int64)
    if bits > 4:
        out = p
    else:
        out = torch.stack([p & 15, p >> 4], 1).flatten()
    if out.numel() < numel:
        raise ValueError(f"weights: {out.numel()} packed codes, expected {numel}")
    return out[:numel]


def packed_state(model: nn.Module) -> dict[str, Tensor]:
    """The state dict to save: float weights of quantized layers replaced by their packed codes."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, q in quant_layers(model):
        if _bits(q) > 8:
            continue
        codes = torch.cat([wq.codes(w) for wq, w in zip(q.wq, q.weight_parts(), strict=True)], 1)
        state.pop(f"{name}.weight")
        state[name + CODES] = pack_codes(codes, _bits(q))
    return {k: v.contiguous() for k, v in state.items()}


class PackedModel(nn.Module):
    """What :func:`diffzoo.zoo.save` writes for a quantized network: its :func:`packed_state`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._state = packed_state(model)
        shape = getattr(model, "sample_shape", None)
        if shape is not None:
            self.sample_shape = tuple(shape)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        return dict(self._state)


def quant_config(targets: dict[str, QuantSpec], **info: Any) -> dict[str, Any]:
    """The JSON ``quant`` object."""
    return {"targets": {k: v.to_dict() for k, v in targets.items()}, **info}


def load_quantized(
    path: str | os.PathLike, cfg: dict[str, Any], tensors: dict[str, Tensor], model: nn.Module
) -> nn.Module:
    """Give the freshly built base ``model`` its quantized structure and weights from ``tensors``; ``ValueError``
    naming ``path`` on a malformed entry."""
    qcfg = cfg["quant"]
    targets = qcfg.get("targets") if isinstance(qcfg, dict) else None
    if not isinstance(targets, dict) or not targets:
        raise ValueError(f"{path}: quant: expected an object with non-empty 'targets'")
    try:
        for sub, spec in targets.items():
            prepare(model.get_submodule(sub) if sub else model, QuantSpec.from_dict(spec), weight_init="none")
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: quant: {e}") from None
    state = dict(tensors)
    for name, q in quant_layers(model):
        key = name + CODES
        if _bits(q) > 8:
            continue
        if key not in state:
            raise ValueError(f"{path}: missing tensor {key}")
        codes = unpack_codes(state.pop(key), _bits(q), q.weight.numel()).reshape(q.weight.shape).float()
        parts = codes.split([q.split, codes.shape[1] - q.split], 1) if q.split else [codes]
        ws = []
        for i, c in enumerate(parts):
            d, z = state.get(f"{name}.wq.{i}.delta"), state.get(f"{name}.wq.{i}.zp")
            if d is None or z is None:
                raise ValueError(f"{path}: missing scales of {name} (wq.{i}.delta / wq.{i}.zp)")
            ws.append((c - z) * d)
        state[f"{name}.weight"] = torch.cat(ws, 1).to(q.weight.dtype)
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise ValueError(
            f"{path}: quantized weights do not match the model: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(want[k].shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{path}: {k} has non-finite values")
    model.load_state_dict(state, strict=True)
    if qcfg.get("int8"):
        for sub in targets:
            lower(model.get_submodule(sub) if sub else model, strict=True)
    return model


@torch.no_grad()
def sample_latent(
    lm: LatentModel, prompts: list[str], steps: int = 20, guidance: float = 5.0, seed: int = 0, decode: bool = True
) -> Tensor:
    """Text-to-image with DDIM (eta 0, ``leading`` spacing, offset 1 as TinySD's evaluation) and CFG;
    sample ``i`` is seeded ``seed + i``. Returns images in ``[-1, 1]`` (or latents without ``decode``)."""
    den = cfg_denoiser(lm.denoiser(), guidance, lm.null_embedding(1))
    ts = get_timesteps(lm.schedule, steps, "leading", steps_offset=1)
    x = randn(
        lm.latent_shape(len(prompts), shapes.SIZE, shapes.SIZE), generators_from_seeds(range(seed, seed + len(prompts)))
    )
    z = ddim(den, x, ts, lm.encode_prompt(list(prompts)))
    return lm.decode(z) if decode else z


@torch.no_grad()
def diffusion_bank(
    den: Denoiser,
    shape: tuple[int, ...],
    n: int = 32,
    steps: int = 20,
    guidance: float = 1.0,
    null_class: int | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> CalibSet:
    """Calibration bank of a (class-conditional) Gaussian zoo model: the network's inputs along ``steps``
    DDIM steps from ``n`` noises (labels ``i mod num_classes``; CFG ``guidance`` on ``null_class``)."""
    labels = torch.arange(n) % num_classes if num_classes else None
    g = den if guidance == 1.0 or labels is None else cfg_denoiser(den, guidance, torch.tensor([null_class]))
    ts = get_timesteps(den.schedule, steps, "uniform")
    x = initial_noise(den, (n, *shape), ts, generators_from_seeds(range(seed * 1000, seed * 1000 + n)))
    return CalibSet.from_calls(record_calls(den.net, lambda: sample("ddim", g, x, ts, labels)))


def calibration_prompts(n: int, seed: int = 777) -> list[str]:
    """Captions of ``n`` random shapes scenes (TinySD's calibration prompts; not the evaluation ones)."""
    return [shapes.caption(s) for s in shapes.random_scenes(n, seed)]


def latent_banks(
    lm: LatentModel, n: int = 32, steps: int = 20, guidance: float = 5.0, seed: int = 0
) -> dict[str, CalibSet]:
    """Calibration banks of a latent model: the UNet's inputs along the FP sampler (``unet``) and the VAE
    decoder's inputs on the sampled latents (``vae.decoder``)."""
    prompts = calibration_prompts(n, seed + 777)
    box: dict[str, Tensor] = {}
    unet_calls = record_calls(
        lm.unet, lambda: box.__setitem__("z", sample_latent(lm, prompts, steps, guidance, seed, False))
    )
    dec_calls = record_calls(lm.vae.decoder, lambda: lm.decode(box["z"]))
    return {"unet": CalibSet.from_calls(unet_calls), "vae.decoder": CalibSet.from_calls(dec_calls)}


__all__ = [
    "PackedModel",
    "calibration_prompts",
    "diffusion_bank",
    "latent_banks",
    "load_quantized",
    "pack_codes",
    "packed_state",
    "quant_config",
    "sample_latent",
    "unpack_codes",
]
