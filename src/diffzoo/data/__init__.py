"""Datasets with ground truth: toy low-dimensional mixtures (:mod:`.toy2d`), 8x8 digits (:mod:`.digits`)."""

from diffzoo.data import digits, toy2d

__all__ = ["digits", "toy2d"]
