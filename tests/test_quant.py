"""Post-training quantization (issue 13): quantizer identities, simulated models vs float, split quantizers,
calibration sets, reconstruction, real int8 kernels vs the simulation, zoo round trip and bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from diffzoo import zoo
from diffzoo.quant import (
    ActQuantizer,
    CalibSet,
    QuantLayer,
    QuantSpec,
    WeightQuantizer,
    fake_quant,
    ndtc,
    prepare,
    quantize,
    set_mode,
    timestep_aware,
)
from diffzoo.quant.int8 import Int8Island, lower, observe_outputs
from diffzoo.quant.quantizer import lp_error, search_range
from diffzoo.zoo.quant import PackedModel, diffusion_bank, pack_codes, quant_config, unpack_codes


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().pow(2).mean() / b.detach().pow(2).mean())


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    base = zoo.load("digits-unet")
    bank = diffusion_bank(base.denoiser(), base.sample_shape, 8, 6, 2.0, base.null_class, 10, 0)
    return base, bank


# ------------------------------------------------------------------------------------------ quantizer
def test_grid_points_are_fixed_points_and_error_is_at_most_half_a_step():
    g = torch.Generator().manual_seed(0)
    delta, zp, qmax = torch.tensor(0.037), torch.tensor(11.0), 15
    grid = (torch.arange(qmax + 1).float() - zp) * delta
    assert torch.equal(fake_quant(grid, delta, zp, 0, qmax), grid)
    x = torch.rand(1000, generator=g) * (grid[-1] - grid[0]) + grid[0]
    assert float((fake_quant(x, delta, zp, 0, qmax) - x).abs().max()) <= float(delta) / 2 + 1e-6


def test_ste_gradient_is_one_inside_and_zero_outside_the_range():
    delta, zp = torch.tensor(0.1), torch.tensor(8.0)
    x = torch.tensor([-0.3, 0.0, 0.42, 5.0, -5.0], requires_grad=True)
    fake_quant(x, delta, zp, 0, 15).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_mse_search_never_worse_than_max_and_32_bits_is_identity():
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(1)) ** 3
    for bits in (4, 8):
        errs = []
        for method in ("max", "mse"):
            d, z = search_range(w, bits, 0, method)
            errs.append(lp_error(w, fake_quant(w, d, z, 0, 2**bits - 1), (1, 2, 3)))
        assert bool((errs[1] <= errs[0] + 1e-9).all())
    assert torch.equal(WeightQuantizer(w, 32)(w), w)
    assert torch.equal(ActQuantizer(32)(w), w)


def test_adaround_hard_rounding_within_one_step_of_nearest_and_regulariser():
    w = torch.randn(5, 7, generator=torch.Generator().manual_seed(2))
    wq = WeightQuantizer(w, 4)
    nearest = wq(w)
    wq.init_adaround(w)
    wq.soft = False
    assert float((wq(w) - nearest).abs().max()) <= float(wq.delta.max()) * 0.5 + 1e-6  # init = round to nearest
    with torch.no_grad():
        wq.alpha.normal_(0, 3)
    assert bool(((wq(w) - nearest).abs() <= wq.delta + 1e-6).all())  # any rounding: +-delta of nearest
    with torch.no_grad():
        wq.alpha.copy_(torch.sign(wq.alpha) * 50)
    assert float(wq.round_loss(2.0).detach()) < 1e-6  # h in {0, 1}


def test_split_quantizers_lower_error_on_bimodal_concat():
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    conv = nn.Conv2d(8, 4, 1)
    with torch.no_grad():  # both halves matter to the output (x_small * 100 ~ x_large)
        conv.weight[:, :4] *= 100
    x = torch.cat([torch.randn(16, 4, 4, 4, generator=g) * 0.05, torch.randn(16, 4, 4, 4, generator=g) * 5], 1)
    ref = conv(x).detach()
    errs = {}
    for split in (0, 4):
        q = QuantLayer(conv, 8, 4, split=split)
        for a in q.aq:
            a.start_calibration("mse")
        q(x)
        for a in q.aq:
            a.finish_calibration()
        errs[split] = _rel(q(x).detach(), ref)
    assert errs[4] < errs[0]


# -------------------------------------------------------------------------------------- calibration sets
def test_calibration_sets_pair_each_state_with_its_own_time(digits):
    _, bank = digits
    steps = torch.unique(bank.step)
    sel = ndtc(bank, 64, torch.Generator().manual_seed(0))
    for i in range(len(sel)):
        rows = torch.nonzero(bank.step == sel.step[i]).flatten()
        assert float(bank.t[rows[0]]) == float(sel.t[i])  # the true t of that sampler state
        assert any(torch.equal(sel.args[0][i], bank.args[0][r]) for r in rows)
    ta = timestep_aware(bank, 3)
    assert torch.unique(ta.step).numel() == 3 and int(torch.unique(ta.step)[0]) == int(steps[0])
    with pytest.raises(ValueError, match="calib"):
        bank.check(sample_shape=(1, 16, 16))
    with pytest.raises(ValueError, match="calib"):
        bank.check(t_range=(0.0, 10.0))


# ------------------------------------------------------------------------------------ simulated models
def test_8bit_simulated_digits_unet_close_to_float_and_w32a32_exact(digits):
    base, bank = digits
    rows = bank.subset(torch.arange(0, len(bank), 4))
    ref = rows.call(base.model)
    m = copy.deepcopy(base.model)
    res = quantize(m, bank, "minmax", 8, 8, n_calib=48)
    assert res.spec.keep8 and any(isinstance(x, QuantLayer) for x in m.modules())
    assert _rel(rows.call(m), ref) < 1e-2
    m32 = copy.deepcopy(base.model)
    quantize(m32, bank, "minmax", 32, 32, n_calib=16)
    assert torch.allclose(rows.call(m32), ref, atol=1e-5)  # only the attention's softmax order differs


def test_qdiffusion_reconstruction_and_quest_time_groups(digits):
    base, bank = digits
    m = copy.deepcopy(base.model)  # QuEST = the Q-Diffusion pipeline + time groups + selective fine-tuning
    res = quantize(m, bank, "quest", 4, 8, n_calib=16, iters=2, groups=3, batch_size=16)
    assert res.spec.splits and all(k.startswith("up.") for k in res.spec.splits)
    assert res.recon is not None and len(res.recon.units) > 5
    assert all(torch.isfinite(torch.tensor(v)) for v in res.recon.loss_after)
    layer = next(q for _, q in m.named_modules() if isinstance(q, QuantLayer) and q.wbits == 4)
    k = layer.wq[0].codes(layer.weight_parts()[0])
    assert torch.allclose(layer.wq[0](layer.weight_parts()[0]), (k - layer.wq[0].zp) * layer.wq[0].delta, atol=1e-6)
    a = next(x for x in m.modules() if isinstance(x, ActQuantizer))
    assert a.delta.shape == (3,) and len(res.spec.edges) == 2 and res.quest_layers
    assert any("time" in n for n in res.quest_layers) and any("attn" in n for n in res.quest_layers)
    assert bool(torch.isfinite(bank.subset(torch.arange(4)).call(m)).all())


def test_diffusers_unet_with_quantized_attention():
    diffusers = pytest.importorskip("diffusers")
    from diffusers.models.attention_processor import AttnProcessor

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()
    unet.set_attn_processor(AttnProcessor())
    g = torch.Generator().manual_seed(0)
    calls = [
        (
            (torch.randn(4, 4, 8, 8, generator=g), torch.full((4,), float(t))),
            {"encoder_hidden_states": torch.randn(4, 5, 16, generator=g)},
        )
        for t in (800, 300)
    ]
    bank = CalibSet.from_calls(calls)
    ref = bank.call(unet).sample
    m32 = copy.deepcopy(unet)
    quantize(m32, bank, "minmax", 32, 32, n_calib=8, batch_size=4)  # the processor's math equals diffusers'
    assert torch.allclose(m32(*bank.args, **bank.kwargs).sample, ref, atol=1e-5)
    m8 = copy.deepcopy(unet)
    res = quantize(m8, bank, "minmax", 8, 8, n_calib=8, batch_size=4, split=True)
    procs = [p for p in m8.attn_processors.values()]
    assert procs and all(type(p).__name__ == "QuantAttnProcessor" and bool(p.p_quant.ready) for p in procs)
    assert res.spec.splits  # the up blocks' concatenated skips
    assert _rel(bank.call(m8).sample, ref) < 0.05


# ---------------------------------------------------------------------------------------------- int8
def _calibrated_conv(wbits: int, qmax: int | None) -> tuple[nn.Module, CalibSet]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 16, 1), nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 16, 1))
    g = torch.Generator().manual_seed(0)
    bank = CalibSet.from_calls([((torch.randn(8, 16, 8, 8, generator=g),), {}) for _ in range(2)])
    quantize(net, bank, "minmax", wbits, 8, n_calib=16, act_qmax=qmax, batch_size=8)
    observe_outputs(net, bank.batches(16))
    return net, bank


@pytest.mark.parametrize("wbits,qmax", [(8, 127), (4, None)])
def test_int8_kernel_matches_simulated_layer_within_one_output_step(wbits, qmax):
    net, bank = _calibrated_conv(wbits, qmax)
    x = bank.args[0]
    layer = net[1]  # the first and last conv keep 8-bit weights
    assert layer.wbits == wbits
    set_mode(net, "sim")
    x = net[0](x)
    sim = layer(x)
    island = Int8Island(layer, None)
    step = float(island.mods[0].scale)
    diff = (island(x) - sim).abs()
    # the kernel requantizes its output (<= step / 2); torch quantizes inputs as x * (1 / scale), the
    # simulation as x / delta, so an input code on a tie may differ by one: within one output step
    assert float(diff.max()) <= step + 1e-5 and float(diff.mean()) <= step / 4
    if qmax == 127:
        lower(net)
        assert all(q.mode == "int8" for q in net.modules() if isinstance(q, QuantLayer))


def test_lowered_digits_unet_float_attention_is_fused_and_close(digits):
    """``lower`` (default ``attention="float"``) runs attention on the fused float kernel: the lowered model is
    close to the float model; ``attention="sim"`` keeps the simulated q/k/v/probs quantization; float mode
    (fused attention) equals the original network."""
    base, bank = digits
    rows = bank.subset(torch.arange(0, len(bank), 4))
    ref = rows.call(base.model)
    m = copy.deepcopy(base.model)
    quantize(m, bank, "minmax", 8, 8, n_calib=48, act_qmax=127)
    observe_outputs(m, bank.batches(48))
    set_mode(m, "float")
    assert torch.allclose(rows.call(m), ref, atol=1e-5)
    set_mode(m, "sim")
    sim = rows.call(m)
    m_sim_attn = copy.deepcopy(m)
    lower(m_sim_attn, attention="sim")
    procs = [p for p in m_sim_attn.modules() if type(p).__name__ == "QuantAttnProcessor"]
    assert procs and all(p.quantize for p in procs)
    lower(m)
    procs = [p for p in m.modules() if type(p).__name__ == "QuantAttnProcessor"]
    assert procs and not any(p.quantize for p in procs)
    out = rows.call(m)
    assert _rel(out, ref) < 5e-3 and _rel(rows.call(m_sim_attn), sim) < 5e-3  # measured ~8e-4, ~4e-4
    with pytest.raises(ValueError, match="attention"):
        lower(copy.deepcopy(m), attention="int4")


def test_int8_refuses_layers_without_a_kernel():
    net, _ = _calibrated_conv(8, None)  # W8 with full 0..255 activations saturates fbgemm
    with pytest.raises(ValueError, match="int8"):
        lower(net)


# ------------------------------------------------------------------------------------------- zoo, io
def test_pack_codes_round_trip():
    g = torch.Generator().manual_seed(0)
    for bits in (4, 8):
        codes = torch.randint(0, 2**bits, (7, 5), generator=g)
        packed = pack_codes(codes, bits)
        assert packed.dtype == torch.uint8 and packed.numel() == (18 if bits == 4 else 35)
        assert torch.equal(unpack_codes(packed, bits, 35).reshape(7, 5), codes)
    with pytest.raises(ValueError, match="codes"):
        pack_codes(torch.tensor([16]), 4)


def test_quantized_zoo_entry_round_trip(digits, tmp_path):
    base, bank = digits
    m = copy.deepcopy(base.model)
    res = quantize(m, bank, "minmax", 4, 8, n_calib=32)
    cfg = base.config
    path = zoo.save(
        "dq",
        PackedModel(m),
        cfg["arch"],
        cfg["arch_config"],
        schedule=cfg["schedule"],
        prediction_type=cfg["prediction_type"],
        weights_dir=tmp_path,
        kind="diffusion",
        null_class=10,
        quant=quant_config({"": res.spec}, method="minmax", wbits=4, abits=8, int8=False, base="digits-unet"),
    )
    assert path.stat().st_size < 0.5 * zoo.WEIGHTS_DIR.joinpath("digits-unet.safetensors").stat().st_size
    loaded = zoo.load(str(path))
    rows = bank.subset(torch.arange(6))
    assert torch.allclose(rows.call(loaded.model), rows.call(m), atol=1e-5)


# --------------------------------------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_argument(digits):
    base, bank = digits
    m = copy.deepcopy(base.model)
    with pytest.raises(ValueError, match="wbits"):
        quantize(m, bank, "qdiffusion", 9, 8)
    with pytest.raises(TypeError, match="abits"):
        quantize(m, bank, "qdiffusion", 8, 8.0)
    with pytest.raises(ValueError, match="method"):
        quantize(m, bank, "gptq", 8, 8)
    with pytest.raises(TypeError, match="bank"):
        quantize(m, bank.args[0], "minmax", 8, 8)
    with pytest.raises(TypeError, match="layer"):
        QuantLayer(nn.Conv1d(2, 2, 1), 8, 8)
    with pytest.raises(ValueError, match="edges"):
        QuantSpec(groups=3, edges=[1.0])
    prepare(m, QuantSpec())
    with pytest.raises(ValueError, match="model"):
        prepare(m, QuantSpec())


# ------------------------------------------------------------------------------------------------ CLI
def test_quantize_cli_writes_an_int8_entry_that_samples(tmp_path, capsys):
    """``diffzoo quantize --int8`` writes a packed zoo entry that loads on the int8 kernels, and ``diffzoo sample``
    runs it; a refused request (W8 weights with full-range activations cannot run on fbgemm, or an already
    quantized model) leaves nothing behind."""
    from diffzoo.cli import main

    small = ["--calib-samples", "4", "--calib-steps", "4", "--n-calib", "16", "--iters", "1"]
    args = ["quantize", "digits-unet", "--method", "minmax", "--int8", "--weights-dir", str(tmp_path), *small]
    assert main([*args, "--name", "dq8"]) == 0
    path = tmp_path / "dq8.safetensors"
    assert "packed" in capsys.readouterr().out and path.exists()
    loaded = zoo.load(str(path))
    layers = [m for m in loaded.model.modules() if isinstance(m, QuantLayer)]
    assert layers and all(m.mode == "int8" for m in layers)
    out = tmp_path / "s.png"
    assert main(["sample", str(path), "-n", "4", "--steps", "4", "--sampler", "ddim", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["quantize", str(path), "--weights-dir", str(tmp_path), "--name", "again", *small]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_bench_speed_row_times_float_int8_and_simulated_side_by_side(digits):
    from diffzoo.bench import quant as bench

    base, bank = digits
    row = bench._speed_row("digits", copy.deepcopy(base.model), bank, bank.subset(torch.arange(4)), repeats=1)
    assert all(row[k] > 0 for k in ("fp32_ms", "int8_ms", "int8_sim_attn_ms", "sim_ms", "speedup"))
    assert row["rel_mse_int8_vs_fp"] < 5e-3 and row["rel_mse_sim_vs_fp"] < 5e-3
    assert row["packed_kib"] < row["fp32_kib"] / 3  # int8 codes + per-channel scales vs float32
    assert bench.QUICK_SECTIONS == ("1", "2", "3") and set(bench.QUICK_SECTIONS) < set(bench.SECTIONS)
    x = torch.zeros(4, 1, 8, 8)
    y = x.clone()
    y[0] += 2.0  # one sample ends on another image
    y[1:] += 0.01
    assert bench._vs_fp(x, x) == {"med_mse_vs_fp": 0.0, "diverged": 0.0}
    d = bench._vs_fp(y, x)
    assert d["diverged"] == 0.25 and abs(d["med_mse_vs_fp"] - 1e-4) < 1e-7


def test_sample_cli_runs_tinysd_and_its_int8_quantized_entry(tmp_path, capsys):
    """``diffzoo sample tinysd --prompt`` draws text-to-image samples; a quantized TinySD entry (UNet and VAE
    decoder on int8 kernels) samples through the same command, close to the float model at W8A8."""
    from diffzoo.cli import main
    from diffzoo.zoo.sampling import sample_text, sample_zoo

    prompt = "red circle left and blue square right on white"
    out = tmp_path / "t.png"
    common = ["--prompt", prompt, "-n", "2", "--steps", "4", "--sampler", "ddim", "--guidance", "5"]
    assert main(["sample", "tinysd", *common, "--out", str(out)]) == 0
    assert "samples of shape (3, 32, 32)" in capsys.readouterr().out and out.stat().st_size > 0
    small = ["--calib-samples", "2", "--calib-steps", "4", "--n-calib", "8", "--iters", "1"]
    args = ["quantize", "tinysd", "--method", "minmax", "--int8", "--weights-dir", str(tmp_path), "--name", "tq"]
    assert main([*args, *small]) == 0
    path = str(tmp_path / "tq.safetensors")
    assert main(["sample", path, *common, "--out", str(tmp_path / "q.png")]) == 0
    zm = zoo.load(path)
    draw = lambda m: sample_text(m, prompt, "ddim", 4, guidance=5.0, n=2).samples  # noqa: E731
    q = draw(zm)
    for sub in ("unet", "vae.decoder"):
        set_mode(zm.model.get_submodule(sub), "sim")
    sim = draw(zm)
    fp = sample_zoo("tinysd", "ddim", 4, guidance=5.0, n=2, prompt=prompt).samples
    rel = lambda a, b: float((a - b).pow(2).mean() / b.pow(2).mean())  # noqa: E731
    # int8 kernels vs their own simulation: much closer than either is to the float model
    assert q.shape == (2, 3, 32, 32) and rel(q, sim) < 0.5 * rel(sim, fp)
    with pytest.raises(ValueError, match="^prompt: "):
        sample_zoo("tinysd", "ddim", 4, n=1)
    with pytest.raises(ValueError, match="^prompt: "):
        sample_zoo("digits-unet", "ddim", 4, n=1, prompt=prompt)
    with pytest.raises(ValueError, match="^class_label: "):
        sample_zoo("tinysd", "ddim", 4, n=1, prompt=prompt, class_label="1")


def test_bench_quant_runs_the_chosen_sections_into_their_file(tmp_path, monkeypatch):
    import argparse

    from diffzoo.bench import quant as bench

    monkeypatch.setattr(bench, "results_dir", lambda: tmp_path)
    ran = []
    fns = {
        k: (lambda k: lambda quick, suffix, parts: (ran.append((k, quick, suffix)), parts.append(f"S{k}")))(k)
        for k in bench.SECTIONS
    }
    monkeypatch.setattr(bench, "SECTION_FNS", fns)
    assert bench.run(argparse.Namespace(quick=True, threads=1, sections=None)) == 0
    assert ran == [(k, True, "_quick") for k in bench.QUICK_SECTIONS]
    assert "S3" in (tmp_path / "bench_quant_quick.md").read_text()
    ran.clear()
    assert bench.run(argparse.Namespace(quick=False, threads=1, sections="4,1")) == 0
    assert ran == [("1", False, "_1-4"), ("4", False, "_1-4")]
    assert (tmp_path / "bench_quant_1-4.md").exists()
    with pytest.raises(ValueError, match="^sections: "):
        bench.run(argparse.Namespace(quick=False, threads=1, sections="5"))
