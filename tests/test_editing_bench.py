"""``diffzoo bench editing`` end to end on a small random TinySD and classifier (stand-ins for the zoo's)."""

from __future__ import annotations

import pytest
import torch

from diffzoo.bench import editing as B
from diffzoo.models.tinysd import ShapesClassifier, TinySD
from diffzoo.zoo.latent import latent_model

torch.set_num_threads(1)  # 2 shared cores: extra threads only contend


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    sd = TinySD(
        vae=dict(block_out_channels=(8, 8, 16), norm_num_groups=4),
        unet=dict(block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4),
        text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
    )
    return latent_model(sd.eval().requires_grad_(False)), ShapesClassifier(width=8).eval()


def test_bench_runs_every_method_and_exact_ones_are_exact(small):
    model, clf = small
    cfg = B.EditBenchConfig(n=4, steps=3, n64=1, nt_inner=1, examples=4, n_drift=1)
    report, grid, summary = B.run_bench(cfg, model=model, classifier=clf)
    for m in B.METHODS:
        assert f"| {m} " in report
        assert 0.0 <= summary[m]["success"] <= 1.0 and summary[m]["nfe"] > 0
    assert "Papers' claims beside ours" in report and "| color" in report
    # exact methods, float64 round trip (max abs, latent space)
    assert summary["edict"]["rec_max64"] < 1e-9
    assert summary["ddpm"]["rec_max64"] < 1e-9
    assert summary["direct+p2p"]["rec_max64"] < 1e-9
    assert summary["infedit"]["rec_max64"] < 1e-12
    assert summary["infedit"]["nfe"] == 2  # strength 0.7 of 3 steps: 2 steps, one batched call each
    # 4 example rows (one per kind) of source, ground truth and the 7 methods, upsampled 4x
    assert grid.shape == (3, 4 * (128 + 2) + 2, 9 * (128 + 2) + 2)


def test_bench_helpers_and_errors(small):
    from diffzoo.data import shapes

    pairs = shapes.edit_pairs(4, seed=1)
    for p in pairs:
        words = B.blend_words(p)
        if p.edit.kind == "background":
            assert words is None
        else:
            assert len(words) == 2 and words[0][0] in p.source_caption and words[1][0] in p.target_caption
            assert words[0] != words[1] or p.edit.kind == "move"
    x = torch.zeros(1, 3, 32, 32)
    y = x.clone()
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[:8] = True
    y[..., :8, :] = 1.0  # differs only inside the mask
    p, s = B.masked_psnr_ssim(x, y, mask)
    assert p == float("inf") and abs(s - 1.0) < 1e-12
    y[..., 20, 20] = 1.0  # one background pixel differs
    assert B.masked_psnr_ssim(x, y, mask)[0] < 60
    model, clf = small
    with pytest.raises(ValueError, match="methods"):
        B.run_bench(B.EditBenchConfig(n=1, methods=("p2p",)), model=model, classifier=clf)


def test_bench_cli_needs_zoo_models(capsys):
    from diffzoo.cli import main

    assert main(["bench", "editing", "--quick", "--no-write", "--model", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_load_tinysd_checkpoint(tmp_path):
    from diffzoo.train.checkpoint import atomic_save_safetensors

    torch.manual_seed(1)
    sd = TinySD(unet=dict(block_out_channels=(16, 32)))
    sd.scaling_factor.fill_(0.5)
    atomic_save_safetensors(
        {"ema." + k: v.contiguous() for k, v in sd.state_dict().items()}, tmp_path / "checkpoint.safetensors"
    )
    lm = B.load_tinysd_checkpoint(str(tmp_path))
    assert tuple(lm.unet.config.block_out_channels) == (16, 32) and lm.scaling_factor == 0.5
    w = sd.unet.conv_in.weight
    assert torch.equal(lm.unet.conv_in.weight, w)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        B.load_tinysd_checkpoint(str(tmp_path / "nope"))
