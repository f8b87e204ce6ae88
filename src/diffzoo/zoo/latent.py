"""Latent text-to-image models as :class:`~diffzoo.latent.LatentModel`: the zoo's TinySD, a tiny random
SD-shaped model, or a diffusers ``StableDiffusionPipeline`` folder already on disk (never downloaded).

This is where a network (:class:`~diffzoo.models.tinysd.TinySD`) meets the algorithm layer's
:class:`~diffzoo.latent.LatentModel`: networks do not import algorithms, so the conversion lives here.
"""

from __future__ import annotations

import os
import tempfile

import torch

from diffzoo.data import shapes
from diffzoo.latent.model import LatentModel, tiny_random_latent_model
from diffzoo.models.tinysd import TinySD, tinysd_schedule
from diffzoo.zoo import load, names


def latent_model(model: TinySD) -> LatentModel:
    """A :class:`TinySD` as a :class:`LatentModel` (modules shared, not copied)."""
    if not isinstance(model, TinySD):
        raise TypeError(f"model: expected a TinySD, got {type(model).__name__}")
    model.vae.register_to_config(scaling_factor=float(model.scaling_factor))
    return LatentModel(
        unet=model.unet,
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenize=model.tokenizer,
        schedule=tinysd_schedule(),
        scaling_factor=float(model.scaling_factor),
        max_length=model.tokenizer.max_length,
        prediction_type="epsilon",
        image_size=shapes.SIZE,
    )


def load_tinysd(name: str = "tinysd") -> LatentModel:
    """The zoo's TinySD as a :class:`LatentModel` (EMA weights, eval mode)."""
    zm = load(name, kinds=("latent-diffusion",))
    if not isinstance(zm.model, TinySD):
        raise TypeError(f"name: zoo model {name!r} is a {type(zm.model).__name__}, not a TinySD")
    return latent_model(zm.model.eval().requires_grad_(False))


def load_latent_model(spec: str, dtype: torch.dtype = torch.float32) -> LatentModel:
    """A :class:`LatentModel` from a zoo name, ``tiny-random`` or a local diffusers pipeline folder."""
    if spec == "tiny-random":
        return tiny_random_latent_model(tempfile.mkdtemp(prefix="diffzoo-tok-"), dtype=dtype)
    cast = (lambda m: m) if dtype == torch.float32 else (lambda m: m.to(dtype=dtype))
    if os.path.isdir(spec):
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(
            spec, local_files_only=True, safety_checker=None, requires_safety_checker=False
        )
        return cast(LatentModel.from_diffusers_pipeline(pipe))
    if spec not in names():
        raise ValueError(
            f"model: {spec!r} is neither a zoo model ({', '.join(names()) or 'none shipped'}), "
            "'tiny-random', nor a local diffusers pipeline folder"
        )
    return cast(load_tinysd(spec))


__all__ = ["latent_model", "load_latent_model", "load_tinysd"]
