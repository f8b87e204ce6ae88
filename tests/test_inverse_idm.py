"""IDM: reversible couplings (exact inverse, memory-free backward = plain autograd), the two-level
IDM chain (gradient agreement, lower activation memory, exact projection), the memory meter."""

import pytest
import torch
from torch import nn

from diffzoo.core import linear
from diffzoo.inverse import CompressedSensing
from diffzoo.models.idm import IDMChain, IDMStep
from diffzoo.models.reversible import RevCoupling, SavedTensorMeter, rev_sequence


class TinyEps(nn.Module):
    """A float64-capable stand-in epsilon network ``net(x, t, cond)``."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x, t, cond=None):
        return self.c2(torch.tanh(self.c1(x) + (t / 1000.0)[:, None, None, None]))


def _grads(module):
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]


def _rel(ga, gb):
    num = sum(((a - b) ** 2).sum() for a, b in zip(ga, gb)).sqrt()
    return float(num / sum((a**2).sum() for a in ga).sqrt())


def _perturb(module, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_coupling_inverse_and_memory_free_backward_match_autograd():
    torch.manual_seed(0)
    blocks = nn.ModuleList(
        RevCoupling(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh()), v_init=0.3 + 0.2 * i) for i in range(3)
    ).double()
    x1 = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        y1, y2 = rev_sequence(blocks, x1, x2, invertible=False)
        r1, r2 = y1, y2
        for b in reversed(blocks):
            r1, r2 = b.inverse(r1, r2)
    assert torch.allclose(r1, x1, atol=1e-12) and torch.allclose(r2, x2, atol=1e-12)
    w1, w2 = torch.randn_like(y1), torch.randn_like(y2)
    res = []
    for inv in (False, True):
        blocks.zero_grad()
        x1.grad = x2.grad = None
        o1, o2 = rev_sequence(blocks, x1, x2, invertible=inv)
        ((o1 * w1).sum() + (o2 * w2).sum()).backward()
        res.append((o1.detach(), _grads(blocks) + [x1.grad.clone(), x2.grad.clone()]))
    assert torch.equal(res[0][0], res[1][0])
    assert _rel(res[0][1], res[1][1]) < 1e-10


def _chain(unet, dtype, steps=3):
    torch.manual_seed(0)
    chain = IDMChain(unet, linear(1000), steps=steps, ch=8, blocks=2).to(dtype)
    _perturb(chain)  # move off the zero-init heads so every parameter gets a gradient
    return chain


def _run(chain, op, x, invertible):
    chain.zero_grad()
    params = list(chain.parameters())
    with SavedTensorMeter(exclude=params) as meter:
        out = chain(op.A(x), op, invertible=invertible)
        (out - x).abs().mean().backward()
    return out.detach(), _grads(chain), meter.peak


def test_idm_chain_invertible_gradients_equal_plain_and_use_less_memory_float64():
    chain = _chain(TinyEps(), torch.float64, steps=4)
    op = CompressedSensing((1, 8, 8), 0.25)
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    o_plain, g_plain, m_plain = _run(chain, op, x, False)
    o_inv, g_inv, m_inv = _run(chain, op, x, True)
    assert torch.equal(o_plain, o_inv)
    assert _rel(g_plain, g_inv) < 1e-10
    assert all(float(g.abs().sum()) > 0 for g in g_plain)
    assert m_inv < 0.5 * m_plain


def test_idm_chain_with_digits_unet_float32_gradients_agree():
    from diffzoo.models.unet import DigitsUNet

    chain = _chain(DigitsUNet(ch=16, blocks=1, emb_dim=32), torch.float32)
    op = CompressedSensing((1, 8, 8), 0.1)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    _, g_plain, m_plain = _run(chain, op, x, False)
    _, g_inv, m_inv = _run(chain, op, x, True)
    assert _rel(g_plain, g_inv) < 1e-4
    assert m_inv < m_plain


def test_idm_schedule_and_projection():
    chain = _chain(TinyEps(), torch.float64)
    abar = chain.abar()
    assert abar[0] == 1 and bool((abar[1:] < abar[:-1]).all()) and bool((abar > 0).all())
    op = CompressedSensing((1, 8, 8), 0.1)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    y = op.A(x)
    chain.ctx.set(op, y)
    last = [b.f for b in chain.steps if isinstance(b.f, IDMStep) and b.f.k == 1][0]
    with torch.no_grad():
        out = last(torch.randn(3, 1, 8, 8, dtype=torch.float64))  # abar_0 = 1: the projected x0
    assert float((op.A(out) - y).abs().max()) < 1e-12


def test_saved_tensor_meter_counts_and_releases():
    w = torch.randn(1000, requires_grad=True)
    x = torch.randn(1000)
    with SavedTensorMeter(exclude=[w]) as m:
        z = torch.sin(x * w)  # saves x (4 kB) for d/dw and x*w (4 kB) for sin
        assert m.live == 8000
        z.sum().backward()
    assert m.peak == 8000 and m.live == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="v_init"):
        RevCoupling(nn.Identity(), v_init=1.0)
    chain = _chain(TinyEps(), torch.float64)
    with pytest.raises(ValueError, match="op"):
        chain.steps[0].f(torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="steps"):
        IDMChain(TinyEps(), linear(1000), steps=0)


@pytest.mark.parametrize("name", ["idm-cs10", "idm-cs30"])
def test_shipped_idm_reproduces_recorded_metrics(name):
    """Zoo integration: the shipped IDM chain re-measured on the test split matches its JSON metrics."""
    from diffzoo import zoo
    from diffzoo.recipes.idm import evaluate_idm
    from diffzoo.zoo.idm import load_idm

    if name not in zoo.names():
        pytest.skip(f"{name} not shipped")
    chain, op, zm = load_idm(name)
    got = evaluate_idm(chain, op)
    assert abs(got["psnr"] - zm.metrics["psnr"]) < 1e-3
    assert abs(got["ssim"] - zm.metrics["ssim"]) < 1e-4
