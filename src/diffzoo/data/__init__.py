"""Datasets with ground truth: toy low-dimensional mixtures (:mod:`.toy2d`), 8x8 digits (:mod:`.digits`),
the procedural countdown task (:mod:`.countdown`)."""

from diffzoo.data import countdown, digits, toy2d

__all__ = ["countdown", "digits", "toy2d"]
