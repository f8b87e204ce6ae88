"""Moved to :mod:`diffzoo.latent.model`; this re-export keeps code written against the old path working."""

from diffzoo.latent.model import *  # noqa: F401,F403
from diffzoo.latent.model import LatentModel, tiny_random_components, tiny_random_latent_model  # noqa: F401
