"""Artifacts of the provenance family: the 64x64 shapes mosaics and the shipped watermark networks.

* :func:`mosaics` -- ``n`` 64x64 images, each a 2x2 mosaic of 32x32 shapes scenes, with the four tiles'
  captions (TinySD regenerates them tile by tile, exactly in distribution; see
  :mod:`diffzoo.provenance.tiles`).
* :func:`load_learned_watermark` / :func:`load_wouaf` -- the zoo's ``learned-watermark`` and ``wouaf``
  networks (kind ``watermark``).
"""

from __future__ import annotations

import torch

from diffzoo.data import shapes
from diffzoo.latent.model import LatentModel
from diffzoo.models.provenance import LearnedWatermark, WOUAFDecoder
from diffzoo.provenance.bits import parse_bits
from diffzoo.provenance.tiles import from_tiles
from diffzoo.provenance.watermarks import Watermark, fingerprint_reader, latent_reader, network_watermark
from diffzoo.zoo import load
from diffzoo.zoo.latent import load_tinysd

Tensor = torch.Tensor

#: Seeds of the provenance data (training and held-out evaluation never overlap).
TRAIN_SEED, EVAL_SEED = 5000, 6000
#: Safe-SD-style's default trigger word (appended to a prompt).
TRIGGER = "<wm>"
#: Watermark methods backed by zoo networks, and their default zoo names.
ZOO_WATERMARKS = {"learned": "learned-watermark", "wouaf": "wouaf", "safe-sd": "safe-sd"}


def mosaics(n: int, seed: int) -> tuple[Tensor, list[list[str]]]:
    """``(n, 3, 64, 64)`` mosaics in ``[-1, 1]`` and the per-tile captions (row-major, 4 per image)."""
    scenes = shapes.random_scenes(4 * int(n), seed=seed)
    tiles = shapes.render_batch(scenes)
    caps = [shapes.caption(s) for s in scenes]
    return from_tiles(tiles), [caps[4 * i : 4 * i + 4] for i in range(int(n))]


def load_learned_watermark(name: str = "learned-watermark") -> LearnedWatermark:
    zm = load(name, kinds=("watermark",))
    if not isinstance(zm.model, LearnedWatermark):
        raise TypeError(f"name: zoo model {name!r} is a {type(zm.model).__name__}, not a LearnedWatermark")
    return zm.model.eval().requires_grad_(False)


def load_wouaf(name: str = "wouaf") -> WOUAFDecoder:
    zm = load(name, kinds=("watermark",))
    if not isinstance(zm.model, WOUAFDecoder):
        raise TypeError(f"name: zoo model {name!r} is a {type(zm.model).__name__}, not a WOUAFDecoder")
    return zm.model.eval().requires_grad_(False)


def load_safe_sd(name: str = "safe-sd") -> tuple[LatentModel, LearnedWatermark, Tensor, str]:
    """A Safe-SD-style TinySD (``diffzoo train safe-sd``): the model, its latent watermark's decoder
    network, the message it generates and the trigger word."""
    zm = load(name, kinds=("latent-diffusion",))
    info = zm.config.get("watermark")
    if not info:
        raise ValueError(
            f"name: zoo model {name!r} carries no generative watermark (train one with `diffzoo train safe-sd`)"
        )
    return load_tinysd(name), load_learned_watermark(info["detector"]), parse_bits(info["message"]), info["trigger"]


def load_zoo_watermark(method: str, name: str | None = None) -> Watermark:
    """The :class:`~diffzoo.provenance.watermarks.Watermark` of a zoo-backed method (:data:`ZOO_WATERMARKS`):
    ``learned`` embeds and decodes; ``wouaf`` / ``safe-sd`` decode only (their marks are generated)."""
    if method not in ZOO_WATERMARKS:
        raise ValueError(f"method: {method!r} is not a zoo watermark; expected one of {sorted(ZOO_WATERMARKS)}")
    name = name or ZOO_WATERMARKS[method]
    if method == "learned":
        return network_watermark(load_learned_watermark(name))
    if method == "wouaf":
        return fingerprint_reader(load_wouaf(name))
    lm, net, _, _ = load_safe_sd(name)
    return latent_reader(net, lm)
