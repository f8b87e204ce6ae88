"""Moved to :mod:`diffzoo.latent.attention`; this re-export keeps code written against the old path working."""

from diffzoo.latent.attention import *  # noqa: F401,F403
