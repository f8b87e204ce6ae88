"""Token spaces (pixel levels, patch VQ), k-means, and APS-like guidance / baselines on VQ tokens."""

import pytest
import torch

from diffzoo.discrete.aps import (
    aps_sample,
    measure_tokens,
    quantized_expectation_guidance,
    replacement_sample,
    smc_sample,
    split_gibbs_sample,
)
from diffzoo.discrete.tokens import TokenSpace, kmeans, levels_space, token_space
from diffzoo.inverse.operators import get_operator
from diffzoo.models.transformer import MaskedTransformer

torch.set_num_threads(1)
SHAPE, P, K = (3, 8, 8), 4, 12  # 4 tokens of 4x4 RGB patches, 12 codes


def _gen(s=0):
    return torch.Generator().manual_seed(s)


@pytest.fixture(scope="module")
def space():
    cb = torch.rand(K, 3 * P * P, generator=_gen(3), dtype=torch.float64) * 2 - 1
    return TokenSpace(cb, SHAPE, P)


@pytest.fixture(scope="module")
def vq_model(space):
    torch.manual_seed(0)
    m = MaskedTransformer(
        K, space.seq_len, d_model=16, n_layers=1, n_heads=2, codebook_dim=space.dim, image_shape=SHAPE, patch=P
    ).eval()
    m.codebook.copy_(space.codebook.float())
    return m


def test_patchify_is_an_exact_permutation(space):
    img = torch.randn(5, *SHAPE, generator=_gen(), dtype=torch.float64)
    e = space.image_to_embed(img)
    assert e.shape == (5, 4, 48) and torch.equal(space.embed_to_image(e), img)
    # token 1 is the top-right 4x4 patch
    assert torch.equal(e[:, 1].reshape(5, 3, P, P), img[:, :, :P, P:])
    x = torch.randint(0, K, (5, 4), generator=_gen(1))
    assert torch.equal(space.encode(space.decode(x)), x)  # codes are their own nearest code


def test_levels_space_matches_pixel_levels():
    s = levels_space(17, (1, 8, 8))
    x = torch.arange(64).remainder(17)[None]
    img = s.decode(x)
    assert torch.allclose(img.flatten(), x.flatten().double() / 8 - 1)
    assert torch.equal(s.encode(img + 0.01), x)


def test_token_space_of_models(vq_model, space):
    ts = token_space(vq_model)
    assert ts.patch == P and ts.image_shape == SHAPE and torch.allclose(ts.codebook, space.codebook, atol=1e-6)
    digits_like = MaskedTransformer(17, 64, d_model=8, n_layers=1, n_heads=1)
    assert token_space(digits_like).image_shape == (1, 8, 8)


def test_kmeans_recovers_separated_clusters():
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    pts = centres.repeat_interleave(200, 0) + 0.1 * torch.randn(600, 2, generator=_gen())
    cb = kmeans(pts, 3, iters=10, generator=_gen(1))
    d = torch.cdist(cb, centres)
    assert d.min(1).values.max() < 0.05 and len(set(d.argmin(1).tolist())) == 3


def test_vq_inpainting_guidance_is_exact_patch_quadratic(space):
    """Inpainting with fully observed tokens: the guidance adds -||E_k - y_i||^2 / (2 sigma^2) + const."""
    op = get_operator("box_inpaint", SHAPE)  # centre 4x4 box missing: all 4 tokens partly seen
    x0 = torch.randint(0, K, (2, 4), generator=_gen(2))
    y = measure_tokens(x0, op, space)
    base = torch.zeros(2, 4, K, dtype=torch.float64)
    g = quantized_expectation_guidance(base, torch.full_like(x0, K), op, y, 0.3, space, eta=1.0, iters=1)
    obs = space.image_to_embed(op.mask.double().reshape(1, *SHAPE))[0]  # (L, d) 0/1
    truth = space.image_to_embed(space.decode(x0))  # (B, L, d)
    target = -(((space.codebook[None, None] - truth[:, :, None]) ** 2) * obs[None, :, None]).sum(-1) / (2 * 0.09)
    diff = g - target
    assert torch.allclose(diff - diff[..., :1], torch.zeros_like(diff), atol=1e-8)
    assert torch.equal(g.argmax(-1), x0)  # the observed pixels identify each code


def test_vq_samplers_run_and_replacement_keeps_observed_tokens(vq_model, space):
    x0 = torch.randint(0, K, (3, 4), generator=_gen(4))
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[4:, 4:] = False  # bottom-right token unobserved
    from diffzoo.inverse.operators import Inpainting

    op = Inpainting(SHAPE, mask)
    y = measure_tokens(x0, op, space)
    r = replacement_sample(vq_model, op, y, generator=_gen())
    assert torch.equal(r[:, :3], x0[:, :3])
    for x in (
        aps_sample(vq_model, op, y, steps=3, generator=_gen()),
        smc_sample(vq_model, op, y, steps=3, particles=3, generator=_gen()),
        split_gibbs_sample(vq_model, op, y, sweeps=2, generator=_gen()),
    ):
        assert x.shape == x0.shape and (x < K).all()


def test_token_space_bad_input(space, vq_model):
    with pytest.raises(ValueError, match="codebook"):
        TokenSpace(torch.zeros(4, 5), SHAPE, P)
    with pytest.raises(ValueError, match="patch"):
        TokenSpace(torch.zeros(4, 27), SHAPE, 3)
    with pytest.raises(ValueError, match="x"):
        space.decode(torch.full((1, 4), K))  # [MASK] cannot be decoded
    with pytest.raises(ValueError, match="x"):
        space.decode(torch.zeros(1, 5, dtype=torch.long))  # wrong sequence length
    with pytest.raises(ValueError, match="k"):
        kmeans(torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match="op"):
        aps_sample(vq_model, get_operator("sr", (1, 8, 8)), torch.zeros(1, 1, 4, 4))


def test_token_hessian_gives_the_exact_single_token_likelihood_change(space):
    """For a linear A: NLL(q with token i -> E_k) - NLL(q) = g_i.(E_k - q_i) + (E_k - q_i)^T H_i (E_k - q_i) / 2."""
    from diffzoo.discrete.aps import token_hessian

    op = get_operator("sr", SHAPE, factor=4)  # every pooled pixel mixes 16 pixels of one token
    h = token_hessian(op, space)
    assert h.shape == (4, 48, 48) and torch.allclose(h, h.transpose(1, 2))
    q = space.codebook[torch.tensor([[1, 5, 7, 2]])].clone().requires_grad_(True)  # (1, L, d)
    y = torch.randn(1, *op.meas_shape(), generator=_gen(8), dtype=torch.float64)

    def nll(e):
        return 0.5 * ((op.forward(space.embed_to_image(e)) - y) ** 2).sum()

    (g,) = torch.autograd.grad(nll(q), q)
    for i, k in ((0, 3), (2, 9), (3, 11)):
        q2 = q.detach().clone()
        q2[0, i] = space.codebook[k]
        delta = space.codebook[k] - q[0, i].detach()
        pred = g[0, i] @ delta + 0.5 * delta @ h[i] @ delta
        assert torch.allclose(nll(q2) - nll(q.detach()), pred, atol=1e-9)


def test_token_hessian_of_a_saturating_operator_is_the_jacobian_gauss_newton(space):
    """For y = tanh(g L x): the blocks equal J_i^T J_i with J the autograd Jacobian at the given image."""
    from diffzoo.discrete.aps import _token_columns, token_hessian

    op = get_operator("saturation", SHAPE)
    img = torch.randn(1, *SHAPE, generator=_gen(9), dtype=torch.float64) * 0.5
    jac = torch.autograd.functional.jacobian(lambda z: op.forward(z), img).reshape(-1, 3 * 8 * 8)
    idx = space.image_to_embed(torch.arange(192, dtype=torch.float64).reshape(1, *SHAPE))[0].long()
    cols = jac[:, idx]  # (m, L, d), dense
    want = torch.einsum("mld,mle->lde", cols, cols)
    rows, vals = _token_columns(jac, space)
    assert torch.allclose(torch.einsum("lrd,lre->lde", vals, vals), want, atol=1e-10)
    got = token_hessian(op, space)(img)
    assert got.shape == (1, 4, 48, 48) and torch.allclose(got[0], want, atol=1e-10)
