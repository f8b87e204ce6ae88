"""Cross-library parity: on the same model and the same starting noise, diffzoo's samplers reproduce
diffusers' schedulers and k-diffusion's samplers to <= 1e-5 (max abs, float32)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from diffzoo.core import Denoiser, from_diffusers_config, from_diffusers_unet, get_schedule
from diffzoo.sampling import SAMPLERS, get_timesteps, nfe, steps_for_nfe
from diffzoo.sampling import reference as ref

pytest.importorskip("diffusers")


TOL = 1e-5
needs_kdiff = pytest.mark.skipif(
    importlib.util.find_spec("k_diffusion") is None
    or importlib.util.find_spec("torchsde") is None
    or importlib.util.find_spec("torchdiffeq") is None,
    reason="k-diffusion (pip install k-diffusion --no-deps), torchsde, torchdiffeq",
)


def smooth_net(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
    """A deterministic, smooth, nonlinear eps-model whose outputs keep x0 bounded."""
    w = torch.tensor([[0.6, -0.3], [0.2, 0.5]], dtype=x.dtype)
    tt = t.to(x.dtype).reshape(-1, 1, 1, 1) / 1000
    mix = torch.einsum("ij,bjhw->bihw", w, x) + torch.sin(3 * tt) + 0.3 * x.roll(1, -1)
    return 0.9 * x * (1 - torch.exp(-5 * tt)).sqrt() + 0.3 * torch.tanh(mix)


@pytest.fixture(scope="module")
def x_start() -> torch.Tensor:
    return torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))


CASES = [  # (sampler, our spacing, diffusers overrides)
    ("ddim", "leading", {}),
    ("ddim", "trailing", {"timestep_spacing": "trailing"}),
    ("plms", "leading", {}),
    ("plms", "trailing", {"timestep_spacing": "trailing"}),
    ("pndm", "leading", {}),
    ("dpmpp_2m", "uniform", {}),
    ("dpmpp_2m", "trailing", {"timestep_spacing": "trailing"}),
]


@pytest.mark.parametrize("name,spacing,over", CASES)
@pytest.mark.parametrize("alpha_to_one", [True, False])
@pytest.mark.parametrize("num_steps", [5, 20])
def test_matches_diffusers_scheduler(name, spacing, over, alpha_to_one, num_steps, x_start):
    sch = ref.diffusers_scheduler(
        name,
        {"set_alpha_to_one": alpha_to_one, "beta_schedule": "scaled_linear"}
        if num_steps == 5
        else {"set_alpha_to_one": alpha_to_one},
        **over,
    )
    den = Denoiser(smooth_net, from_diffusers_config(sch), "epsilon")
    expected = ref.run_diffusers(sch, den, x_start, num_steps)
    ts = get_timesteps(den.schedule, num_steps, spacing)
    if name != "plms" and name != "pndm":  # our spacing names reproduce diffusers' grids
        assert ts[:-1].tolist() == sch.timesteps.tolist()
    got = SAMPLERS[name](den, x_start, ts)
    assert (got - expected).abs().max().item() <= TOL


def test_dpm_solver_long_grid_and_v_prediction(x_start):
    """15+ steps (no lower-order final step) and a v-prediction model."""
    sch = ref.diffusers_scheduler("dpmpp_2m", {"prediction_type": "v_prediction"})
    den = Denoiser(smooth_net, from_diffusers_config(sch), "v_prediction")
    expected = ref.run_diffusers(sch, den, x_start, 16)
    got = SAMPLERS["dpmpp_2m"](den, x_start, get_timesteps(den.schedule, 16, "uniform"))
    assert (got - expected).abs().max().item() <= TOL


def test_ddim_eta_and_ddpm_match_diffusers_noise_stream(x_start):
    """Stochastic steps draw their noise from the same generator in the same order as diffusers."""
    for name, eta in (("ddim", 0.7), ("ddpm", 1.0)):
        sch = ref.diffusers_scheduler(name)
        den = Denoiser(smooth_net, from_diffusers_config(sch), "epsilon")
        kw = {"eta": eta} if name == "ddim" else {}
        expected = ref.run_diffusers(sch, den, x_start, 10, generator=torch.Generator().manual_seed(5), **kw)
        ts = get_timesteps(den.schedule, 10, "leading")
        got = SAMPLERS[name](den, x_start, ts, generator=torch.Generator().manual_seed(5), **kw)
        assert (got - expected).abs().max().item() <= TOL, name


def test_ddim_matches_diffusers_on_a_random_unet():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    for name in ("ddim", "dpmpp_2m"):  # x0-prediction keeps a random network's x0 bounded
        sch = ref.diffusers_scheduler(name, {"prediction_type": "sample"})
        den = from_diffusers_unet(unet, sch)
        expected = ref.run_diffusers(sch, den, x, 6)
        got = SAMPLERS[name](den, x, get_timesteps(den.schedule, 6, "leading" if name == "ddim" else "uniform"))
        assert (got - expected).abs().max().item() <= TOL, name


@needs_kdiff
@pytest.mark.parametrize("name", ["euler", "heun"])
@pytest.mark.parametrize("spacing,steps", [("karras", 6), ("uniform", 10)])
def test_matches_k_diffusion_discrete(name, spacing, steps, x_start):
    sch = get_schedule("linear")
    den = Denoiser(smooth_net, sch, "epsilon")
    ts = get_timesteps(sch, steps, spacing)
    expected = ref.run_k_diffusion(name, den, x_start, ts)
    got = SAMPLERS[name](den, x_start, ts)
    assert (got - expected).abs().max().item() <= TOL


@needs_kdiff
@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_matches_k_diffusion_edm(name):
    sch = get_schedule("edm")
    den = Denoiser(lambda x, t, c: x / (1 + t.reshape(-1, 1) ** 2) + 0.1 * torch.sin(x), sch, "sample")
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2)) * 80
    ts = get_timesteps(sch, 8, "karras")
    expected = ref.run_k_diffusion(name, den, x, ts)
    got = SAMPLERS[name](den, x, ts)
    assert (got - expected).abs().max().item() <= TOL * max(1.0, expected.abs().max().item())


@needs_kdiff
@pytest.mark.parametrize("schedule,steps", [("linear", 6), ("edm", 8)])
def test_heun_matches_k_diffusion_on_a_grid_ending_above_zero(schedule, steps, x_start):
    """k-diffusion's sample_heun takes an Euler step only onto sigma = 0: on a Karras grid stopped at
    sigma_min every step is a Heun step (NFE 2N); on the full grid the last one is Euler (2N - 1)."""
    sch = get_schedule(schedule)
    den = Denoiser(
        smooth_net if schedule == "linear" else lambda x, t, c: x / (1 + t.reshape(-1, 1, 1, 1) ** 2),
        sch,
        "epsilon" if schedule == "linear" else "sample",
    )
    x = (x_start if schedule == "linear" else x_start * 80).double()
    full = get_timesteps(sch, steps, "karras")
    ts = full[:-1]  # ends at the smallest training noise level, above zero
    assert float(sch.ve_sigma(ts[-1:])) > 0
    expected = ref.run_k_diffusion("heun", den, x, ts)
    den.nfe = 0
    got = SAMPLERS["heun"](den, x, ts)
    assert den.nfe == nfe("heun", steps - 1, ends_at_zero=False) == 2 * (steps - 1)
    assert (got - expected).abs().max().item() <= TOL * max(1.0, expected.abs().max().item())
    den.nfe = 0
    SAMPLERS["heun"](den, x, full)
    assert den.nfe == nfe("heun", steps) == 2 * steps - 1
    assert steps_for_nfe("heun", 2 * (steps - 1), ends_at_zero=False) == steps - 1
