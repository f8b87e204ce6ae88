"""EDICT / DDPM-inversion exactness on the TinySD architecture (random init) and, when shipped, the zoo's
trained TinySD; exactness is a property of the algorithm, so it must hold for both."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffzoo.inversion import invert, reconstruct
from diffzoo.zoo.latent import latent_model

torch.set_num_threads(1)


def _tinysd_random(dtype):
    from diffzoo.models.tinysd import TinySD

    torch.manual_seed(0)
    return latent_model(TinySD().eval().requires_grad_(False).to(dtype))


def _tinysd_zoo(dtype):
    from diffzoo import zoo

    if "tinysd" not in zoo.names():
        pytest.skip("zoo weights 'tinysd' not shipped")
    from diffzoo.zoo.latent import load_tinysd

    return load_tinysd("tinysd").to(dtype=dtype)


def _scene(seed=0):
    """A shapes-world image (1, 3, 32, 32) in [-1, 1] and its caption."""
    from diffzoo.data import shapes

    scene = shapes.random_scene(torch.Generator().manual_seed(seed))
    return shapes.render(scene)[None], shapes.caption(scene)


def _edict_error(model, net_dtype, state_dtype):
    img, prompt = _scene()
    img = img.to(net_dtype)
    with torch.no_grad():
        z = model.encode_image(img).to(state_dtype)
    r = invert("edict", model, img, prompt, num_steps=10, guidance=3.0, dtype=state_dtype)
    return float((reconstruct(r) - z).abs().max())


def test_edict_exact_on_random_tinysd():
    assert _edict_error(_tinysd_random(torch.float64), torch.float64, torch.float64) < 1e-9
    # a float32 network with float64 states (the official code's double casting, minus the network):
    # every eps is recomputed from the same float32-rounded input, so the round trip stays exact
    assert _edict_error(_tinysd_random(torch.float32), torch.float32, torch.float64) < 1e-9


def test_edict_exact_on_zoo_tinysd():
    assert _edict_error(_tinysd_zoo(torch.float64), torch.float64, torch.float64) < 1e-9
    assert _edict_error(_tinysd_zoo(torch.float32), torch.float32, torch.float32) < 1e-4


def test_ddpm_exact_on_tinysd():
    model = _tinysd_random(torch.float64)
    img, prompt = _scene()
    img = img.double()
    r = invert(
        "ddpm", model, img, prompt, num_steps=10, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        z = model.encode_image(img)
    assert float((reconstruct(r) - z).abs().max()) < 1e-12
