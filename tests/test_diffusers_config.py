"""diffusers scheduler configurations honoured exactly, never silently ignored: zero terminal SNR
(Lin et al. 2024), x0 clipping (``clip_sample``) and dynamic thresholding (Saharia et al. 2022) on a
random diffusers ``UNet2DModel``, against diffusers' own scheduler loops; and a clear error for every
configuration diffzoo cannot reproduce."""

from __future__ import annotations

import pytest
import torch

from diffzoo.core import Denoiser, from_diffusers_config, from_diffusers_unet, get_schedule
from diffzoo.core.denoiser import diffusers_denoiser_options
from diffzoo.core.parameterization import ClipX0, DynamicThreshold
from diffzoo.core.schedules import DiscreteSchedule, rescale_zero_terminal_snr
from diffzoo.sampling import SAMPLERS, get_timesteps
from diffzoo.sampling import reference as ref

diffusers = pytest.importorskip("diffusers")

TOL = 2e-6  # float64 state and network; diffusers' coefficients come from float32 alphas_cumprod
TOL_EULER = 2e-5  # diffusers' EulerDiscreteScheduler.step computes in float32


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return (
        diffusers.UNet2DModel(
            sample_size=8,
            in_channels=2,
            out_channels=2,
            layers_per_block=1,
            block_out_channels=(8, 16),
            norm_num_groups=4,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
        )
        .eval()
        .double()
    )


@pytest.fixture(scope="module")
def x_start():
    return torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


ZERO_SNR = {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
CASES = [  # (diffusers scheduler, config, diffzoo sampler, diffzoo spacing, tolerance)
    ("DDIMScheduler", ZERO_SNR, "ddim", "trailing", TOL),  # (a) zero terminal SNR
    ("DPMSolverMultistepScheduler", ZERO_SNR, "dpmpp_2m", "trailing", TOL),
    ("EulerDiscreteScheduler", ZERO_SNR, "euler", "trailing", TOL_EULER),
    ("DDIMScheduler", {}, "ddim", "leading", TOL),  # (b) defaults: clip_sample=True
    ("DDIMScheduler", {"clip_sample_range": 0.5, "set_alpha_to_one": False}, "ddim", "leading", TOL),
    ("DDIMScheduler", {"thresholding": True, "sample_max_value": 2.0}, "ddim", "leading", TOL),  # (c)
    ("DPMSolverMultistepScheduler", {"thresholding": True, "sample_max_value": 1.5}, "dpmpp_2m", "uniform", TOL),
    (
        "DPMSolverMultistepScheduler",
        {"thresholding": True, "prediction_type": "v_prediction"},
        "dpmpp_2m",
        "uniform",
        TOL,
    ),
]


@pytest.mark.parametrize("cls,cfg,name,spacing,tol", CASES)
@pytest.mark.parametrize("as_dict", [False, True])
def test_matches_diffusers_loop_on_a_random_unet(unet, x_start, cls, cfg, name, spacing, tol, as_dict):
    sch = getattr(diffusers, cls)(**cfg)
    den = from_diffusers_unet(unet, dict(sch.config) if as_dict else sch)
    expected = ref.run_diffusers(sch, den, x_start, 8)
    ts = get_timesteps(den.schedule, 8, spacing)
    assert ts[:-1].tolist() == sch.timesteps.tolist()
    got = SAMPLERS[name](den, x_start, ts)
    assert (got - expected.to(got.dtype)).abs().max().item() <= tol


def test_the_configuration_changes_the_samples(unet, x_start):
    """The cases above are not vacuous: ignoring clipping or the zero-SNR rescale changes the result."""
    for cfg, spacing, far in (({}, "leading", 1.0), (ZERO_SNR, "trailing", 1e-3)):
        sch = diffusers.DDIMScheduler(**cfg)
        den = from_diffusers_unet(unet, sch)
        expected = ref.run_diffusers(sch, den, x_start, 8)
        plain = Denoiser(den.net, den.schedule, den.prediction_type, module=unet)  # no x0 correction
        if cfg:
            plain = from_diffusers_unet(unet, diffusers.DDIMScheduler(**{**cfg, "rescale_betas_zero_snr": False}))
        got = SAMPLERS["ddim"](plain, x_start, get_timesteps(plain.schedule, 8, spacing))
        assert (got - expected).abs().max().item() > far


def test_adapter_reads_the_corrections():
    opts = diffusers_denoiser_options(diffusers.DDIMScheduler())
    assert opts == {"prediction_type": "epsilon", "x0_correction": ClipX0(1.0), "recompute_eps": False}
    opts = diffusers_denoiser_options(diffusers.DDPMScheduler(thresholding=True, sample_max_value=3.0))
    assert opts["x0_correction"] == DynamicThreshold(0.995, 3.0) and opts["recompute_eps"] is True
    opts = diffusers_denoiser_options({"clip_sample": False, "prediction_type": "sample"})
    assert opts == {"prediction_type": "sample", "x0_correction": None, "recompute_eps": True}
    assert diffusers_denoiser_options(dict(diffusers.DDIMScheduler().config))["recompute_eps"] is False


@pytest.mark.parametrize(
    "entry,value",
    [
        ("variance_type", "learned_range"),
        ("timestep_type", "continuous"),
        ("use_lu_lambdas", True),
        ("use_exponential_sigmas", True),
        ("use_beta_sigmas", True),
        ("interpolation_type", "log_linear"),
        ("lambda_min_clipped", -5.1),
        ("use_flow_sigmas", True),
        ("euler_at_final", True),
        ("prediction_type", "flow_prediction"),
        ("beta_schedule", "sigmoid"),
        ("final_sigmas_type", "middle"),
    ],
)
def test_unsupported_entries_raise_naming_them(unet, entry, value):
    with pytest.raises(ValueError, match=entry):
        from_diffusers_config({entry: value})
    with pytest.raises(ValueError, match=entry):
        from_diffusers_unet(unet, {entry: value})


def test_shipped_defaults_of_other_schedulers_are_accepted():
    for cls in (
        "PNDMScheduler",
        "DDPMScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "UniPCMultistepScheduler",
        "DEISMultistepScheduler",
        "HeunDiscreteScheduler",
        "LMSDiscreteScheduler",
    ):
        sch = getattr(diffusers, cls)()
        assert isinstance(from_diffusers_config(sch), DiscreteSchedule)
        assert isinstance(from_diffusers_config(dict(sch.config)), DiscreteSchedule)
        diffusers_denoiser_options(sch)
    ddpm_cifar = {
        "_class_name": "DDPMScheduler",
        "beta_schedule": "linear",
        "clip_sample": True,
        "variance_type": "fixed_large",
    }
    assert diffusers_denoiser_options(ddpm_cifar)["x0_correction"] == ClipX0(1.0)
    sigma_min = from_diffusers_config(diffusers.DPMSolverMultistepScheduler(final_sigmas_type="sigma_min"))
    assert sigma_min.final_alpha_cumprod == pytest.approx(float(sigma_min.alphas_cumprod[0]))


# ------------------------------------------------------------------------------- zero terminal SNR
def test_zero_snr_schedule_matches_diffusers_and_is_defined_everywhere():
    sch = diffusers.DDIMScheduler(rescale_betas_zero_snr=True)
    ours = from_diffusers_config(dict(sch.config))
    assert ours.zero_terminal_snr and float(ours.alphas_cumprod[-1]) == 0.0
    assert torch.allclose(ours.alphas_cumprod, sch.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)
    assert torch.equal(rescale_zero_terminal_snr(get_schedule("linear").alphas_cumprod), ours.alphas_cumprod)
    t = torch.tensor([998.0, 998.25, 998.5, 999.0], dtype=torch.float64)
    a, s = ours.alpha_sigma(t)
    assert float(a[-1]) == 0.0 and float(s[-1]) == 1.0 and bool((a[1:] < a[:-1]).all())
    assert torch.allclose(a[:3], (1 - torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64)) * a[0])
    assert torch.isinf(ours.ve_sigma(t[-1:])).all() and torch.isinf(ours.log_snr(t[-1:])).all()
    assert torch.allclose(ours.t_from_ve_sigma(ours.ve_sigma(t)), t, atol=1e-9)
    # diffusers' DPM-Solver and Euler stand in 2**-24 for the zero: reproduced as given
    dpm = from_diffusers_config(diffusers.DPMSolverMultistepScheduler(rescale_betas_zero_snr=True))
    assert float(dpm.alphas_cumprod[-1]) == 2.0**-24 and not dpm.zero_terminal_snr
    with pytest.raises(ValueError, match="sigma_max"):
        get_timesteps(ours, 10, "karras")
    assert get_timesteps(ours, 10, "karras", sigma_max=100.0)[0] < 999
    with pytest.raises(ValueError, match="alphas_cumprod"):
        DiscreteSchedule(torch.tensor([0.9, 0.0, 0.0], dtype=torch.float64))


def test_zero_snr_epsilon_prediction_is_a_clear_error():
    sch = from_diffusers_config(diffusers.DDIMScheduler(rescale_betas_zero_snr=True))
    den = Denoiser(lambda x, t, c: 0.1 * x, sch, "epsilon")
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="prediction_type.*alpha = 0"):
        SAMPLERS["ddim"](den, x, get_timesteps(sch, 10, "trailing"))
    with pytest.raises(ValueError, match="prediction_type"):
        den.x0_eps(x, torch.tensor(999.0))
    assert torch.isfinite(SAMPLERS["ddim"](den, x, get_timesteps(sch, 10, "leading"))).all()


@pytest.mark.parametrize("name", ["plms", "pndm", "heun"])
def test_zero_snr_samplers_moving_along_eps_refuse_alpha_zero(name):
    sch = from_diffusers_config(diffusers.DDIMScheduler(rescale_betas_zero_snr=True))
    den = Denoiser(lambda x, t, c: 0.1 * x, sch, "v_prediction")
    with pytest.raises(ValueError, match="timesteps.*alpha = 0"):
        SAMPLERS[name](den, torch.randn(2, 3), get_timesteps(sch, 10, "trailing"))


def test_zero_snr_v_prediction_is_exact_for_ddim_euler_and_dpm():
    """At alpha = 0 a v-model gives x0 = -v, eps = x_t: DDIM, Euler (along x0) and DPM-Solver++'s first
    (DDIM) step coincide, all finite."""
    sch = from_diffusers_config(diffusers.DDIMScheduler(rescale_betas_zero_snr=True))
    den = Denoiser(lambda x, t, c: torch.tanh(x) * (t[:, None] / 1000), sch, "v_prediction")
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x0, eps = den.x0_eps(x, torch.tensor(999.0))
    assert torch.allclose(x0, -torch.tanh(x) * 0.999, atol=0) and torch.equal(eps, x)
    ts = get_timesteps(sch, 10, "trailing")
    out = {n: SAMPLERS[n](den, x, ts) for n in ("ddim", "euler", "dpmpp_2m")}
    assert all(torch.isfinite(v).all() for v in out.values())
    assert torch.allclose(out["ddim"], out["euler"], atol=1e-12)


# ------------------------------------------------------------------------------- x0 corrections
def test_threshold_and_clip_match_diffusers_formulas():
    x0 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    sch = diffusers.DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.7)
    assert torch.equal(DynamicThreshold(0.9, 1.7)(x0), sch._threshold_sample(x0))
    assert torch.equal(ClipX0(0.5)(x0), x0.clamp(-0.5, 0.5))
    for bad in (lambda: ClipX0(0.0), lambda: DynamicThreshold(1.5), lambda: DynamicThreshold(0.9, 0.5)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError, match="x0_correction"):
        Denoiser(lambda x, t, c: x, get_schedule("linear"), x0_correction=1.0)


def test_correction_pair_is_consistent_or_keeps_the_network_eps():
    sch = get_schedule("linear")
    net = lambda x, t, c: 3 * x  # noqa: E731  (an eps-model whose x0 needs clipping)
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor(500.0, dtype=torch.float64)
    a, s = sch.alpha_sigma(t)
    x0, eps = Denoiser(net, sch, x0_correction=ClipX0(1.0)).x0_eps(x, t)
    assert float(x0.abs().max()) <= 1 and torch.allclose(a * x0 + s * eps, x, atol=1e-12)
    x0k, epsk = Denoiser(net, sch, x0_correction=ClipX0(1.0), recompute_eps=False).x0_eps(x, t)
    assert torch.equal(x0k, x0) and torch.equal(epsk, 3 * x)


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"flow_euler", "ddpm"}))
def test_every_sampler_follows_a_consistent_correction(name):
    """With recompute_eps (the default) the clipped x0 reaches samplers that move along eps or x0 alike:
    a network whose x0 is always outside [-1, 1] ends exactly on the clipping bound."""
    sch = get_schedule("linear")
    den = Denoiser(lambda x, t, c: x - 5.0 * torch.ones_like(x), sch, "sample", x0_correction=ClipX0(1.0))
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out = SAMPLERS[name](den, x, get_timesteps(sch, 8, "leading"))
    assert float(out.max()) <= 1.0 + 1e-9


@pytest.mark.parametrize("name", ["plms", "pndm", "heun"])
def test_samplers_moving_along_eps_refuse_a_correction_that_keeps_the_network_eps(name):
    den = Denoiser(lambda x, t, c: x, get_schedule("linear"), x0_correction=ClipX0(1.0), recompute_eps=False)
    with pytest.raises(ValueError, match="denoiser.*recompute_eps"):
        SAMPLERS[name](den, torch.randn(2, 3), get_timesteps(den.schedule, 8, "leading"))
