"""InfEdit/DDCM virtual inversion and anchored initialisation / SDEdit on tiny random SD-shaped models."""

from __future__ import annotations

import pytest
import torch

from diffzoo.editing.anchored import anchored_latent, sdedit, start_index
from diffzoo.editing.ddcm import ddcm_edit
from diffzoo.latent.model import LatentModel, tiny_random_components, tiny_random_latent_model

torch.set_num_threads(1)  # 2 shared cores: extra threads only contend


@pytest.fixture(scope="module")
def tokdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module", params=[torch.float64, torch.float32], ids=["f64", "f32"])
def model(request, tokdir):
    return tiny_random_latent_model(tokdir, seed=0, dtype=request.param)


def _tol(dtype):
    return 1e-12 if dtype == torch.float64 else 1e-5


def _image(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 16, 16, generator=g, dtype=dtype) * 2 - 1


def test_ddcm_source_branch_and_identity_edit_are_exact(model):
    img = _image(model.dtype)
    z0 = model.to_latent(img)
    r = ddcm_edit(
        model,
        img,
        "a red circle",
        "a red circle",
        num_steps=6,
        strength=0.8,
        guidance=3.0,
        source_guidance=3.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(r.source_latents, z0)  # the source branch's clean estimate is z0 at the end
    # same prompt + same guidance: exact reconstruction (up to the round-off of batched rows)
    assert (r.latents - z0).abs().max() <= _tol(model.dtype)
    assert r.nfe == r.timesteps.numel() - 1  # one batched call per step: no inversion cost
    assert r.image.shape == img.shape


def test_ddcm_edits_and_is_seeded(model):
    img = _image(model.dtype, 1)
    z0 = model.to_latent(img)
    kw = dict(num_steps=6, strength=0.8, guidance=3.0, blend_words=[["circle"], ["square"]])
    a = ddcm_edit(model, img, "a red circle", "a blue square", generator=torch.Generator().manual_seed(3), **kw)
    b = ddcm_edit(model, img, "a red circle", "a blue square", generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a.latents, b.latents)
    assert (a.latents - z0).abs().max() > 1e-3
    assert torch.equal(a.source_latents, z0)
    before = dict(model.unet.attn_processors)
    ddcm_edit(model, img, "a red circle", "a blue circle", num_steps=4, controller=None, decode=False)
    assert all(before[k] is v for k, v in model.unet.attn_processors.items())


def test_ddcm_bad_inputs(model, tokdir):
    img = _image(model.dtype)
    with pytest.raises(ValueError, match="strength"):
        ddcm_edit(model, img, "a", "a", num_steps=4, strength=0.1)
    with pytest.raises(ValueError, match="strength"):
        ddcm_edit(model, img, "a", "a", num_steps=4, strength=1.5)
    with pytest.raises(ValueError, match="guidance"):
        ddcm_edit(model, img, "a", "a", num_steps=4, guidance=0.5)
    with pytest.raises(ValueError, match="batch"):
        ddcm_edit(model, torch.cat([img, img]), "a", "a", num_steps=4)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ddcm_edit(model, img * 3, "a", "a", num_steps=4)
    with pytest.raises(ValueError, match="eta"):
        ddcm_edit(model, img, "a", "a", num_steps=4, eta=2.0)
    with pytest.raises(ValueError, match="max_length"):
        ddcm_edit(model, img, "a", " ".join(["red"] * 40), num_steps=4)
    c = tiny_random_components(tokdir)
    uncond = LatentModel(c["unet"], c["vae"], None, None, model.schedule, 0.18215, 16)
    with pytest.raises(ValueError, match="conditional"):
        ddcm_edit(uncond, img.float(), "a", "a", num_steps=4)


def test_anchored_start(model):
    img = _image(model.dtype, 2)
    z0 = model.to_latent(img)
    r = sdedit(model, img, "a red circle", strength=0.0, num_steps=8)
    assert torch.equal(r.latents, z0) and r.nfe == 0  # strength 0 returns the anchor's latent
    g = torch.Generator().manual_seed(0)
    r = sdedit(model, img, "a red circle", strength=0.5, num_steps=8, guidance=3.0, generator=g)
    assert r.nfe == 4 and r.t_start == 376.0  # leading grid 876, 751, ... (SD offset 1): starts at index 4
    assert start_index(10, 1.0) == 0 and start_index(10, 0.25) == 8
    n = torch.randn_like(z0)
    a, s = model.schedule.alpha_sigma(torch.tensor(600.0, dtype=torch.float64))
    assert torch.allclose(anchored_latent(model.schedule, z0, 600.0, n), a.to(z0) * z0 + s.to(z0) * n)
    assert torch.equal(anchored_latent(model.schedule, z0, 600.0, n, mode="additive", lam=0.5), n + 0.5 * z0)
    with pytest.raises(ValueError, match="strength"):
        sdedit(model, img, "a", strength=-0.1)
    with pytest.raises(ValueError, match="guidance"):
        sdedit(model, img, "a", guidance=0.0)
    with pytest.raises(ValueError, match="mode"):
        anchored_latent(model.schedule, z0, 600.0, n, mode="blend")
    with pytest.raises(ValueError, match="noise"):
        anchored_latent(model.schedule, z0, 600.0, n[..., :2])


def test_ddcm_on_a_stable_diffusion_pipeline(tokdir):
    """Runs unchanged on the components of a real (tiny, random, locally built) StableDiffusionPipeline."""
    from diffusers import StableDiffusionPipeline

    c = tiny_random_components(tokdir, seed=1)
    pipe = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    m = LatentModel.from_diffusers_pipeline(pipe)
    img = _image(torch.float32, 3)
    r = ddcm_edit(m, img, "a red circle", "a red circle", num_steps=4, guidance=2.0, source_guidance=2.0)
    assert (r.latents - m.encode_image(img)).abs().max() <= _tol(torch.float32)


def test_unified_attention_control(model):
    """InfEdit's UAC: three branches [source; target; mutual]; identical prompts stay exact, the
    mutual branch attends with the target's queries to the source's keys/values after the window."""
    from diffzoo.latent import attention as A

    img = _image(model.dtype, 4)
    z0 = model.to_latent(img)
    r = ddcm_edit(
        model,
        img,
        "a red circle",
        "a red circle",
        num_steps=6,
        strength=0.8,
        guidance=3.0,
        source_guidance=3.0,
        controller="unified",
        blend_words=[["circle"], ["circle"]],
    )
    assert (r.latents - z0).abs().max() <= _tol(model.dtype) and r.nfe == 4
    ctl = A.unified(model.tokenize, ["a red circle", "a blue circle"], 4, self_replace_steps=0.5)
    q, k, v = (torch.randn(2 * 3 * 2, 5, 4, dtype=torch.float64) for _ in range(3))  # 2 groups x 3 branches x 2 heads
    split = lambda t: t.reshape(2, 3, 2, 5, 4)  # noqa: E731
    for step, early in ((0, True), (3, False)):
        ctl.cur_step = step
        q2, k2, v2 = (split(t) for t in ctl.self_qkv(q, k, v, heads=2))
        qs, ks, vs = split(q), split(k), split(v)
        assert torch.equal(q2[:, 0], qs[:, 0]) and torch.equal(v2[:, 1], vs[:, 1])
        assert torch.equal(q2[:, 1], qs[:, 0] if early else qs[:, 1])
        assert torch.equal(k2[:, 1], ks[:, 0] if early else ks[:, 1])
        assert torch.equal(q2[:, 2], qs[:, 0] if early else qs[:, 1])
        assert torch.equal(k2[:, 2], ks[:, 0]) and torch.equal(v2[:, 2], vs[:, 0])
    lat = torch.randn(3, 4, 8, 8, dtype=model.dtype)
    with pytest.raises(ValueError, match="blend_words"):
        A.unified(model.tokenize, ["a red circle", "a blue circle"], 4, blend_words=[["red"]])
    assert torch.equal(ctl.step_callback(lat), lat)  # no blend words: the mutual branch is not used
