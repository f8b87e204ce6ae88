"""Forensic detection metrics and patch tools shared by every detector of :mod:`diffzoo.forensics`.

* :func:`detection_metrics`: ROC AUC, average precision, accuracy at a threshold and the true-positive
  rate at 1% false-positive rate (reported only with at least 100 negatives), from scikit-learn.
* :func:`random_patches` / :func:`top_m_mean`: the patch protocol of the laundering detector (Mandelli
  et al., *When Synthetic Traces Hide Real Content: Analysis of Stable Diffusion Image Laundering*,
  arXiv 2407.10736): many random crops per image, the image score is the mean of its top-``M`` patch
  logits (``M = all`` is the plain mean).
* :func:`filter_by_score` / :func:`removal_stats`: keep the lowest-scoring fraction of samples and
  count what was removed (the hallucination filter of Aithal et al., arXiv 2406.09358).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from diffzoo.core.errors import check_finite, check_int, check_range, check_tensor

Tensor = torch.Tensor

#: The false-positive rate of :func:`detection_metrics`' ``tpr_at_1fpr`` and the negatives it needs.
LOW_FPR = 0.01
MIN_NEGATIVES = 100


def _as_1d(x: Tensor | np.ndarray | Sequence[float], arg: str) -> np.ndarray:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{arg}: expected a non-empty 1-D array, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        check_finite(t, arg)
    return t.detach().cpu().double().numpy()


def detection_metrics(scores: Tensor | Sequence[float], labels: Tensor | Sequence[int], threshold: float = 0.5) -> dict:
    """Metrics of a binary detector whose ``scores`` are larger for the positive class (label 1).

    Returns ``auc`` (ROC AUC), ``ap`` (average precision), ``acc`` (accuracy of ``score > threshold``;
    use 0.5 for probabilities, 0 for logits), ``tpr_at_1fpr`` (true-positive rate at 1% false positives,
    ``nan`` with fewer than 100 negatives, where it is not measurable), ``n_pos`` and ``n_neg``.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s = _as_1d(scores, "scores")
    y = _as_1d(labels, "labels")
    if s.shape != y.shape:
        raise ValueError(f"labels: expected {s.shape[0]} labels (one per score), got {y.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: expected only 0 (negative) and 1 (positive)")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels: need both classes, got {n_pos} positives and {n_neg} negatives")
    acc = float(((s > threshold) == (y == 1)).mean())
    tpr = math.nan
    if n_neg >= MIN_NEGATIVES:
        fpr_c, tpr_c, _ = roc_curve(y, s)
        tpr = float(np.interp(LOW_FPR, fpr_c, tpr_c))
    return {
        "auc": float(roc_auc_score(y, s)),
        "ap": float(average_precision_score(y, s)),
        "acc": acc,
        "tpr_at_1fpr": tpr,
        "n_pos": n_pos,
        "n_neg": n_neg,
    }


def roc_pr_curves(scores: Tensor | Sequence[float], labels: Tensor | Sequence[int]) -> dict[str, np.ndarray]:
    """ROC (``fpr``, ``tpr``) and precision-recall (``precision``, ``recall``) curves for plotting."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    s, y = _as_1d(scores, "scores"), _as_1d(labels, "labels")
    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = precision_recall_curve(y, s)
    return {"fpr": fpr, "tpr": tpr, "precision": prec, "recall": rec}


def random_patches(images: Tensor, num: int, size: int, generator: torch.Generator | None = None) -> Tensor:
    """``num`` random ``size x size`` crops of each image: ``(B, C, H, W) -> (B, num, C, size, size)``
    (positions drawn from ``generator``; the same positions for every image of the batch)."""
    check_tensor(images, "images", ndim=4, floating=True)
    num = check_int(num, "num", 1)
    h, w = images.shape[-2:]
    size = check_int(size, "size", 1)
    if size > min(h, w):
        raise ValueError(f"size: patch size {size} exceeds the image size {h}x{w}")
    ys = torch.randint(h - size + 1, (num,), generator=generator)
    xs = torch.randint(w - size + 1, (num,), generator=generator)
    return torch.stack([images[:, :, y : y + size, x : x + size] for y, x in zip(ys.tolist(), xs.tolist())], 1)


def top_m_mean(patch_scores: Tensor, m: int | None = None) -> Tensor:
    """Mean of the ``m`` largest scores of each row of ``patch_scores`` ``(B, P)`` (``None``: all ``P``);
    monotone in every patch score and invariant to permuting the patches."""
    check_tensor(patch_scores, "patch_scores", ndim=2, floating=True)
    p = patch_scores.shape[1]
    m = p if m is None else check_int(m, "m", 1)
    if m > p:
        raise ValueError(f"m: at most the number of patches ({p}), got {m}")
    return patch_scores.topk(m, dim=1).values.mean(1)


def filter_by_score(scores: Tensor, keep: float) -> Tensor:
    """Boolean mask keeping the ``keep`` fraction of samples with the *lowest* scores (ties by index)."""
    check_tensor(scores, "scores", ndim=1, floating=True)
    check_finite(scores, "scores")
    check_range(keep, "keep", 0.0, 1.0)
    n = int(round(keep * scores.numel()))
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    mask[torch.argsort(scores, stable=True)[:n]] = True
    return mask


def removal_stats(scores: Tensor, bad: Tensor, threshold: float) -> dict[str, float]:
    """Samples with ``score > threshold`` are removed: the fraction of ``bad`` ones removed and of good
    ones kept (the paper's operating point reports both)."""
    check_tensor(scores, "scores", ndim=1, floating=True)
    check_tensor(bad, "bad", ndim=1, shape=(scores.shape[0],))
    bad = bad.bool()
    removed = scores > threshold
    nb, ng = int(bad.sum()), int((~bad).sum())
    return {
        "bad_removed": float((removed & bad).sum()) / nb if nb else math.nan,
        "good_kept": float((~removed & ~bad).sum()) / ng if ng else math.nan,
        "n_bad": nb,
        "n_good": ng,
        "threshold": float(threshold),
    }


def threshold_for_kept(scores: Tensor, good: Tensor, kept: float) -> float:
    """The threshold that keeps (``score <= threshold``) a fraction ``kept`` of the ``good`` samples."""
    check_range(kept, "kept", 0.0, 1.0, lo_open=True)
    g = scores[good.bool()].double()
    if g.numel() == 0:
        raise ValueError("good: no good samples")
    return float(torch.quantile(g, kept))
