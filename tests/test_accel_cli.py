"""``--cache faster-diffusion|deepcache`` of ``diffzoo sample`` / ``diffzoo edit`` and their API paths."""

from __future__ import annotations

import pytest
import torch

from diffzoo.accel.cache import CachedUNet, cache_latent_model
from diffzoo.cli import main
from diffzoo.zoo.sampling import sample_zoo

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

torch.set_num_threads(1)


def test_sample_zoo_cache_with_every_step_a_key_equals_plain_sampling():
    kw = dict(sampler="ddim", steps=10, guidance=2.0, class_label="all", n=4, seed=3)
    plain = sample_zoo("digits-unet", **kw)
    every = sample_zoo("digits-unet", cache="faster-diffusion", cache_keys="all", **kw)
    assert plain.full_calls is None and every.full_calls == 10
    assert torch.equal(plain.samples, every.samples)  # full calls = encoder + decoder = the UNet's forward


def test_sample_zoo_cache_runs_fewer_full_calls_and_stays_close():
    kw = dict(sampler="ddim", steps=20, n=8, seed=0)
    plain = sample_zoo("digits-unet", **kw).samples
    other = sample_zoo("digits-unet", **{**kw, "seed": 1}).samples  # the distance between unrelated samples
    spread = float((other - plain).abs().mean())
    for method, keys, full in (("faster-diffusion", "uniform:4", 5), ("deepcache", "uniform:2", 10)):
        res = sample_zoo("digits-unet", cache=method, cache_keys=keys, **kw)
        assert res.full_calls == full and res.nfe == 20
        err = float((res.samples - plain).abs().mean())
        assert 0 < err < 0.5 * spread, (method, err, spread)  # the same noise still makes the same digit


def test_sample_zoo_cache_refuses_what_it_cannot_cache():
    with pytest.raises(ValueError, match="^cache: 'masked-digits' is a masked model"):
        sample_zoo("masked-digits", cache="deepcache", n=1)
    with pytest.raises(ValueError, match="^cache_keys: "):
        sample_zoo("digits-unet", cache_keys="paper", n=1)
    with pytest.raises(ValueError, match="^method: "):
        sample_zoo("digits-unet", cache="tome", n=1)


def test_cli_sample_cache_prints_full_calls(tmp_path, capsys):
    out = tmp_path / "s.png"
    args = ["sample", "digits-unet", "--sampler", "ddim", "--steps", "10", "-n", "2", "--out", str(out)]
    assert main([*args, "--cache", "faster-diffusion", "--cache-keys", "uniform:5"]) == 0
    assert "faster-diffusion cache: 2 full UNet calls" in capsys.readouterr().out and out.stat().st_size > 0
    with pytest.raises(SystemExit):  # argparse refuses an unknown method by name
        main([*args, "--cache", "tome"])


def test_cache_latent_model_and_edit(tmp_path, capsys):
    from diffzoo.editing import edit_image
    from diffzoo.inversion.common import grid
    from diffzoo.latent.attention import AttentionStore, attention_control
    from diffzoo.latent.model import tiny_random_latent_model

    model = tiny_random_latent_model(str(tmp_path / "tok"), seed=0)
    cached = cache_latent_model(model, grid(model, 6), "faster-diffusion", "uniform:3")
    assert isinstance(cached.unet, CachedUNet) and model.unet is cached.unet.unet
    with pytest.raises(ValueError, match="^model: its UNet is already cached"):
        cache_latent_model(cached, grid(model, 6))
    with pytest.raises(TypeError, match="^model: "):
        cache_latent_model(object(), grid(model, 6))
    with pytest.raises(ValueError, match="^p2p: "), attention_control(cached.unet, AttentionStore(6)):
        pass
    img = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    kw = dict(num_steps=6, p2p="none", seed=0)
    ref = edit_image("ddim", model, img, "a red circle", "a blue square", **kw)
    out = edit_image("ddim", cached, img, "a red circle", "a blue square", **kw)
    net = cached.unet.cache
    assert net.partial_calls > 0 and net.full_calls > 0
    assert out.latents.shape == ref.latents.shape and bool(torch.isfinite(out.latents).all())
    assert not torch.equal(out.latents, ref.latents)
    with pytest.raises(ValueError, match="^p2p: "):
        edit_image("ddim", cached, img, "a red circle", "a blue square", num_steps=6, p2p="refine")


def test_bench_accel_sections_option():
    from diffzoo.bench import accel as bench
    from diffzoo.bench.common import section_suffix, wanted_sections

    assert wanted_sections(None, bench.SECTIONS) == ("1", "1b", "2", "3", "3b")
    assert wanted_sections("3b, 1", bench.SECTIONS) == ("1", "3b")  # run order, not the order given
    assert section_suffix(("1", "3b"), bench.SECTIONS) == "_1-3b"
    assert section_suffix(("1", "1b", "2", "3", "3b"), bench.SECTIONS) == ""
    for bad in ("4", "", "1,,x"):
        with pytest.raises(ValueError, match="^sections: "):
            wanted_sections(bad, bench.SECTIONS)
