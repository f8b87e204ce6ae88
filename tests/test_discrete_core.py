"""Masked diffusion core: schedules, float64 categorical sampling, the ELBO, FHS vs ancestral, bad input."""

import math

import pytest
import torch
from scipy import stats

from diffzoo.discrete import (
    CallCounter,
    JointOracle,
    MaskSchedule,
    ancestral_sample,
    check_tokens,
    confidence_sample,
    first_hitting_sample,
    masked_diffusion_loss,
    sample_categorical,
)
from diffzoo.discrete.categorical import race_noise
from diffzoo.discrete.samplers import cosine_unmask_counts
from diffzoo.models.transformer import MaskedTransformer

torch.set_num_threads(1)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def oracle():
    p = torch.rand(3, 3, 3, generator=_gen(1), dtype=torch.float64) ** 3  # correlated, 27 states
    return JointOracle(p)


def _chi2_pvalue(oracle, x):
    counts = torch.bincount(oracle.state_index(x), minlength=oracle.joint.numel()).double()
    expected = oracle.joint * counts.sum()
    return stats.chisquare(counts.numpy(), expected.numpy()).pvalue


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_inverse_and_weight(name):
    s = MaskSchedule(name)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    assert torch.allclose(s.t_of_alpha(s.alpha(t)), t, atol=1e-10)
    eps = 1e-6
    fd = (s.alpha(t + eps) - s.alpha(t - eps)) / (2 * eps)
    assert torch.allclose(s.d_alpha(t), fd, atol=1e-6)
    if name == "linear":
        assert torch.allclose(s.elbo_weight(t), 1 / t)


def test_categorical_float64_frequencies():
    p = torch.tensor([0.5, 0.3, 0.15, 0.04, 0.01], dtype=torch.float64)
    draws = sample_categorical(p.expand(40000, 5), _gen())
    counts = torch.bincount(draws, minlength=5).double()
    assert stats.chisquare(counts.numpy(), (p * 40000).numpy()).pvalue > 1e-3


def test_float32_race_truncates_the_gumbel_and_starves_tiny_ratios():
    """fp32 exponentials never fall below ~5.96e-8 (Gumbel capped at 24 ln 2); fp64 ones do (cap 53 ln 2)."""
    e32 = race_noise((1 << 21,), _gen(), "float32")
    e64 = race_noise((1 << 21,), _gen(), "float64")
    assert float(e32.min()) >= 5.9e-8 and float(-torch.log(e32).max()) <= 24 * math.log(2) + 1e-3
    assert float(e64.min()) < 5.9e-8 * 4 and float(e64.min()) > 0
    # consequence: a token at ratio r = 1e-8 to the top one wins in fp32 only when E_top > 5.96, so the
    # fp32 win rate is <= P(E > 5.96) * (its own chance of drawing the smallest grid value) -- versus r.
    p = torch.tensor([1.0, 1e-8], dtype=torch.float64).expand(1 << 20, 2)
    assert int(sample_categorical(p, _gen(5), "float32").sum()) == 0


def test_uniform_model_loss_is_log_k():
    """A uniform predictor has NELBO = log K per token: exactly for the any-order loss, in mean for the ELBO."""

    class Uniform(torch.nn.Module):
        vocab_size, seq_len = 5, 16

        def forward(self, x):
            return torch.zeros(*x.shape, 5)

    x0 = torch.randint(0, 5, (64, 16), generator=_gen())
    lo = masked_diffusion_loss(Uniform(), x0, generator=_gen(), loss_type="any_order")
    assert float(lo) == pytest.approx(math.log(5), rel=1e-6)
    vals = [float(masked_diffusion_loss(Uniform(), x0, s, _gen(i))) for i in range(20) for s in ("linear", "cosine")]
    assert sum(vals) / len(vals) == pytest.approx(math.log(5), rel=0.03)


def test_loss_trains_transformer_gradients_finite():
    m = MaskedTransformer(vocab_size=5, seq_len=8, d_model=16, n_layers=1, n_heads=2)
    x0 = torch.randint(0, 5, (8, 8), generator=_gen())
    loss = masked_diffusion_loss(m, x0, "cosine", _gen())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_fhs_exact_calls_times_and_law(oracle):
    counter = CallCounter(oracle)
    x, times = first_hitting_sample(counter, 6000, generator=_gen(2), return_times=True)
    assert counter.nfe == oracle.seq_len and (x != oracle.vocab_size).all()
    assert (times[:, 1:] < times[:, :-1]).all()
    # first hitting time with L masked tokens at t=1 (linear): tau = u^{1/L}, i.e. CDF tau^L
    assert stats.kstest(times[:, 0].numpy(), lambda v: v**oracle.seq_len).pvalue > 1e-3
    assert _chi2_pvalue(oracle, x) > 1e-3


def test_ancestral_matches_fhs_law_and_one_step_does_not(oracle):
    x = ancestral_sample(oracle, 6000, 128, generator=_gen(3))
    assert _chi2_pvalue(oracle, x) > 1e-3
    x1 = ancestral_sample(oracle, 6000, 1, generator=_gen(3))  # all tokens at once: product of marginals
    assert _chi2_pvalue(oracle, x1) < 1e-6


def test_factorised_law_exact_for_any_step_count():
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    oracle = JointOracle(torch.einsum("i,j,k->ijk", p, p.flip(0), p))
    for steps in (1, 2):
        assert _chi2_pvalue(oracle, ancestral_sample(oracle, 4000, steps, generator=_gen(steps))) > 1e-3


def test_ancestral_cache_is_exact_and_saves_calls(oracle):
    a, b = CallCounter(oracle), CallCounter(oracle)
    xa = ancestral_sample(a, 500, 40, generator=_gen(4), cache=True)
    xb = ancestral_sample(b, 500, 40, generator=_gen(4), cache=False)
    assert torch.equal(xa, xb)
    assert a.rows < b.rows


def test_per_sample_generators_are_batch_invariant(oracle):
    seeds = [11, 12, 13, 14]
    gens = lambda s: [torch.Generator().manual_seed(i) for i in s]
    full = first_hitting_sample(oracle, 4, generator=gens(seeds))
    part = first_hitting_sample(oracle, 2, generator=gens(seeds[2:]))
    assert torch.equal(full[2:], part)


def test_confidence_sampler_unmasks_all_in_steps():
    counts = cosine_unmask_counts(64, 8)
    assert sum(counts) == 64 and all(c >= 1 for c in counts)
    m = MaskedTransformer(vocab_size=5, seq_len=8, d_model=16, n_layers=1, n_heads=2).eval()
    c = CallCounter(m)
    x = confidence_sample(c, 3, 4, generator=_gen())
    assert c.nfe == 4 and (x < 5).all()


def test_bad_input_errors():
    m = MaskedTransformer(vocab_size=5, seq_len=8, d_model=16, n_layers=1, n_heads=2)
    with pytest.raises(ValueError, match="token ids"):
        m(torch.full((2, 8), 6))
    with pytest.raises(ValueError, match="trained for"):
        m(torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="seq_len"):
        first_hitting_sample(m, 2, seq_len=10)
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        check_tokens(torch.tensor([[5]]), 5, "y", allow_mask=False)
    with pytest.raises(ValueError, match="precision"):
        ancestral_sample(m, 2, 4, precision="float16")
    with pytest.raises(ValueError, match="x0"):
        masked_diffusion_loss(m, torch.full((2, 8), 5))
