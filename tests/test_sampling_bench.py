"""The sampler benchmark's machinery on a tiny untrained UNet: rows, parity column, overhead table."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("torchdiffeq")
pytest.importorskip("torchsde")
if importlib.util.find_spec("k_diffusion") is None:
    pytest.skip("k-diffusion not installed (pip install k-diffusion --no-deps)", allow_module_level=True)

from diffzoo.bench import samplers as bench


def test_rows_parity_and_nfe():
    subj = bench.random_unet_subject(2)
    rows = bench.sampler_rows(subj, None, (10,), 2, 0, with_1000=False, impls=("diffzoo", "diffusers", "k-diffusion"))
    by = {(r["impl"], r["sampler"]): r for r in rows}
    assert {s for _, s in by} == set(bench.SAMPLER_ORDER) - {"pndm"}  # F-PNDM needs NFE >= 13
    for s in ("ddim", "plms", "dpmpp_2m"):
        assert by[("diffzoo", s)]["nfe"] == by[("diffusers", s)]["nfe"] == 10
    # the stand-in is a v-predictor: diffusers' PNDMScheduler combines v (not eps) across steps, so only
    # DDIM and DPM-Solver++ are expected to agree here (PLMS parity on eps models: test_parity_samplers)
    for s in ("ddim", "dpmpp_2m"):
        assert by[("diffusers", s)]["max abs diff vs diffzoo"] < 1e-4
    assert by[("diffusers", "plms")]["max abs diff vs diffzoo"] > 1e-3
    for s in bench.KDIFF:
        assert by[("k-diffusion", s)]["max abs diff vs diffzoo"] < 1e-4
    assert by[("diffzoo", "heun")]["nfe"] == 9
    assert all(r["overhead us/step"] > 0 for r in rows)


def test_overhead_table_has_every_sampler_and_both_settings():
    rows = bench.overhead_table(budget=10, repeats=1, batch=2)
    assert [r["sampler"] for r in rows] == [s for s in bench.SAMPLER_ORDER if s != "pndm"]
    for r in rows:
        assert r["diffzoo us/step"] > 0 and r["diffzoo (validated) us/step"] > 0 and r["diffusers us/step"] > 0
        assert r["diffzoo / diffusers"] > 0 and r["diffzoo (validated) / diffusers"] > 0
    assert all("diffzoo / k-diffusion" in r for r in rows if r["sampler"] in bench.KDIFF)


def test_timed_keeps_the_denoiser_options():
    from diffzoo.core.parameterization import ClipX0

    subj = bench.random_unet_subject(2)
    base = subj.den.with_net(subj.den.net)
    base.x0_correction, base.recompute_eps = ClipX0(1.0), False
    den, _ = bench.timed(base, validate=True)
    assert den.validate and den.x0_correction == ClipX0(1.0) and den.recompute_eps is False


def test_timed_denoiser_counts_network_time():
    subj = bench.random_unet_subject(2)
    den, net = bench.timed(subj.den)
    x = torch.randn(2, 1, 8, 8)
    den.x0_eps(x, torch.tensor(10.0), subj.cond)
    assert net.calls == 1 and net.seconds > 0 and den.validate is False


def test_runs_without_k_diffusion(monkeypatch, tmp_path):
    """The README's main set-up does not install k-diffusion: the bench runs and marks it unavailable."""
    import argparse

    real_overhead = bench.overhead_table
    seen: dict = {}
    monkeypatch.setattr(bench.ref, "k_diffusion_available", lambda: False)
    monkeypatch.setattr(bench, "convergence_table", lambda: [])
    monkeypatch.setattr(bench, "overhead_table", lambda kdiff=True: real_overhead(4, 1, 2, kdiff=kdiff))
    monkeypatch.setattr(bench, "sampler_rows", lambda *a, impls, **k: seen.setdefault("impls", impls) and [])
    args = argparse.Namespace(
        threads=1,
        quick=True,
        n=2,
        digits_model="none",
        toy_model="none",
        random_unet=True,
        out=str(tmp_path / "b.md"),
        no_write=True,
    )
    text = bench.run(args)
    assert seen["impls"] == ("diffzoo", "diffusers")
    assert "k-diffusion not installed" in text and bench.UNAVAILABLE in text


def test_overhead_table_marks_k_diffusion_unavailable():
    rows = bench.overhead_table(budget=4, repeats=1, batch=2, kdiff=False)
    euler = next(r for r in rows if r["sampler"] == "euler")
    assert euler["k-diffusion us/step"] == bench.UNAVAILABLE and "diffzoo us/step" in euler
    assert all(isinstance(r["diffzoo / diffusers"], float) for r in rows)
