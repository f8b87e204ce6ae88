"""diffzoo core: schedules, prediction conversions, the Denoiser interface, guidance, randomness."""

from diffzoo.core.denoiser import (
                                           Denoiser,
                                           PreparedTimes,
                                           diffusers_denoiser_options,
                                           from_callable,
                                           from_diffusers_unet,
)
from diffzoo.core.guidance import cfg_combine, cfg_denoiser
from diffzoo.core.parameterization import (
                                           PREDICTION_TYPES,
                                           ClipX0,
                                           DynamicThreshold,
                                           canonical_prediction_type,
                                           convert,
                                           ddim_step,
                                           ddim_transfer_coefficients,
                                           from_x0_eps,
                                           to_x0_eps,
                                           x0_eps_coefficients,
)
from diffzoo.core.random import generators_from_seeds, rand, randn, randn_like
from diffzoo.core.schedules import (
                                           SCHEDULES,
                                           ContinuousSchedule,
                                           DiscreteSchedule,
                                           NoiseSchedule,
                                           cosine,
                                           edm,
                                           from_diffusers_config,
                                           get_schedule,
                                           linear,
                                           rectified_flow,
                                           rescale_zero_terminal_snr,
                                           scaled_linear,
                                           ve,
                                           vp_cosine,
                                           vp_linear,
)

__all__ = [
    "Denoiser", "PreparedTimes", "diffusers_denoiser_options", "from_callable", "from_diffusers_unet", "cfg_combine",
    "cfg_denoiser", "PREDICTION_TYPES", "ClipX0", "DynamicThreshold", "canonical_prediction_type", "convert",
    "ddim_step", "ddim_transfer_coefficients", "from_x0_eps", "to_x0_eps", "x0_eps_coefficients",
    "generators_from_seeds",
    "rand", "randn", "randn_like", "SCHEDULES", "ContinuousSchedule", "DiscreteSchedule", "NoiseSchedule",
    "cosine", "edm", "from_diffusers_config", "get_schedule", "linear", "rectified_flow",
    "rescale_zero_terminal_snr", "scaled_linear", "ve",
    "vp_cosine", "vp_linear",
]
