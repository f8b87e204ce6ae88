"""APS-like posterior sampling, its baselines, and LSD students: invariants on tiny models and oracles."""

import pytest
import torch

from diffzoo.discrete import CallCounter, confidence_sample
from diffzoo.discrete.aps import (
    aps_sample,
    codebook,
    measure_tokens,
    quantized_expectation_guidance,
    replacement_sample,
    smc_sample,
    split_gibbs_sample,
    tokens_to_images,
)
from diffzoo.discrete.lsd import (
    StudentSampler,
    run_student,
    student_outcome_logprobs,
    student_sample,
    teacher_state,
    teacher_trajectories,
    train_lsd,
)
from diffzoo.discrete.samplers import ancestral_step_probs
from diffzoo.discrete.tokens import levels_space
from diffzoo.inverse.operators import get_operator
from diffzoo.models.transformer import MaskedTransformer

torch.set_num_threads(1)
K, SHAPE = 17, (1, 4, 4)
SPACE = levels_space(K, SHAPE)


def _gen(s=0):
    return torch.Generator().manual_seed(s)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MaskedTransformer(vocab_size=K, seq_len=16, d_model=16, n_layers=1, n_heads=2).eval()


@pytest.fixture(scope="module")
def x0():
    return torch.randint(0, K, (6, 16), generator=_gen(1))


def test_codebook_round_trip(x0):
    img = tokens_to_images(x0, SPACE)
    assert img.shape == (6, *SHAPE) and img.min() >= -1 and img.max() <= 1
    assert torch.equal(SPACE.encode(img), x0)
    assert torch.allclose(codebook(17)[8], torch.tensor(0.0, dtype=torch.float64))


def test_guidance_zero_at_consistent_code_and_finite(tiny, x0):
    """Straight-through signal is finite, and vanishes when the quantized expectation already fits y."""
    op = get_operator("gaussian_blur", SHAPE)
    y = measure_tokens(x0, op, SPACE)
    mask = torch.full_like(x0, K)
    logits = torch.randn(6, 16, K, generator=_gen(), dtype=torch.float64)
    g = quantized_expectation_guidance(logits, mask, op, y, sigma=0.1, space=SPACE, eta=1.0, iters=2)
    assert torch.isfinite(g).all() and not torch.allclose(g, logits)
    peaked = torch.nn.functional.one_hot(x0, K).double() * 60.0  # expectation = the true codes
    g2 = quantized_expectation_guidance(peaked, mask, op, y, sigma=0.1, space=SPACE, eta=1.0, iters=1)
    assert torch.allclose(g2.argmax(-1), x0)
    op_lin = get_operator("box_inpaint", SHAPE)
    y_in = measure_tokens(x0, op_lin, SPACE)
    g3 = quantized_expectation_guidance(peaked, mask, op_lin, y_in, sigma=0.1, space=SPACE, eta=1.0, iters=1)
    d = (g3 - peaked).gather(-1, x0[..., None])  # the true code's logit is unchanged (zero gradient)
    assert torch.allclose(d, torch.zeros_like(d), atol=1e-9)


def test_inpainting_likelihood_is_exact_quadratic():
    """For inpainting the guidance adds -(E_k - y_i)^2 / (2 sigma^2) up to a per-token constant."""
    op = get_operator("random_inpaint", SHAPE)
    x0 = torch.randint(0, K, (2, 16), generator=_gen(7))
    y = measure_tokens(x0, op, SPACE)
    base = torch.zeros(2, 16, K, dtype=torch.float64)
    g = quantized_expectation_guidance(base, torch.full_like(x0, K), op, y, sigma=0.2, space=SPACE, eta=1.0, iters=1)
    obs = op.mask.flatten()
    target = -((codebook(K)[None, None] - tokens_to_images(x0, SPACE).flatten(1)[..., None]) ** 2) / (2 * 0.04)
    diff = (g - target)[:, obs]
    assert torch.allclose(diff - diff[..., :1], torch.zeros_like(diff), atol=1e-8)
    assert torch.allclose(g[:, ~obs], base[:, ~obs])


def test_aps_masks_decrease_to_zero_and_eta0_is_confidence(tiny, x0):
    op = get_operator("sr", SHAPE)
    y = measure_tokens(x0, op, SPACE, 0.05, _gen())
    c = CallCounter(tiny)
    x = aps_sample(c, op, y, steps=5, generator=_gen(2))
    assert c.nfe == 5 and (x < K).all()
    a = aps_sample(tiny, op, y, steps=5, eta=0.0, generator=_gen(3))
    b = confidence_sample(tiny, 6, 5, generator=_gen(3), choice_temperature=0.0)
    assert torch.equal(a, b)


def test_aps_guidance_improves_inpainting_consistency():
    """With an uninformative (uniform) prior, guided samples match the observed pixels; unguided do not."""

    class Uniform(torch.nn.Module):
        vocab_size, seq_len = K, 16

        def forward(self, x):
            return torch.zeros(*x.shape, K)

    op = get_operator("random_inpaint", SHAPE)
    x0 = torch.randint(0, K, (8, 16), generator=_gen(5))
    y = measure_tokens(x0, op, SPACE, 0.02, _gen(6))
    obs = op.mask.flatten()
    guided = aps_sample(Uniform(), op, y, steps=4, sigma_y=0.02, sigma_floor=0.02, generator=_gen(1))
    plain = aps_sample(Uniform(), op, y, steps=4, eta=0.0, generator=_gen(1))
    acc = lambda x: float((x[:, obs] == x0[:, obs]).float().mean())
    assert acc(guided) > 0.9 and acc(plain) < 0.3


def test_baselines_run_and_respect_observations(tiny, x0):
    op = get_operator("box_inpaint", SHAPE)
    y = measure_tokens(x0, op, SPACE)
    r = replacement_sample(tiny, op, y, generator=_gen())
    assert torch.equal(r[:, op.mask.flatten()], x0[:, op.mask.flatten()])
    s = smc_sample(tiny, op, y, steps=3, particles=3, generator=_gen())
    g = split_gibbs_sample(tiny, op, y, sweeps=2, generator=_gen())
    blur = get_operator("saturation", SHAPE)
    g2 = split_gibbs_sample(tiny, blur, measure_tokens(x0, blur, SPACE), sweeps=1, generator=_gen())
    for x in (s, g, g2):
        assert x.shape == x0.shape and (x < K).all()
    with pytest.raises(ValueError, match="inpainting"):
        replacement_sample(tiny, get_operator("sr", SHAPE), measure_tokens(x0, get_operator("sr", SHAPE), SPACE))


def test_aps_bad_input(tiny, x0):
    op = get_operator("sr", SHAPE)
    with pytest.raises(ValueError, match="x0"):
        measure_tokens(torch.full_like(x0, K), op, SPACE)  # a mask token in the measured signal
    with pytest.raises(ValueError, match="y"):
        aps_sample(tiny, op, torch.zeros(6, 1, 3, 3))  # measurement of the wrong shape
    with pytest.raises(ValueError, match="op"):
        aps_sample(tiny, get_operator("sr", (1, 8, 8)), torch.zeros(6, 1, 4, 4))  # 8x8 images, 16 tokens


def test_student_phi1_uniform_is_plain_sampler(tiny):
    """phi = 1 and a uniform grid give the ancestral sampler's transition probabilities exactly."""
    st = StudentSampler(4)
    assert torch.allclose(st.times(), torch.linspace(1, 0, 5, dtype=torch.float64))
    logits = torch.randn(3, 16, K, generator=_gen())
    a_t, a_s = torch.tensor(0.25, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    ours = student_outcome_logprobs(logits, st.phi[0], a_t, a_s).exp()
    ref = ancestral_step_probs(torch.softmax(logits.double(), -1), a_t, a_s)
    assert torch.allclose(ours, ref) and torch.allclose(ours.sum(-1), torch.ones(3, 16, dtype=torch.float64))
    x = student_sample(tiny, st, 5, generator=_gen())
    assert (x < K).all()


def test_lsd_trains_and_gradients_reach_times(tiny):
    teacher = teacher_trajectories(tiny, 24, _gen(3))
    x, hit = teacher
    assert torch.equal(teacher_state(x, hit, torch.tensor(1.0), K).argmax(-1), torch.full_like(x, K))
    assert torch.equal(teacher_state(x, hit, torch.tensor(0.0), K).argmax(-1), x)
    st = StudentSampler(3, learn_times=True)
    states = run_student(tiny, st, 8, generator=_gen())
    states[-1][..., :-1].sum().backward()
    assert st.w.grad is not None and torch.isfinite(st.w.grad).all()
    res = train_lsd(tiny, 3, learn_times=True, iters=3, batch=8, teacher=teacher)
    assert len(res.losses) == 3 and all(map(lambda v: v == v, res.losses))
    t = res.student.times().detach()
    assert float(t[0]) == 1.0 and float(t[-1]) == 0.0 and bool((t[1:] < t[:-1]).all())


def test_split_gibbs_nonlinear_is_reproducible_from_its_generator(tiny, x0):
    """The Langevin z-step of a nonlinear operator draws from the given generator, not the global RNG."""
    op = get_operator("saturation", SHAPE)
    y = measure_tokens(x0, op, SPACE)
    a = split_gibbs_sample(tiny, op, y, sweeps=2, generator=_gen())
    torch.manual_seed(123)
    b = split_gibbs_sample(tiny, op, y, sweeps=2, generator=_gen())
    assert torch.equal(a, b)
