"""Digit metrics judged by the shipped held-out classifier (zoo model ``digits-classifier``).

* ``digits_accuracy(samples, labels)``: fraction of generated digits the classifier assigns to the
  class they were conditioned on (conditional accuracy).
* ``digits_fd(samples)`` ("FD-digits"): Frechet distance (Heusel et al. 2017) between the classifier's
  penultimate features of the samples and of the 300-image digits test split.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from diffzoo import zoo
from diffzoo.core.errors import check_tensor
from diffzoo.data import digits
from diffzoo.metrics.distances import frechet_distance, gaussian_stats

Tensor = torch.Tensor
CLASSIFIER = "digits-classifier"


@lru_cache(maxsize=1)
def digit_classifier() -> torch.nn.Module:
    """The shipped held-out digit classifier (eval mode, CPU)."""

    return zoo.load(CLASSIFIER).model


def _check(samples: Tensor) -> Tensor:
    check_tensor(samples, "samples", ndim=4, floating=True, shape=(None, 1, 8, 8))
    return samples.to(torch.float32).clamp(-1, 1).cpu()


@torch.no_grad()
def classify(samples: Tensor, classifier: torch.nn.Module | None = None) -> Tensor:
    """Predicted classes of ``(B, 1, 8, 8)`` images in ``[-1, 1]``."""
    clf = classifier or digit_classifier()
    return clf(_check(samples)).argmax(-1)


@torch.no_grad()
def digits_accuracy(samples: Tensor, labels: Tensor, classifier: torch.nn.Module | None = None) -> float:
    """Fraction of ``samples`` classified as their conditioning ``labels``."""
    check_tensor(labels, "labels", ndim=1, floating=False)
    if labels.shape[0] != samples.shape[0]:
        raise ValueError(f"labels: expected {samples.shape[0]} labels, got {labels.shape[0]}")
    return float((classify(samples, classifier) == labels.cpu()).float().mean())


@torch.no_grad()
def digit_features(samples: Tensor, classifier: torch.nn.Module | None = None) -> Tensor:
    clf = classifier or digit_classifier()
    return clf.features(_check(samples))


@torch.no_grad()
def _test_stats(classifier: torch.nn.Module | None) -> tuple[Tensor, Tensor]:

    return gaussian_stats(digit_features(digits.load("test").images, classifier))


@torch.no_grad()
def digits_fd(samples: Tensor, classifier: torch.nn.Module | None = None) -> float:
    """FD-digits: Frechet distance of the samples' classifier features to the test split's."""
    return float(frechet_distance(digit_features(samples, classifier), _test_stats(classifier)))
