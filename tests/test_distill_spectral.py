"""Spectral Diffusion-style pieces (issue 12, section 5): the Haar DWT against PyWavelets, exact inversion,
the wavelet-gated blocks, the spectrum-aware loss (Parseval at alpha = 0) and the high-frequency ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.schedules import get_schedule
from diffzoo.distill.common import count_macs
from diffzoo.distill.spectral import (
    frequency_loss,
    high_frequency_ratio,
    radial_power,
    spectral_distill_loss,
    spectral_weights,
)
from diffzoo.models.registry import build
from diffzoo.models.wavelet import WGDown, WGUp, haar_dwt, haar_idwt

pywt = pytest.importorskip("pywt")
torch.set_num_threads(1)


def test_haar_dwt_matches_pywavelets():
    x = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bands = haar_dwt(x)
    for b in range(2):
        for c in range(3):
            ll, (lh, hl, hh) = pywt.dwt2(x[b, c].numpy(), "haar")
            for k, ref in enumerate((ll, lh, hl, hh)):
                np.testing.assert_allclose(bands[b, k, c].numpy(), ref, rtol=0, atol=1e-12)


def test_haar_idwt_is_the_exact_inverse_and_orthonormal():
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bands = haar_dwt(x)
    torch.testing.assert_close(haar_idwt(bands), x, rtol=0, atol=1e-12)
    assert abs(float(bands.pow(2).sum() - x.pow(2).sum())) < 1e-9  # energy preserved
    ref = pywt.idwt2((bands[0, 0, 0].numpy(), tuple(bands[0, k, 0].numpy() for k in (1, 2, 3))), "haar")
    np.testing.assert_allclose(ref, x[0, 0].numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="x"):
        haar_dwt(torch.zeros(1, 1, 5, 4))


def test_open_gates_give_plain_dwt_downsampling():
    """Gates all 1 and a 1x1 mix that keeps LL: WG-Down is the (scaled) 2x2 average pooling."""
    down = WGDown(2)
    with torch.no_grad():
        down.gate.net[-1].weight.zero_()
        down.gate.net[-1].bias.fill_(50.0)  # sigmoid -> 1
        down.mix.weight.zero_()
        down.mix.bias.zero_()
        down.mix.weight[0, 0] = down.mix.weight[1, 1] = 1.0  # channel c <- LL of channel c
    x = torch.randn(3, 2, 8, 8)
    torch.testing.assert_close(down(x), 2 * torch.nn.functional.avg_pool2d(x, 2), rtol=1e-5, atol=1e-5)
    assert WGUp(4)(torch.randn(2, 4, 4, 4)).shape == (2, 4, 8, 8)


def test_wavelet_unet_arms_are_comparable():
    cfg = {"ch": 8, "blocks": 1, "mults": [1, 2], "num_classes": 10, "emb_dim": 32}
    plain, wg = build("wavelet_unet", wavelet=False, **cfg), build("wavelet_unet", wavelet=True, **cfg)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([10.0, 500.0]), torch.tensor([1, 10])
    assert plain(x, t, y).shape == wg(x, t, y).shape == (2, 1, 8, 8)
    m_plain, m_wg = count_macs(plain, x[:1], t[:1], y[:1]), count_macs(wg, x[:1], t[:1], y[:1])
    assert 0.8 < m_wg / m_plain < 1.2  # about equal MACs


def test_frequency_loss_parseval_and_weights():
    g = torch.Generator().manual_seed(2)
    a, b, x0 = (torch.randn(4, 1, 8, 8, generator=g) for _ in range(3))
    ones = spectral_weights(x0, alpha=0.0)
    torch.testing.assert_close(ones, torch.ones_like(ones))
    torch.testing.assert_close(frequency_loss(a, b, ones), (a - b).pow(2).mean(), rtol=1e-5, atol=1e-6)
    w = spectral_weights(x0, alpha=-1.0)
    assert w.shape == (4, 1, 8, 8) and torch.allclose(w.mean((-2, -1)), torch.ones(4, 1), atol=1e-5)
    mag = torch.fft.fft2(x0.double(), norm="ortho").abs()
    small, large = mag.flatten(1).argmin(1), mag.flatten(1).argmax(1)
    assert bool((w.flatten(1).gather(1, small[:, None]) > w.flatten(1).gather(1, large[:, None])).all())


def test_spectral_loss_terms():
    """With both distillation weights 0 the loss is the plain DDPM loss; a student equal to the teacher
    pays nothing for the distillation terms."""
    sch = get_schedule("linear")
    net = build("wavelet_unet", wavelet=True, ch=8, blocks=1, mults=[1, 2], num_classes=10, emb_dim=32)
    teacher = Denoiser(net, sch, "epsilon")
    x0 = torch.randn(4, 1, 8, 8)
    y = torch.arange(4)
    plain = spectral_distill_loss(
        net, teacher, x0, y, torch.Generator().manual_seed(3), lambda_spatial=0, lambda_freq=0
    )
    full = spectral_distill_loss(net, teacher, x0, y, torch.Generator().manual_seed(3))
    torch.testing.assert_close(plain, full, rtol=1e-5, atol=1e-6)


def test_high_frequency_ratio():
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    assert abs(high_frequency_ratio(x, x) - 1) < 1e-12
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    assert high_frequency_ratio(blurred, x) < 0.5
    assert radial_power(x).ndim == 1
