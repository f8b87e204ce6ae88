"""Latent text-to-image models and attention control: the layer below inversion and editing.

* :mod:`diffzoo.latent.model` -- :class:`LatentModel` (UNet + VAE + text encoder + tokenizer + schedule):
  the one object every inversion and editing method talks to, built from TinySD's parts or from a
  diffusers ``StableDiffusionPipeline`` (Rombach et al. 2022);
* :mod:`diffzoo.latent.attention` -- prompt-to-prompt attention control through diffusers attention
  processors (Hertz et al. 2022): controllers (store, replace, refine, reweight, InfEdit's unified
  control), local blend, token alignment between prompts, and ``attention_control(unet, controller)``.
"""

from diffzoo.latent import attention
from diffzoo.latent.attention import (
    AttentionController,
    attention_control,
    refine,
    replace,
    reweight,
    unified,
)
from diffzoo.latent.model import LatentModel, tiny_random_components, tiny_random_latent_model

__all__ = [
    "AttentionController",
    "LatentModel",
    "attention",
    "attention_control",
    "refine",
    "replace",
    "reweight",
    "tiny_random_components",
    "tiny_random_latent_model",
    "unified",
]
