"""APS-style posterior sampling (APS-I / APS-II, arXiv 2510.02291 as described): invariants on tiny problems."""

import math

import pytest
import torch

from diffzoo.bench.discrete import aps_ordering, ssim_loss
from diffzoo.core.random import generators_from_seeds
from diffzoo.discrete.aps import (
    _gram_blocks,
    aps_style_sample,
    measure_tokens,
    nearest_code,
    quantized_expectation_fit,
    straight_through_quantize,
)
from diffzoo.discrete.samplers import cosine_unmask_counts
from diffzoo.discrete.tokens import TokenSpace, levels_space
from diffzoo.inverse.operators import Inpainting, get_operator
from diffzoo.models.transformer import MaskedTransformer

torch.set_num_threads(1)
K, SHAPE = 17, (1, 4, 4)
SPACE = levels_space(K, SHAPE)
IDENTITY = Inpainting(SHAPE, torch.ones(4, 4, dtype=torch.bool))  # y = x (flattened)


def _gen(s=0):
    return torch.Generator().manual_seed(s)


class Fixed(torch.nn.Module):
    """A masked 'model' predicting the same per-token log-probabilities everywhere."""

    def __init__(self, logp: torch.Tensor, seq_len: int = 16):
        super().__init__()
        self.vocab_size, self.seq_len, self.logp = logp.shape[-1], seq_len, logp

    def forward(self, x):
        return self.logp.expand(*x.shape, -1).clone()


class Recorder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.vocab_size, self.seq_len, self.seen = model, model.vocab_size, model.seq_len, []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.model(x)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MaskedTransformer(vocab_size=K, seq_len=16, d_model=16, n_layers=1, n_heads=2).eval()


@pytest.fixture(scope="module")
def x0():
    return torch.randint(0, K, (4, 16), generator=_gen(1))


def test_straight_through_forward_is_a_code_and_backward_is_the_expectation():
    cb = torch.randn(12, 4, generator=_gen(2), dtype=torch.float64)
    space = TokenSpace(cb, (1, 4, 4), patch=2)  # 4 tokens of 2x2 patches
    logits = torch.randn(3, 4, 12, generator=_gen(3), dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 4, generator=_gen(4), dtype=torch.float64)
    e = space.expected_embed(torch.softmax(logits, -1))
    st, idx = straight_through_quantize(e, space)
    assert torch.allclose(st.detach(), cb[idx], atol=1e-15, rtol=0) and torch.equal(idx, space.quantize(e.detach()))
    (g_st,) = torch.autograd.grad((st * w).sum(), logits, retain_graph=True)
    (g_e,) = torch.autograd.grad((e * w).sum(), logits)
    assert torch.allclose(g_st, g_e) and g_st.abs().sum() > 0
    pts = torch.randn(5, 7, 4, generator=_gen(5), dtype=torch.float64)
    assert torch.equal(nearest_code(pts, cb), space.quantize(pts))


@pytest.mark.parametrize("variant", ["I", "II"])
def test_identity_noiseless_recovers_the_measured_tokens(tiny, x0, variant):
    y = measure_tokens(x0, IDENTITY, SPACE)
    x = aps_style_sample(tiny, IDENTITY, y, steps=4, variant=variant, inner_steps=60, lr=0.2)
    assert torch.equal(x, x0)


def test_zero_prior_mass_token_is_reached():
    """The prior puts 0.9 / 0.1 on the extreme levels and nothing on the measured mid level: the fitted
    expectation moves inside the codebook's hull and its nearest code is the zero-mass token."""
    logp = torch.full((K,), -math.inf, dtype=torch.float64)
    logp[0], logp[K - 1] = math.log(0.9), math.log(0.1)
    model = Fixed(logp)
    x0 = torch.full((2, 16), K // 2)
    y = measure_tokens(x0, IDENTITY, SPACE)
    mask = torch.full_like(x0, K)
    phi, anchor = quantized_expectation_fit(model(mask), mask, IDENTITY, y, SPACE, steps=100, lr=0.1)
    assert torch.equal(anchor, x0)
    assert float(torch.softmax(phi, -1)[..., K // 2].max()) < 1e-200  # still zero mass
    assert torch.equal(aps_style_sample(model, IDENTITY, y, steps=3, variant="II", inner_steps=100), x0)


@pytest.mark.parametrize("variant", ["I", "II"])
def test_remasking_keeps_the_schedule_count(tiny, x0, variant):
    op = get_operator("sr", SHAPE)
    y = measure_tokens(x0, op, SPACE, 0.05, _gen())
    rec = Recorder(tiny)
    x = aps_style_sample(rec, op, y, steps=5, variant=variant, inner_steps=5, kl_weight=0.1)
    unmasked = [int((s < K).sum(1).unique()) for s in rec.seen + [x]]
    counts = cosine_unmask_counts(16, 5)
    assert len(rec.seen) == 5 and unmasked == [sum(counts[:i]) for i in range(6)]
    for before, after in zip(rec.seen, rec.seen[1:] + [x]):  # clean tokens never change
        keep = before < K
        assert torch.equal(after[keep], before[keep])


def test_uninformative_measurement_makes_both_variants_agree(tiny, x0):
    """With A = 0 the fit never leaves the prior, so posterior and prior confidence give the same order."""
    op = get_operator("zero", SHAPE)
    y = measure_tokens(x0, op, SPACE)
    a = aps_style_sample(tiny, op, y, steps=4, variant="I", inner_steps=5)
    b = aps_style_sample(tiny, op, y, steps=4, variant="II", inner_steps=5)
    assert torch.equal(a, b)


def test_kl_term_holds_the_fit_at_the_prior(tiny, x0):
    y = measure_tokens(x0, IDENTITY, SPACE)
    mask = torch.full_like(x0, K)
    with torch.no_grad():
        logits = tiny(mask)
    prior = torch.softmax(logits.double(), -1)
    free, _ = quantized_expectation_fit(logits, mask, IDENTITY, y, SPACE, steps=40, lr=0.2)
    held, _ = quantized_expectation_fit(logits, mask, IDENTITY, y, SPACE, steps=40, lr=0.2, kl_weight=1e4)
    dist = lambda phi: float((torch.softmax(phi, -1) - prior).abs().sum(-1).max())
    assert dist(held) < 0.05 < dist(free)


def test_perceptual_term_alone_fits(tiny, x0):
    """A perceptual loss (here squared error) with no L1 still drives the fit; it gets (pred, y) per sample."""
    y = measure_tokens(x0, IDENTITY, SPACE)
    seen = []

    def sq(pred, yy):
        seen.append((pred.shape, pred.requires_grad))
        return ((pred - yy) ** 2).sum(1)

    x = aps_style_sample(tiny, IDENTITY, y, steps=4, inner_steps=60, lr=0.2, l1_weight=0.0, perceptual=sq)
    assert torch.equal(x, x0) and seen[0] == ((4, 16), True)


def test_per_sample_generators_are_batch_invariant(tiny, x0):
    op = get_operator("gaussian_blur", SHAPE)
    y = measure_tokens(x0, op, SPACE, 0.05, _gen())
    kw = dict(steps=4, inner_steps=8, kl_weight=0.1, choice_temperature=2.0)
    batch = aps_style_sample(tiny, op, y, generator=generators_from_seeds([5, 6, 7, 8]), **kw)
    alone = torch.cat(
        [aps_style_sample(tiny, op, y[i : i + 1], generator=generators_from_seeds([5 + i]), **kw) for i in range(4)]
    )
    assert torch.equal(batch, alone)
    again = aps_style_sample(tiny, op, y, generator=generators_from_seeds([5, 6, 7, 8]), **kw)
    assert torch.equal(batch, again)


def test_bad_input(tiny, x0):
    op = get_operator("sr", SHAPE)
    y = measure_tokens(x0, op, SPACE)
    for kw, arg in (
        (dict(variant="III"), "variant"),
        (dict(steps=0), "steps"),
        (dict(inner_steps=-1), "inner_steps"),
        (dict(lr=0.0), "lr"),
        (dict(kl_weight=-1.0), "kl_weight"),
        (dict(l1_weight=-1.0), "l1_weight"),
        (dict(choice_temperature=-1.0), "choice_temperature"),
    ):
        with pytest.raises(ValueError, match=arg):
            aps_style_sample(tiny, op, y, **kw)
    with pytest.raises(TypeError, match="perceptual"):
        aps_style_sample(tiny, op, y, perceptual=3.0)
    with pytest.raises(ValueError, match="y"):
        aps_style_sample(tiny, op, torch.zeros(4, 1, 3, 3))
    with pytest.raises(ValueError, match="op"):
        aps_style_sample(tiny, get_operator("sr", (1, 8, 8)), torch.zeros(4, 1, 4, 4))
    with pytest.raises(ValueError, match="generator"):
        aps_style_sample(
            tiny, op, y, steps=2, inner_steps=1, choice_temperature=1.0, generator=generators_from_seeds([1, 2])
        )


def test_split_gibbs_gram_blocks_are_the_per_channel_blocks():
    a = get_operator("gaussian_blur", (3, 4, 4)).matrix(torch.float64)
    blocks = _gram_blocks(a, 3)
    assert len(blocks) == 3
    assert torch.allclose(torch.block_diag(*[g for _, g in blocks]), a.T @ a)
    mix = get_operator("colorize", (3, 4, 4)).matrix(torch.float64)  # rows mix channels: one block
    (only,) = _gram_blocks(mix, 3)
    assert torch.allclose(only[1], mix.T @ mix)


def test_bench_ssim_term_and_ordering_table():
    for name in ("random_inpaint", "sr"):  # vector and image measurements
        op = get_operator(name, (1, 8, 8))
        y = op.forward(torch.rand(2, 1, 8, 8, generator=_gen(), dtype=torch.float64) * 2 - 1)
        pred = (y + 0.3 * torch.randn(y.shape, generator=_gen(1), dtype=torch.float64)).requires_grad_(True)
        loss = ssim_loss(op)(pred, y)
        (g,) = torch.autograd.grad(loss.sum(), pred)
        assert loss.shape == (2,) and bool((loss > 0).all()) and torch.isfinite(g).all()
        assert torch.allclose(ssim_loss(op)(y, y), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    rows = [
        dict(task="t", method=m, PSNR=p, SSIM=s, **{"class acc": c})
        for m, p, s, c in (
            ("APS-II", 3.0, 0.5, 1.0),
            ("APS-I", 2.0, 0.6, 1.0),
            ("prior confidence (eta=0)", 1.0, 0.1, 0.5),
        )
    ]
    (row,) = aps_ordering(rows)
    assert row["PSNR"] == "II > I > prior" and row["SSIM"] == "I > II > prior"
    assert row["class acc"] == "II = I > prior" and row["paper's ordering (PSNR and SSIM)"] == "no"
