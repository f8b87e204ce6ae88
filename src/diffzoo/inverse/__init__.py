"""Inverse problems with continuous diffusion: measurement operators, DDNM/DDNM+, DPS and IDM.

* :mod:`operators` -- ``A``, ``A^T``, ``A^+`` and the noise model for inpainting, super-resolution,
  blur, colourisation, compressed sensing and a nonlinear (saturating) sensor;
* :mod:`ddnm`, :mod:`dps` -- training-free posterior samplers as corrected denoisers run by
  ``diffzoo.sampling.ddim`` (:mod:`posterior` has the one-call entry point);
* :mod:`idm` -- Invertible Diffusion Models for compressed sensing: a few-step sampling chain fine-tuned
  end to end with reversible (memory-free) back-propagation.
"""

from diffzoo.inverse.ddnm import DDNMDenoiser, ddnm_plus_coefficients
from diffzoo.inverse.dps import DPSDenoiser, measurement_grad
from diffzoo.inverse.operators import (
    OPERATORS,
    AveragePoolSR,
    Blur,
    Colorization,
    CompressedSensing,
    Inpainting,
    LinearOperator,
    MatrixOperator,
    Operator,
    Saturation,
    box_inpainting,
    gaussian_blur,
    get_operator,
    motion_blur,
    random_inpainting,
    zero_operator,
)
from diffzoo.inverse.posterior import METHODS, measurement_error, pinv_estimate, posterior_sample

__all__ = [
    "METHODS",
    "OPERATORS",
    "AveragePoolSR",
    "Blur",
    "Colorization",
    "CompressedSensing",
    "DDNMDenoiser",
    "DPSDenoiser",
    "Inpainting",
    "LinearOperator",
    "MatrixOperator",
    "Operator",
    "Saturation",
    "box_inpainting",
    "ddnm_plus_coefficients",
    "gaussian_blur",
    "get_operator",
    "measurement_error",
    "measurement_grad",
    "motion_blur",
    "pinv_estimate",
    "posterior_sample",
    "random_inpainting",
    "zero_operator",
]
