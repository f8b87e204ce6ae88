"""Metrics: sample distances (SWD, MMD^2, Frechet, NLL), image fidelity (PSNR, SSIM), digits FD/accuracy."""

from diffzoo.metrics.digits import classify, digit_features, digits_accuracy, digits_fd
from diffzoo.metrics.distances import frechet_distance, gaussian_stats, mmd, nll, sliced_wasserstein
from diffzoo.metrics.image import psnr, ssim

__all__ = [
    "classify",
    "digit_features",
    "digits_accuracy",
    "digits_fd",
    "frechet_distance",
    "gaussian_stats",
    "mmd",
    "nll",
    "psnr",
    "sliced_wasserstein",
    "ssim",
]
