"""Provenance: image watermarks (real libraries and learned), WOUAF fingerprint attribution, and the
classical and diffusion attacks that break them (issue 15).

* :mod:`~diffzoo.provenance.watermarks` -- :data:`WATERMARKS` (invisible-watermark dwtDct / dwtDctSvd /
  rivaGan, blind-watermark), :func:`network_watermark` (the learned StegaStamp-style watermark),
  :func:`fingerprint_reader` (WOUAF), :func:`latent_reader` (Safe-SD-style), capacity and size checks;
* :mod:`~diffzoo.provenance.bits` -- bit accuracy, the exact binomial threshold, TPR at a fixed FPR,
  Hamming attribution;
* :mod:`~diffzoo.provenance.attacks` -- :data:`ATTACKS` (JPEG, blur, noise, resize, crop, rotation,
  brightness; differentiable training augmentations);
* :mod:`~diffzoo.provenance.regen` -- regeneration, VAE round trip, decoder-guided regeneration, edit attack;
* :mod:`~diffzoo.provenance.tiles` -- 64x64 mosaics of 32x32 tiles for TinySD.
"""

from diffzoo.provenance.attacks import ATTACKS, CLASSICAL_GRID, classical, jpeg_diff, random_augment
from diffzoo.provenance.bits import (
    attribute,
    attribution_threshold,
    binomial_tail,
    binomial_threshold,
    bit_accuracy,
    format_bits,
    parse_bits,
    random_bits,
    read_users,
    tpr_at_fpr,
    user_fingerprint,
)
from diffzoo.provenance.regen import edit_attack, guided_regenerate, regenerate, vae_roundtrip
from diffzoo.provenance.tiles import from_tiles, to_tiles
from diffzoo.provenance.watermarks import (
    WATERMARKS,
    Watermark,
    fingerprint_reader,
    get_watermark,
    latent_reader,
    library_available,
    network_watermark,
    quantize8,
)

__all__ = [
    "ATTACKS",
    "CLASSICAL_GRID",
    "WATERMARKS",
    "Watermark",
    "attribute",
    "attribution_threshold",
    "binomial_tail",
    "binomial_threshold",
    "bit_accuracy",
    "classical",
    "edit_attack",
    "fingerprint_reader",
    "latent_reader",
    "format_bits",
    "from_tiles",
    "get_watermark",
    "guided_regenerate",
    "jpeg_diff",
    "library_available",
    "network_watermark",
    "parse_bits",
    "quantize8",
    "random_augment",
    "random_bits",
    "read_users",
    "regenerate",
    "tpr_at_fpr",
    "to_tiles",
    "user_fingerprint",
    "vae_roundtrip",
]
