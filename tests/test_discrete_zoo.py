"""The shipped masked digits model: loads, samples through ``sample_digits``, and re-measures its recorded NELBO."""

import pytest
import torch

from diffzoo.bench.discrete import token_entropy
from diffzoo.discrete import sample_digits
from diffzoo.models.transformer import MaskedTransformer

torch.set_num_threads(1)


def _zoo_model():
    from diffzoo import zoo

    if "masked-digits" not in zoo.names():
        pytest.skip("zoo model masked-digits not shipped in this build")
    return zoo.load("masked-digits")


@pytest.mark.parametrize("sampler", ["fhs", "ancestral", "confidence"])
def test_sample_digits_shapes_and_levels(sampler):
    m = MaskedTransformer(vocab_size=17, seq_len=64, d_model=16, n_layers=1, n_heads=2).eval()
    x = sample_digits(m, 3, steps=4, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 8, 8) and x.dtype == torch.long and int(x.min()) >= 0 and int(x.max()) <= 16
    with pytest.raises(ValueError, match="sampler"):
        sample_digits(m, 3, sampler="euler")


def test_token_entropy_known_values():
    assert token_entropy(torch.zeros(2, 64, dtype=torch.long)) == pytest.approx(0.0)
    x = torch.arange(16).repeat(4)[None]
    assert token_entropy(x) == pytest.approx(torch.log(torch.tensor(16.0)).item())


def test_zoo_masked_digits_nelbo_and_samples():
    from diffzoo.data import digits
    from diffzoo.discrete import negative_elbo

    zm = _zoo_model()
    test = digits.load("test").levels
    nelbo = negative_elbo(
        zm.model, test, zm.config.get("mask_schedule", "linear"), n_t=8, generator=torch.Generator().manual_seed(1234)
    )
    assert nelbo == pytest.approx(zm.metrics["test_nelbo_nats_per_token"], abs=0.06)
    x = sample_digits(zm.model, 16, generator=torch.Generator().manual_seed(0))
    # samples are digit-like: a background of zeros and a spread of levels (not collapsed)
    assert 0.3 < float((x == 0).float().mean()) < 0.8 and token_entropy(x.view(16, 64)) > 1.0


def test_cli_registrations():
    from diffzoo.cli import build_parser
    from diffzoo.models.registry import archs
    from diffzoo.recipes.registry import recipes

    assert {"masked-digits", "masked-shapes"} <= set(recipes()) and "masked-transformer" in archs()
    args = build_parser().parse_args(["bench", "discrete", "--quick"])
    assert args.quick and args.model == "masked-digits"


def test_zoo_masked_shapes_tokens_nelbo_and_samples():
    """The shipped patch-VQ shapes model: its codebook decodes to RGB scenes, its recorded tokenizer PSNR
    and test NELBO re-measure (on a subset of the same unseen-scene stream), and FHS samples decode."""
    from diffzoo import zoo
    from diffzoo.data import shapes
    from diffzoo.discrete import first_hitting_sample, negative_elbo
    from diffzoo.discrete.tokens import token_space
    from diffzoo.metrics.image import psnr
    from diffzoo.recipes.masked import shapes_token_data

    if "masked-shapes" not in zoo.names():
        pytest.skip("zoo model masked-shapes not shipped in this build")
    zm = zoo.load("masked-shapes")
    space = token_space(zm.model)
    assert space.image_shape == (3, 32, 32) and space.seq_len == 64 and space.vocab_size == 256
    scenes, toks = shapes_token_data(space, 200, zm.config["seed"] + 1)  # the recipe's test stream
    rec = psnr(space.decode(toks).float(), shapes.render_batch(scenes))  # mean per-image PSNR, as recorded
    assert float(rec) == pytest.approx(zm.metrics["vq_test_psnr_db"], abs=0.7)
    nelbo = negative_elbo(zm.model, toks, "linear", n_t=4, generator=torch.Generator().manual_seed(1234))
    assert nelbo == pytest.approx(zm.metrics["test_nelbo_nats_per_token"], abs=0.06)
    x = first_hitting_sample(zm.model, 2, generator=torch.Generator().manual_seed(0))
    img = space.decode(x)
    assert img.shape == (2, 3, 32, 32) and float(img.min()) >= -1.01 and float(img.max()) <= 1.01


def test_masked_shapes_recipe_runs_end_to_end(tmp_path, monkeypatch):
    """A tiny run of the recorded recipe: codebook fit, tokenisation, training, evaluation; without
    --zoo-name nothing is written into the zoo (the recipe's old --name defaulted to the model name)."""
    from diffzoo import zoo
    from diffzoo.cli import build_parser

    weights = tmp_path / "weights"
    weights.mkdir()
    shipped = sorted(p.name for p in zoo.WEIGHTS_DIR.iterdir())
    for p in zoo.WEIGHTS_DIR.iterdir():
        (weights / p.name).symlink_to(p)
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", weights)
    args = build_parser().parse_args(
        [
            "train",
            "masked-shapes",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--train-scenes",
            "64",
            "--kmeans-scenes",
            "16",
            "--kmeans-iters",
            "2",
            "--codes",
            "16",
            "--d-model",
            "16",
            "--n-layers",
            "1",
            "--n-heads",
            "2",
            "--out-dir",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert args.zoo_name is None
    metrics = args.recipe_fn(args)
    assert set(metrics) >= {"test_nelbo_bits_per_token", "vq_test_psnr_db"}
    assert 10 < metrics["vq_test_psnr_db"] < 60 and metrics["test_nelbo_bits_per_token"] > 0
    assert all(p.is_symlink() for p in weights.iterdir())  # no shipped file replaced, none added
    assert sorted(p.name for p in weights.iterdir()) == shipped


def test_bench_discrete_sections_option(tmp_path, monkeypatch):
    import pytest

    from diffzoo.bench import discrete as bench
    from diffzoo.bench.common import wanted_sections

    assert wanted_sections(None, bench.SECTION_IDS) == bench.SECTION_IDS
    assert wanted_sections(" 3b, 3a ", bench.SECTION_IDS) == ("3a", "3b")
    for bad in ("3c", "", "4,,x"):
        with pytest.raises(ValueError, match="^sections: "):
            wanted_sections(bad, bench.SECTION_IDS)
    monkeypatch.setattr(bench, "results_dir", lambda: tmp_path)
    bench._write(["# t"], "_quick", ("3a", "3b"))
    bench._write(["# all"], "", bench.SECTION_IDS)
    assert (tmp_path / "bench_discrete_quick_3a-3b.md").read_text() == "# t\n"
    assert (tmp_path / "bench_discrete.md").read_text() == "# all\n"
