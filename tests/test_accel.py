"""Faster Diffusion (encoder propagation) and DeepCache: splits, exactness identities, samplers, CFG, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffzoo import zoo
from diffzoo.accel import cache as C
from diffzoo.accel.split import split_unet
from diffzoo.core.denoiser import Denoiser, from_diffusers_unet
from diffzoo.core.guidance import cfg_denoiser
from diffzoo.core.schedules import get_schedule
from diffzoo.sampling import get_timesteps, sample

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def digits():
    return zoo.load("digits-unet")


@pytest.fixture(scope="module")
def cond_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=16,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


@pytest.fixture(scope="module")
def plain_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()


@torch.no_grad()
def test_split_equals_full_forward(digits, cond_unet, plain_unet):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=g)
    t = torch.tensor([900.0, 500.0, 3.0])
    labels = torch.tensor([1, 10, 4])
    assert torch.equal(split_unet(digits.model)(x, t, labels), digits.model(x, t, labels))
    assert torch.equal(split_unet(plain_unet)(x, t, None), plain_unet(x, t).sample)
    z, ehs = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 5, 16, generator=g)
    assert torch.equal(split_unet(cond_unet)(z, t, ehs), cond_unet(z, t, encoder_hidden_states=ehs).sample)
    # an input size that is not a multiple of the up factor forwards upsample sizes, as diffusers does
    z7 = torch.randn(2, 4, 6, 6, generator=g)
    assert torch.equal(
        split_unet(cond_unet)(z7, t[:2], ehs[:2]), cond_unet(z7, t[:2], encoder_hidden_states=ehs[:2]).sample
    )


@torch.no_grad()
def test_shallow_branch_with_fresh_deep_feature_is_the_full_network(digits, cond_unet):
    """DeepCache's shallow branch on the deep feature of the same call reproduces the full output."""
    for model, x, c in (
        (digits.model, torch.randn(2, 1, 8, 8), torch.tensor([3, 10])),
        (cond_unet, torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16)),
    ):
        s = split_unet(model)
        t = torch.tensor([400.0, 400.0])
        ctx = s.context(x, t, c)
        for depth in range(1, s.num_levels + 1):
            out, deep = s.decode(s.encode(x, ctx), ctx, capture=s.num_levels - depth)
            torch.testing.assert_close(s.shallow(x, ctx, deep, depth), out, rtol=0, atol=1e-6)


def test_key_steps_sets():
    assert C.key_steps(50, "paper") == C.PAPER_KEY_STEPS_50
    assert C.key_steps(25, "paper") == (0, 1, 2, 5, 8, 12, 18)
    assert C.key_steps(10, "uniform:3") == (0, 3, 6, 9) == C.key_steps(10, 3)
    assert C.key_steps(4, "all") == (0, 1, 2, 3)
    assert all(0 in C.key_steps(n, "paper") for n in range(1, 80))
    with pytest.raises(ValueError, match="key_steps: must include step 0"):
        C.key_steps(10, [1, 2, 5])
    with pytest.raises(ValueError, match="key_steps"):
        C.key_steps(10, [0, 10])
    with pytest.raises(ValueError, match="key_steps"):
        C.key_steps(10, "every")
    with pytest.raises(ValueError, match="key_steps"):
        C.key_steps(10, 0)


def test_unsplittable_model_and_bad_options(digits):
    ts = get_timesteps(get_schedule("linear"), 10)
    with pytest.raises(ValueError, match="model: cannot split"):
        C.cached_net(torch.nn.Linear(4, 4), ts)
    with pytest.raises(ValueError, match="method"):
        C.cached_net(digits.model, ts, "tome")
    with pytest.raises(ValueError, match="parallel"):
        C.cached_net(digits.model, ts, "deepcache", parallel=True)
    with pytest.raises(ValueError, match="depth"):
        C.cached_net(digits.model, ts, "deepcache", depth=3)
    with pytest.raises(ValueError, match="timesteps"):
        C.cached_net(digits.model, ts.flip(0))
    guided = cfg_denoiser(digits.denoiser(), 2.0, torch.tensor([10]))
    with pytest.raises(ValueError, match="denoiser: wrap the plain model denoiser"):
        C.cached_denoiser(guided, ts)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        time_cond_proj_dim=8,
    )
    with pytest.raises(ValueError, match="model: cannot split.*time_cond_proj_dim"):
        split_unet(unet)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun", "pndm"])
@torch.no_grad()
def test_all_key_steps_equal_the_plain_model_exactly_with_cfg(digits, sampler):
    den = digits.denoiser()
    ts = get_timesteps(den.schedule, 6)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 7, 9])

    def run(d):
        return sample(sampler, cfg_denoiser(d, 2.0, torch.tensor([10])), x, ts, labels)

    ref = run(den)
    for method in C.CACHE_METHODS:
        cd = C.cached_denoiser(den, ts, method, "all")
        assert torch.equal(run(cd), ref), method
        assert cd.net.partial_calls == 0
    # with real key steps the decoder-only calls are used
    cd = C.cached_denoiser(den, ts, "faster-diffusion", "uniform:2")
    out = run(cd)
    assert cd.net.partial_calls > 0 and torch.isfinite(out).all() and not torch.equal(out, ref)


@torch.no_grad()
def test_parallel_mode_matches_sequential(digits, cond_unet):
    den = digits.denoiser()
    ts = get_timesteps(den.schedule, 12)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([1, 2, 10])
    seq = C.cached_denoiser(den, ts, "faster-diffusion", "paper")
    par = C.cached_denoiser(den, ts, "faster-diffusion", "paper", parallel=True)
    a, b = sample("ddim", seq, x, ts, labels), sample("ddim", par, x, ts, labels)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert seq.net.full_calls == par.net.full_calls == len(C.key_steps(12, "paper"))
    # diffusers conditional UNet, through the diffusers adapter and CFG
    dd = from_diffusers_unet(cond_unet, schedule=get_schedule("scaled_linear"))
    ehs = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(3))
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    null = torch.zeros(1, 5, 16)
    outs = [
        sample(
            "ddim",
            cfg_denoiser(C.cached_denoiser(dd, ts, "faster-diffusion", "uniform:4", parallel=p), 3.0, null),
            z,
            ts,
            ehs,
        )
        for p in (False, True)
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-4)
    ref = sample("ddim", cfg_denoiser(dd, 3.0, null), z, ts, ehs)
    allkeys = sample("ddim", cfg_denoiser(C.cached_denoiser(dd, ts, "deepcache", "all"), 3.0, null), z, ts, ehs)
    assert torch.equal(allkeys, ref)


@torch.no_grad()
def test_cached_unet_drop_in_for_latent_models(cond_unet):
    ts = get_timesteps(get_schedule("scaled_linear"), 6)
    wrapped = C.CachedUNet(C.cached_net(cond_unet, ts, "faster-diffusion", "all"))
    assert wrapped.config is cond_unet.config and wrapped.dtype == cond_unet.dtype
    z, ehs = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16)
    t = torch.tensor(float(ts[0]))
    assert torch.equal(
        wrapped(z, t, encoder_hidden_states=ehs).sample, cond_unet(z, t, encoder_hidden_states=ehs).sample
    )
    with pytest.raises(ValueError, match="kwargs"):
        wrapped(z, t, encoder_hidden_states=ehs, cross_attention_kwargs={"scale": 1.0})

    @dataclasses.dataclass
    class Holder:
        unet: object

    assert dataclasses.replace(Holder(cond_unet), unet=wrapped).unet is wrapped


def test_prior_noise_injection_callback():
    sch = get_schedule("linear")
    ts = get_timesteps(sch, 10)
    xT = torch.ones(1, 2)
    cb = C.prior_noise_injection(xT, sch, scale=0.5)
    seen = []

    def den_fn(x, t, cond):
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    den = Denoiser(den_fn, sch, "epsilon")
    out = sample("ddim", den, xT.clone(), ts, callback=cb)
    # with eps = 0, DDIM keeps x0 = x / alpha: each injection adds 0.5 x_T before a call at t/1000 < 0.5
    n_inj = sum(1 for s in ts[1:-1].tolist() if s / 1000 < 0.5)
    assert n_inj > 0
    expected = xT.clone()
    for i in range(10):
        a_t, _ = sch.alpha_sigma(ts[i : i + 1])
        a_s, _ = sch.alpha_sigma(ts[i + 1 : i + 2])
        expected = expected * float(a_s) / float(a_t)
        if i < 9 and float(ts[i + 1]) / 1000 < 0.5:
            expected = expected + 0.5 * xT
    torch.testing.assert_close(out, expected.to(out.dtype), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        C.prior_noise_injection(xT, sch, scale=-1)


@torch.no_grad()
def test_feature_recorder_and_speedup_formula(digits):
    den = digits.denoiser()
    rec = C.FeatureRecorder(digits.model)
    ts = get_timesteps(den.schedule, 5)
    sample("ddim", den.with_net(rec), torch.randn(2, 1, 8, 8), ts, torch.tensor([1, 2]))
    rc = rec.relative_changes()
    assert rc.shape == (4, len(rec.block_names())) and bool((rc >= 0).all())
    assert C.theoretical_speedup(50, 9, 1.0, 0.5) == pytest.approx(50 / (9 + 41 * 0.5))
