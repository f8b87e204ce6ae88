"""Masked (absorbing-state) discrete diffusion: loss, samplers (ancestral, first-hitting, confidence),
float64 categorical sampling, learnable sampler distillation (LSD/LSD+ as the paper defines them in
:mod:`diffzoo.discrete.lsd_paper`; the earlier trajectory-MMD variant in :mod:`diffzoo.discrete.lsd`) and APS
posterior sampling.

Papers: Zheng et al. arXiv 2409.02908 (time-agnostic masked models, FHS, float precision); LSD arXiv
2509.19962; APS arXiv 2510.02291 (no code, equations inferred from the authors' prose: :mod:`diffzoo.discrete.aps`
has APS-I/II as described, "APS-style", and the earlier "APS-like" reconstruction).
"""

from diffzoo.discrete.aps import aps_sample, aps_style_sample
from diffzoo.discrete.categorical import gumbel_softmax_st, sample_categorical
from diffzoo.discrete.masked import (
    check_tokens,
    mask_tokens,
    masked_diffusion_loss,
    negative_elbo,
    predictive_probs,
)
from diffzoo.discrete.oracle import JointOracle
from diffzoo.discrete.samplers import (
    SAMPLERS,
    CallCounter,
    ancestral_sample,
    confidence_sample,
    first_hitting_sample,
    sample_digits,
)
from diffzoo.discrete.schedule import MaskSchedule, get_mask_schedule

__all__ = [
    "SAMPLERS",
    "CallCounter",
    "JointOracle",
    "MaskSchedule",
    "ancestral_sample",
    "aps_sample",
    "aps_style_sample",
    "check_tokens",
    "confidence_sample",
    "first_hitting_sample",
    "get_mask_schedule",
    "gumbel_softmax_st",
    "mask_tokens",
    "masked_diffusion_loss",
    "negative_elbo",
    "predictive_probs",
    "sample_categorical",
    "sample_digits",
]
