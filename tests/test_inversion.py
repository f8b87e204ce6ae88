"""Inversion methods on tiny random diffusers models: exactness, drift, null-text, Direct Inversion, API errors."""

from __future__ import annotations

import types

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffzoo.inversion import METHODS, edit, invert, reconstruct
from diffzoo.inversion.common import ddim_transfer
from diffzoo.latent.model import LatentModel, tiny_random_latent_model

torch.set_num_threads(1)
PROMPT, TARGET = "the red circle", "the blue square"


@pytest.fixture(scope="module")
def tokdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def model64(tokdir):
    return tiny_random_latent_model(tokdir, seed=0, dtype=torch.float64)


@pytest.fixture(scope="module")
def model32(tokdir):
    return tiny_random_latent_model(tokdir, seed=0, dtype=torch.float32)


def _latent(dtype, seed=0, b=1):
    return torch.randn(b, 4, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _err(a, b):
    return float((a - b).abs().max())


# --- the shared step ---------------------------------------------------------------------------------


def test_ddim_transfer_inverse_is_exact(model64):
    x, eps = _latent(torch.float64, 1), _latent(torch.float64, 2)
    for t, s in ((901, 801), (1, -1), (500.5, 20)):
        back = ddim_transfer(ddim_transfer(x, eps, model64.schedule, t, s), eps, model64.schedule, s, t)
        assert _err(back, x) < 1e-12


# --- EDICT -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("leapfrog", [True, False])
def test_edict_exact_float64(model64, leapfrog):
    z = _latent(torch.float64)
    r = invert("edict", model64, z, PROMPT, num_steps=10, guidance=3.0, dtype=torch.float64, leapfrog=leapfrog)
    assert r.nfe == 20
    assert _err(r.latents[0], z) > 1.0  # it really moved to noise
    assert _err(reconstruct(r), z) < 1e-9


def test_edict_exact_float32(model32):
    z = _latent(torch.float32)
    r = invert("edict", model32, z, PROMPT, num_steps=10, guidance=3.0, dtype=torch.float32)
    assert _err(reconstruct(r), z) < 1e-4


def test_edict_strength_and_image_input(model64):
    img = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    r = invert("edict", model64, img, PROMPT, num_steps=10, guidance=7.0, dtype=torch.float64, strength=0.5)
    assert r.num_steps == 5 and r.timesteps[-1] == -1
    with torch.no_grad():
        z = model64.encode_image(img)
    assert _err(reconstruct(r), z) < 1e-9


def test_batch_rows_are_independent(model64):
    """Each row of a batch inverts as it would alone (per-sample prompts and generators)."""
    from diffzoo.core.random import generators_from_seeds

    z = _latent(torch.float64, b=2)
    prompts = [PROMPT, TARGET]
    both = invert(
        "ddpm", model64, z, prompts, num_steps=4, dtype=torch.float64, generator=generators_from_seeds([5, 6])
    )
    one = invert(
        "ddpm", model64, z[1:], prompts[1:], num_steps=4, dtype=torch.float64, generator=generators_from_seeds([6])
    )
    assert _err(both.noise_maps[2][1:], one.noise_maps[2]) < 1e-9
    e = invert("edict", model64, z, prompts, num_steps=4, dtype=torch.float64)
    e1 = invert("edict", model64, z[:1], prompts[:1], num_steps=4, dtype=torch.float64)
    assert _err(e.latents[:, :1], e1.latents) < 1e-9
    assert _err(reconstruct(e), z) < 1e-9


# --- edit-friendly DDPM ------------------------------------------------------------------------------


def test_ddpm_inversion_exact(model64):
    z = _latent(torch.float64)
    r = invert(
        "ddpm",
        model64,
        z,
        PROMPT,
        num_steps=10,
        guidance=3.5,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    rec = reconstruct(r)
    assert torch.equal(rec, r.trajectory[-1])  # the sampler reaches the stored states bit for bit
    assert _err(rec, z) < 1e-12
    # the noise maps are not N(0, I): they encode the image (larger than unit scale somewhere)
    assert len(r.noise_maps) == 10
    # the official code's zero last noise map breaks exactness
    r0 = invert(
        "ddpm",
        model64,
        z,
        PROMPT,
        num_steps=10,
        guidance=3.5,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
        zero_last_noise=True,
    )
    assert _err(reconstruct(r0), z) > 1e-4


def test_ddpm_edit_same_prompt_is_source(model64):
    z = _latent(torch.float64)
    r = invert(
        "ddpm",
        model64,
        z,
        PROMPT,
        num_steps=8,
        guidance=3.5,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    e = edit(r, PROMPT, guidance=3.5, skip=2)
    assert _err(e.source_latents, z) < 1e-9
    assert _err(e.latents, e.source_latents) < 1e-9
    e2 = edit(r, TARGET, guidance=15.0, skip=2)
    assert _err(e2.source_latents, z) < 1e-9 and _err(e2.latents, z) > 1e-2


# --- DDIM inversion drift ----------------------------------------------------------------------------


class _SteerableUNet(torch.nn.Module):
    """``eps = delta * unet(x, t, c) + R vec(c)``: a random network whose prediction the text embedding
    steers linearly (as null-text inversion needs), keeping the inner UNet's config."""

    def __init__(self, unet: torch.nn.Module, delta: float = 0.3, gain: float = 0.03, seed: int = 3):
        super().__init__()
        self.inner, self.delta, self.config = unet, delta, unet.config
        n_in, n_out = 16 * unet.config.cross_attention_dim, 4 * 8 * 8
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("readout", torch.randn(n_in, n_out, generator=g) * gain / n_in**0.5)

    def forward(self, x, t, encoder_hidden_states=None):
        r = (encoder_hidden_states.flatten(1) @ self.readout.to(x.dtype)).reshape(x.shape)
        out = self.inner(x, t, encoder_hidden_states=encoder_hidden_states).sample
        return types.SimpleNamespace(sample=self.delta * out + r)


@pytest.fixture(scope="module")
def steerable(tokdir):
    m = tiny_random_latent_model(tokdir, seed=0, dtype=torch.float32)
    return LatentModel(
        _SteerableUNet(m.unet), m.vae, m.text_encoder, m.tokenize, m.schedule, m.scaling_factor, m.max_length
    )


def test_ddim_drift_grows_with_guidance(steerable):
    z = _latent(torch.float32)
    errs = []
    for w in (1.0, 3.0, 7.5):
        r = invert("ddim", steerable, z, PROMPT, num_steps=10, guidance=w)
        errs.append(_err(reconstruct(r), z))
    assert errs[0] > 1e-3  # DDIM inversion is not exact
    assert errs[0] < errs[1] < errs[2]


def test_ddim_reconstruct_equals_sampling_module(model64):
    from diffzoo.core.guidance import cfg_denoiser
    from diffzoo.sampling import ddim

    z = _latent(torch.float64)
    r = invert("ddim", model64, z, PROMPT, num_steps=6, guidance=2.0, dtype=torch.float64)
    with torch.no_grad():
        ref = ddim(cfg_denoiser(model64.denoiser(), 2.0, model64.null_embedding(1)), r.latents, r.timesteps, r.cond)
    assert _err(reconstruct(r), ref) < 1e-12


def test_ddim_inversion_matches_diffusers_inverse_scheduler(tmp_path):
    """Parity with diffusers' DDIMInverseScheduler loop (SD config: leading grid, steps_offset 1,
    set_alpha_to_one False), at guidance 3 -- our inverse step is the forward transfer run backwards."""
    from diffusers import DDIMInverseScheduler

    from diffzoo.latent.model import tiny_random_components

    c = tiny_random_components(str(tmp_path), seed=0)
    model = LatentModel.from_components(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"])
    z = _latent(torch.float32)
    r = invert("ddim", model, z, PROMPT, num_steps=5, guidance=3.0)
    inv = DDIMInverseScheduler.from_config(c["scheduler"].config)
    inv.set_timesteps(5)
    assert torch.equal(inv.timesteps.flip(0), r.timesteps[:-1].long())
    cond = torch.cat([model.encode_prompt([PROMPT]), model.null_embedding(1)])
    x = z.clone()
    with torch.no_grad():
        for t in inv.timesteps:
            ec, eu = c["unet"](torch.cat([x, x]), t, encoder_hidden_states=cond).sample.chunk(2)
            x = inv.step(eu + 3.0 * (ec - eu), t, x).prev_sample
    assert _err(r.latents, x) < 1e-4 * max(1.0, float(x.abs().max()))


# --- null-text inversion -----------------------------------------------------------------------------


def test_null_text_beats_ddim_at_high_guidance(steerable):
    z = _latent(torch.float32)
    ddim75 = _err(reconstruct(invert("ddim", steerable, z, PROMPT, num_steps=10, guidance=7.5)), z)
    pivot = invert("null_text", steerable, z, PROMPT, num_steps=10, guidance=7.5, inner_steps=0)
    pivot_err = _err(reconstruct(pivot), z)  # the pivot sampled at 7.5 with the plain null embedding
    r = invert("null_text", steerable, z, PROMPT, num_steps=10, guidance=7.5, lr=0.1)
    nti = _err(reconstruct(r), z)
    assert nti < 0.25 * ddim75 and nti < 0.1 * pivot_err
    assert r.nfe > 10 * 10 and len(r.null_embeddings) == 10
    # only the null embeddings moved; the conditional embedding is the prompt's
    assert _err(r.cond, steerable.encode_prompt([PROMPT])) == 0
    assert _err(r.null_embeddings[-1], steerable.null_embedding(1)) > 1e-3
    e = edit(r, PROMPT)
    assert _err(e.latents, e.source_latents) < 1e-5


# --- Direct Inversion --------------------------------------------------------------------------------


def test_direct_inversion_source_branch_exact(model64):
    z = _latent(torch.float64)
    r = invert("direct", model64, z, PROMPT, num_steps=10, guidance=7.5, dtype=torch.float64)
    assert r.nfe == 10  # one pass per step, at guidance 1
    assert _err(reconstruct(r), z) < 1e-12
    e = edit(r, TARGET)
    assert _err(e.source_latents, z) < 1e-12
    assert _err(e.latents, z) > 1e-2
    # offset_scale = 0 is plain DDIM inversion + editing
    r0 = invert("direct", model64, z, PROMPT, num_steps=10, guidance=7.5, dtype=torch.float64, offset_scale=0.0)
    d = invert("ddim", model64, z, PROMPT, num_steps=10, guidance=1.0, dtype=torch.float64)
    assert _err(edit(r0, TARGET).latents, edit(d, TARGET, guidance=7.5).latents) < 1e-12


# --- attention control during the edit pass ----------------------------------------------------------


@pytest.mark.parametrize("method", ["edict", "ddim", "ddpm", "direct"])
def test_controller_keeps_source_branch(model64, method):
    attention = pytest.importorskip("diffzoo.latent.attention")
    z = _latent(torch.float64)
    r = invert(
        method,
        model64,
        z,
        PROMPT,
        num_steps=6,
        guidance=3.0,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    kw = {"skip": 1} if method == "ddpm" else {}
    plain = edit(r, TARGET, **kw)
    ctl = attention.replace(
        model64.tokenize,
        [PROMPT, TARGET],
        num_steps=6 - kw.get("skip", 0),
        cross_replace_steps=0.8,
        self_replace_steps=0.4,
    )
    ctrl = edit(r, TARGET, controller=ctl, **kw)
    assert _err(ctrl.source_latents, plain.source_latents) < 1e-9
    assert _err(ctrl.latents, plain.latents) > 1e-6  # the controller changed the edit branch
    procs = model64.unet.attn_processors
    assert not any(type(p).__name__ == "ControlledAttnProcessor" for p in procs.values())


# --- bad input ---------------------------------------------------------------------------------------


def test_errors(model32):
    z = _latent(torch.float32)
    with pytest.raises(ValueError, match="method"):
        invert("nope", model32, z, PROMPT)
    with pytest.raises(ValueError, match="guidance"):
        invert("ddim", model32, z, PROMPT, num_steps=2, guidance=-1.0)
    with pytest.raises(ValueError, match="strength"):
        invert("edict", model32, z, PROMPT, num_steps=2, strength=1.5)
    with pytest.raises(ValueError, match="p:"):
        invert("edict", model32, z, PROMPT, num_steps=2, p=0.0)
    with pytest.raises(ValueError, match="eta"):
        invert("ddpm", model32, z, PROMPT, num_steps=2, eta=0.0)
    with pytest.raises(ValueError, match="num_steps"):
        invert("ddim", model32, z, PROMPT, num_steps=0)
    with pytest.raises(ValueError, match="max_length"):
        invert("ddim", model32, z, "the red circle " * 10, num_steps=2)
    with pytest.raises(ValueError, match="prompt"):
        invert("ddim", model32, _latent(torch.float32, b=2), [PROMPT], num_steps=2)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        invert("ddim", model32, torch.full((1, 3, 16, 16), 2.0), PROMPT, num_steps=2)
    with pytest.raises(ValueError, match="multiples"):
        invert("ddim", model32, torch.zeros(1, 3, 18, 18), PROMPT, num_steps=2)
    with pytest.raises(ValueError, match="channels"):
        invert("ddim", model32, torch.zeros(1, 4, 8, 8), PROMPT, num_steps=2, is_latent=False)
    with pytest.raises(TypeError, match="model"):
        invert("ddim", model32.denoiser(), z, PROMPT, num_steps=2)
    uncond = LatentModel(model32.unet, model32.vae, None, None, model32.schedule, model32.scaling_factor, 16)
    for method in METHODS:
        with pytest.raises(ValueError, match="text-conditional"):
            invert(method, uncond, z, PROMPT, num_steps=2)
    r = invert("ddpm", model32, z, PROMPT, num_steps=3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="skip"):
        edit(r, TARGET, skip=3)
    with pytest.raises(ValueError, match="guidance"):
        edit(r, TARGET, guidance=100.0)
    with pytest.raises(TypeError, match="result"):
        reconstruct(z)
    r2 = invert("ddim", model32, _latent(torch.float32, b=2), PROMPT, num_steps=2)
    with pytest.raises(ValueError, match="controller"):
        edit(r2, TARGET, controller=object())
