"""The 8x8 handwritten digits of scikit-learn (UCI optical digits; 1797 images, 10 classes).

Two views of the same pixels (BRIEFS part B, notation):

* continuous: ``x = v / 8 - 1`` in ``[-1, 1]``, shape ``(N, 1, 8, 8)`` float32 (continuous diffusion);
* discrete: the integer levels ``v in {0, ..., 16}``, shape ``(N, 64)`` int64 (masked diffusion).

The train/test split is fixed: 300 test images stratified by class with ``random_state=0``
(1497 train). The data ship with scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from diffzoo.core.errors import check_choice, check_tensor

NUM_LEVELS = 17  # pixel values 0..16
NUM_CLASSES = 10
TEST_SIZE = 300
SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class DigitsSplit:
    """One split: continuous images, discrete levels and labels (rows aligned)."""

    images: torch.Tensor  # (N, 1, 8, 8) float32 in [-1, 1]
    levels: torch.Tensor  # (N, 64) int64 in 0..16
    labels: torch.Tensor  # (N,) int64 in 0..9

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random (image, label) pairs drawn with replacement using ``generator``."""
        idx = torch.randint(len(self), (n,), generator=generator)
        return self.images[idx], self.labels[idx]


@lru_cache(maxsize=1)
def _split_indices() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    tr, te = train_test_split(idx, test_size=TEST_SIZE, stratify=d.target, random_state=0)
    return d.data.astype(np.int64), d.target.astype(np.int64), np.sort(tr), np.sort(te)


def load(split: str = "train") -> DigitsSplit:
    """The ``train`` (1497), ``test`` (300) or ``all`` (1797) split, deterministically."""
    check_choice(split, SPLITS, "split")
    data, target, tr, te = _split_indices()
    idx = {"train": tr, "test": te, "all": np.arange(len(target))}[split]
    levels = torch.from_numpy(data[idx].copy())
    return DigitsSplit(levels_to_images(levels), levels, torch.from_numpy(target[idx].copy()))


def levels_to_images(levels: torch.Tensor) -> torch.Tensor:
    """``(N, 64)`` integer levels -> ``(N, 1, 8, 8)`` images ``v / 8 - 1``."""
    check_tensor(levels, "levels", ndim=2, floating=False, shape=(None, 64))
    return (levels.to(torch.float32) / 8.0 - 1.0).reshape(-1, 1, 8, 8)


def images_to_levels(images: torch.Tensor) -> torch.Tensor:
    """``(N, 1, 8, 8)`` images in ``[-1, 1]`` -> nearest integer levels ``(N, 64)`` in 0..16."""
    check_tensor(images, "images", ndim=4, floating=True, shape=(None, 1, 8, 8))
    return ((images.reshape(-1, 64) + 1.0) * 8.0).round().clamp(0, NUM_LEVELS - 1).to(torch.int64)
