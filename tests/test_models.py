"""Models: registry, shapes, conditioning semantics, encoder/decoder split, Denoiser wrapping."""

from __future__ import annotations

import pytest
import torch

from diffzoo.core import Denoiser, linear
from diffzoo.models.registry import archs, build


def test_registry_knows_foundation_archs():
    assert {"mlp", "digits_unet", "digit_classifier"} <= set(archs())
    with pytest.raises(ValueError, match="arch"):
        build("no-such-arch")


def test_mlp_shapes_and_time_dependence():
    torch.manual_seed(0)
    m = build("mlp", dim=2, hidden=32, depth=2)
    x = torch.randn(5, 2)
    a, b = m(x, torch.full((5,), 10.0)), m(x, torch.full((5,), 900.0))
    assert a.shape == (5, 2) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="x"):
        m(torch.randn(5, 3), torch.zeros(5))


def test_unet_null_class_and_split():
    torch.manual_seed(0)
    m = build("digits_unet", ch=16, blocks=1, mults=[1, 2], num_classes=10).eval()
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0.0, 10.0, 500.0, 999.0])
    y = torch.tensor([1, 2, 3, 4])
    out = m(x, t, y)
    assert out.shape == x.shape
    assert torch.allclose(m(x, t, None), m(x, t, torch.full((4,), 10)))
    assert not torch.allclose(out, m(x, t, None))
    emb = m.embed(t, y, 4, x.device)
    h, hs = m.encode(x, emb)
    assert torch.allclose(m.decode(h, hs, emb), out)
    # one sample's output does not depend on the rest of its batch
    assert torch.allclose(m(x[:1], t[:1], y[:1]), out[:1], atol=1e-6)


def test_unet_default_size_and_denoiser():
    m = build("digits_unet", ch=32, blocks=1, mults=[1, 2], num_classes=10)
    n = sum(p.numel() for p in m.parameters())
    assert 4e5 < n < 8e5
    den = Denoiser(m, linear(), "epsilon")
    x0, eps = den.x0_eps(torch.randn(2, 1, 8, 8), torch.tensor([100.0, 200.0]), torch.tensor([3, 10]))
    assert x0.shape == eps.shape == (2, 1, 8, 8)


def test_classifier_features_and_logits():
    m = build("digit_classifier").eval()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert m.features(x).shape == (3, 128) and m(x).shape == (3, 10)
    with pytest.raises(ValueError, match="x"):
        m.features(torch.rand(3, 1, 16, 16))


def test_mlp_fourier_input_encoding():
    m = build("mlp", dim=2, hidden=16, depth=1, fourier_octaves=3)
    x = torch.tensor([[0.5, -1.0]])
    enc = m.encode_input(x)
    assert enc.shape == (1, 14) and torch.equal(enc[:, :2], x)
    assert torch.allclose(enc[0, 2:8], torch.sin(torch.tensor([0.5, 1.0, 2.0, -1.0, -2.0, -4.0])))
    assert m(x, torch.tensor([3.0])).shape == (1, 2)
