"""LSD / LSD+ as the paper defines them (:mod:`diffzoo.discrete.lsd_paper`): the concrete score of a
masked model against the exact score of a tractable joint, the coupled Euler sampler, and training."""

import itertools

import pytest
import torch

from diffzoo.discrete import JointOracle
from diffzoo.discrete.lsd_paper import (
    CoupledNoise,
    LSDStudent,
    concrete_score,
    euler_rollout,
    lsd_sample,
    scale_score,
    teacher_cache,
    teacher_caches,
    train_lsd_paper,
    uniform_times,
)
from diffzoo.discrete.masked import predictive_probs
from diffzoo.models.transformer import MaskedTransformer

torch.set_num_threads(1)


def _joint(k=3, length=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((k,) * length, generator=g, dtype=torch.float64) + 0.05


def _exact_marginal(joint: torch.Tensor, x: tuple, alpha: float) -> float:
    """``p_t(x) = sum_{x0} p0(x0) prod_i q(x^i | x0^i)`` by enumeration (mask id = K)."""
    k = joint.shape[0]
    p0 = joint / joint.sum()
    tot = 0.0
    for x0 in itertools.product(range(k), repeat=joint.ndim):
        w = float(p0[x0])
        for xi, x0i in zip(x, x0):
            w *= (1 - alpha) if xi == k else (alpha if xi == x0i else 0.0)
        tot += w
    return tot


@pytest.mark.parametrize("t", [0.2, 0.5, 0.9])
def test_concrete_score_matches_exact_ratio(t):
    joint = _joint()
    oracle = JointOracle(joint)
    k, alpha = 3, 1.0 - t  # linear schedule
    for x in [(3, 3, 3), (0, 3, 3), (3, 1, 3), (2, 3, 0)]:
        xt = torch.tensor([x])
        s = concrete_score(predictive_probs(oracle, xt), xt, t)
        px = _exact_marginal(joint, x, alpha)
        for i in range(3):
            for v in range(k):
                if x[i] != k:
                    assert float(s[0, i, v]) == 0.0
                    continue
                y = list(x)
                y[i] = v
                exact = _exact_marginal(joint, tuple(y), alpha) / px
                assert float(s[0, i, v]) == pytest.approx(exact, rel=1e-9)


def test_plain_euler_matches_the_exact_law_with_many_steps():
    joint = _joint(2, 3, seed=1)
    oracle = JointOracle(joint)
    n = 20000
    noise = CoupledNoise.draw(n, 3, torch.Generator().manual_seed(0))
    x = euler_rollout(oracle, noise, uniform_times(64)).x
    idx = (x * torch.tensor([4, 2, 1])).sum(1)
    freq = torch.bincount(idx, minlength=8).double() / n
    p = (joint / joint.sum()).flatten()
    assert (freq - p).abs().max() < 0.015


def test_coupling_gives_the_teacher_masked_set_to_the_plain_student():
    torch.manual_seed(0)
    m = MaskedTransformer(vocab_size=5, seq_len=12, d_model=16, n_layers=1, n_heads=2).eval()
    noise = CoupledNoise.draw(6, 12, torch.Generator().manual_seed(1))
    teacher = euler_rollout(m, noise, uniform_times(16), record=True)
    student = euler_rollout(m, noise, uniform_times(4), record=True)
    for k in range(4):
        assert torch.equal(student.states[k] == 5, teacher.states[4 * k] == 5)


def test_scale_score_forms():
    s = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    assert torch.allclose(scale_score(s, 2.0, "paper"), 2 * s)
    assert torch.allclose(scale_score(s, 2.0, "code"), torch.tensor([0.0, 0.25, 4.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="form"):
        scale_score(s, 1.0, "other")


def test_student_times_and_errors():
    st = LSDStudent(4, learn_times=True)
    assert torch.allclose(st.times(), uniform_times(4))
    with pytest.raises(ValueError, match="steps"):
        LSDStudent(0)


def test_lsd_and_lsd_plus_train_and_move_coefficients():
    torch.manual_seed(0)
    m = MaskedTransformer(vocab_size=5, seq_len=12, d_model=16, n_layers=1, n_heads=2).eval()
    noise = CoupledNoise.draw(16, 12, torch.Generator().manual_seed(2))
    cache = teacher_cache(m, 4, noise, teacher_steps=16)
    with pytest.raises(ValueError, match="teacher_steps"):
        teacher_cache(m, 3, noise, teacher_steps=16)
    for plus in (False, True):
        res = train_lsd_paper(m, 4, cache, learn_times=plus, iters=3, batch=8)
        assert len(res.losses) == 3 and all(torch.isfinite(torch.tensor(res.losses)))
        assert not torch.allclose(res.student.phi.detach(), torch.ones(4, dtype=torch.float64))
        if plus:
            assert not torch.allclose(res.student.kappa.detach(), torch.full((4,), 0.25, dtype=torch.float64))
        x = lsd_sample(m, res.student, 5, torch.Generator().manual_seed(0))
        assert x.shape == (5, 12) and int(x.max()) < 5


def test_lsd_sample_is_batch_invariant_with_per_sample_generators():
    torch.manual_seed(0)
    m = MaskedTransformer(vocab_size=5, seq_len=12, d_model=16, n_layers=1, n_heads=2).eval()
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    a = lsd_sample(m, 4, 3, gens([1, 2, 3]))
    b = lsd_sample(m, 4, 1, gens([2]))
    assert torch.equal(a[1:2], b)


def test_teacher_caches_share_one_run_and_sum_blocks():
    torch.manual_seed(0)
    m = MaskedTransformer(vocab_size=5, seq_len=12, d_model=16, n_layers=1, n_heads=2).eval()
    noise = CoupledNoise.draw(4, 12, torch.Generator().manual_seed(3))
    both = teacher_caches(m, [2, 4], noise, teacher_steps=8)
    one = teacher_cache(m, 4, noise, teacher_steps=8)
    assert torch.equal(both[4].x, one.x) and torch.equal(both[2].x, one.x)
    assert all(torch.equal(a, b) for a, b in zip(both[4].scores, one.scores))
    assert torch.equal(both[2].scores[1], one.scores[2])
    assert torch.allclose(both[2].block[0], one.block[0] + one.block[1], atol=1e-5)


def test_code_form_at_phi_one_is_the_plain_sampler():
    torch.manual_seed(0)
    m = MaskedTransformer(vocab_size=5, seq_len=12, d_model=16, n_layers=1, n_heads=2).eval()
    noise = CoupledNoise.draw(6, 12, torch.Generator().manual_seed(4))
    plain = euler_rollout(m, noise, uniform_times(4)).x
    code = euler_rollout(m, noise, uniform_times(4), torch.ones(4, dtype=torch.float64), "code").x
    assert torch.equal(plain, code)
