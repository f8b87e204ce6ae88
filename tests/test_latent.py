"""LatentModel: parity with a tiny random diffusers StableDiffusionPipeline built locally, and bad input."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffzoo.latent.model import LatentModel, tiny_clip_tokenizer, tiny_random_components

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    c = tiny_random_components(str(tmp_path_factory.mktemp("tok")), seed=0)
    return StableDiffusionPipeline(
        vae=c["vae"],
        text_encoder=c["text_encoder"],
        tokenizer=c["tokenizer"],
        unet=c["unet"],
        scheduler=c["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="module")
def model(pipe):
    return LatentModel.from_diffusers_pipeline(pipe)


def _image(b=1, size=16, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_tiny_tokenizer_one_token_per_word(tmp_path):
    tok = tiny_clip_tokenizer(str(tmp_path), words=("red", "circle", "square"))
    ids = tok("red circle square").input_ids
    assert len(ids) == 5  # BOS + 3 words + EOS
    assert len(set(ids[1:4])) == 3


def test_from_pipeline_reads_components(pipe, model):
    assert model.unet is pipe.unet and model.vae is pipe.vae and model.text_encoder is pipe.text_encoder
    assert model.scaling_factor == pytest.approx(pipe.vae.config.scaling_factor)
    assert model.max_length == pipe.tokenizer.model_max_length
    assert model.prediction_type == "epsilon" and model.conditional
    acp = torch.as_tensor(pipe.scheduler.alphas_cumprod, dtype=torch.float64)
    assert torch.equal(model.schedule.alphas_cumprod, acp)
    assert model.schedule.final_alpha_cumprod == pytest.approx(float(acp[0]))  # set_alpha_to_one=False


def test_prompt_embeddings_match_pipeline(pipe, model):
    prompts = ["the red circle", "a blue square on the left"]
    with torch.no_grad():
        ours = model.encode_prompt(prompts)
        cond, neg = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=None)
        null = model.null_embedding(2)
    assert ours.shape == (2, model.max_length, pipe.text_encoder.config.hidden_size)
    torch.testing.assert_close(ours, cond, rtol=0, atol=0)
    torch.testing.assert_close(null, neg, rtol=0, atol=0)


def test_encode_decode_match_vae(pipe, model):
    img = _image(2)
    with torch.no_grad():
        z = model.encode_image(img)
        ref = pipe.vae.encode(img).latent_dist.mean * pipe.vae.config.scaling_factor
        torch.testing.assert_close(z, ref, rtol=0, atol=0)
        assert z.shape == model.latent_shape(2, 16, 16)
        # deterministic: the posterior mean, not a sample
        torch.testing.assert_close(model.encode_image(img), z, rtol=0, atol=0)
        x = model.decode(z)
        ref_x = pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(x, ref_x, rtol=0, atol=0)
    assert x.shape == img.shape and float(x.abs().max()) <= 1


def test_denoiser_and_ddim_sampling_match_pipeline(pipe, model):
    """Our CFG + DDIM loop on the LatentModel reproduces StableDiffusionPipeline's latents."""
    from diffzoo.core.guidance import cfg_denoiser
    from diffzoo.sampling import ddim, get_timesteps

    zT = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = pipe(
            "the red circle",
            height=16,
            width=16,
            num_inference_steps=5,
            guidance_scale=3.0,
            latents=zT.clone(),
            output_type="latent",
        ).images
        den = cfg_denoiser(model.denoiser(), 3.0, model.null_embedding(1))
        ts = get_timesteps(model.schedule, 5, "leading", steps_offset=pipe.scheduler.config.steps_offset)
        assert torch.equal(ts[:-1].long(), pipe.scheduler.timesteps.long())
        ours = ddim(den, zT.clone(), ts, model.encode_prompt(["the red circle"]))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_float64_cast(tmp_path):
    from diffzoo.latent.model import tiny_random_latent_model

    m = tiny_random_latent_model(str(tmp_path), dtype=torch.float64)
    assert m.dtype == torch.float64
    with torch.no_grad():
        assert m.encode_prompt(["red"]).dtype == torch.float64
        assert m.encode_image(_image().double()).dtype == torch.float64


# --- bad input ---------------------------------------------------------------------------------------


def test_too_long_prompt(model):
    with pytest.raises(ValueError, match="max_length"):
        model.encode_prompt(["the red circle " * 10])


def test_prompt_types(model):
    with pytest.raises(TypeError, match="prompts"):
        model.encode_prompt("the red circle")
    with pytest.raises(ValueError, match="prompts"):
        model.encode_prompt([])


def test_bad_images(model):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model.encode_image(_image() * 3)
    with pytest.raises(ValueError, match="multiples of 4"):
        model.encode_image(_image(size=18))
    with pytest.raises(ValueError, match="channels"):
        model.encode_image(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="dimensions"):
        model.encode_image(torch.zeros(3, 16, 16))
    with pytest.raises(TypeError, match="floating"):
        model.encode_image(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    sized = LatentModel(
        model.unet,
        model.vae,
        model.text_encoder,
        model.tokenize,
        model.schedule,
        model.scaling_factor,
        model.max_length,
        image_size=16,
    )
    with pytest.raises(ValueError, match="16x16"):
        sized.encode_image(_image(size=32))


def test_unconditional_model(model):
    uncond = LatentModel(model.unet, model.vae, None, None, model.schedule, model.scaling_factor, model.max_length)
    assert not uncond.conditional
    with pytest.raises(ValueError, match="unconditional"):
        uncond.encode_prompt(["red"])
    with pytest.raises(ValueError, match="text_encoder, tokenize"):
        LatentModel(model.unet, model.vae, model.text_encoder, None, model.schedule, 0.18, 16)
    with pytest.raises(TypeError, match="schedule"):
        LatentModel(model.unet, model.vae, None, None, "scaled_linear", 0.18, 16)
    with pytest.raises(ValueError, match="scaling_factor"):
        LatentModel(model.unet, model.vae, None, None, model.schedule, 0.0, 16)


def test_pipeline_without_components():
    with pytest.raises(TypeError, match="pipe"):
        LatentModel.from_diffusers_pipeline(object())


def test_one_rule_for_image_or_latent(model):
    """``is_latent`` decides by the channel count (with an autoencoder); ``to_latent`` encodes images and
    passes latents through, checked; pixel space takes every input as an image."""
    img = _image()
    with torch.no_grad():
        z = model.encode_image(img)
    assert not model.is_latent(img) and model.is_latent(z)
    assert torch.equal(model.to_latent(img), z)
    assert model.to_latent(z) is z or torch.equal(model.to_latent(z), z)
    assert model.to_latent(z, torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="channels"):
        model.to_latent(torch.zeros(1, 3, 8, 8), is_latent=True)
    with pytest.raises(ValueError, match="multiples"):
        model.to_latent(torch.zeros(1, 4, 5, 5))
    with pytest.raises(ValueError, match="dimensions"):
        model.is_latent(torch.zeros(4, 8, 8))
    pixel = LatentModel(model.unet, None, model.text_encoder, model.tokenize, model.schedule, 0.5, model.max_length)
    x = torch.zeros(1, 4, 8, 8)
    assert not pixel.is_latent(x)
    assert torch.equal(pixel.to_latent(x), x * 0.5)  # an image of the UNet's channels, scaled
