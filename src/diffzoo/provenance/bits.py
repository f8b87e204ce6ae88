"""Bit strings, bit accuracy, the exact binomial detection threshold, TPR at a fixed FPR and attribution.

A watermark decoder returns bits; a detector flags an image as watermarked when at least ``k`` of the
``n`` decoded bits match the message. For an unwatermarked image the matches are (under the usual
independence assumption) ``Binomial(n, 1/2)``, so the exact threshold for a false-positive rate ``fpr`` is
the smallest ``k`` with ``P[Bin(n, 1/2) >= k] <= fpr`` (Fernandez et al., *The Stable Signature*, arXiv
2303.15435, Sec. 3; the detection rule of the watermark-breaking papers). :func:`tpr_at_fpr` also gives
the empirical version from measured negatives (the threshold at the ``1 - fpr`` quantile of their scores).
Attribution among users picks the fingerprint of smallest Hamming distance (WOUAF, arXiv 2306.04744).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from diffzoo.core.errors import check_range, check_tensor

Tensor = torch.Tensor


def parse_bits(text: str, arg: str = "bits") -> Tensor:
    """``"0110..."`` -> float tensor of 0/1 values (one-line ``ValueError`` naming ``arg`` otherwise)."""
    if not isinstance(text, str):
        raise TypeError(f"{arg}: expected a string of 0s and 1s, got {type(text).__name__}")
    if not text or set(text) - {"0", "1"}:
        raise ValueError(f"{arg}: expected a non-empty string of 0s and 1s such as '0110', got {text!r}")
    return torch.tensor([float(c) for c in text])


def format_bits(bits: Tensor) -> str:
    return "".join("1" if float(b) > 0.5 else "0" for b in bits.flatten())


def random_bits(n: int, bits: int, generator: torch.Generator | None = None) -> Tensor:
    """``(n, bits)`` uniform random 0/1 floats."""
    return torch.randint(0, 2, (int(n), int(bits)), generator=generator).float()


def check_bits(bits: Tensor, arg: str = "bits") -> Tensor:
    """A ``(B, n)`` tensor of 0/1 values."""
    check_tensor(bits, arg, ndim=2)
    if bits.numel() and not bool(((bits == 0) | (bits == 1)).all()):
        raise ValueError(f"{arg}: expected only 0/1 values")
    return bits.float()


def bit_accuracy(decoded: Tensor, message: Tensor) -> Tensor:
    """Per-image fraction of decoded bits equal to the message (``(B, n)`` each; message may be ``(1, n)``)."""
    decoded, message = check_bits(decoded, "decoded"), check_bits(message, "message")
    if decoded.shape[-1] != message.shape[-1]:
        raise ValueError(f"message: {message.shape[-1]} bits, but {decoded.shape[-1]} were decoded")
    return (decoded == message).float().mean(-1)


def binomial_tail(n: int, k: int) -> float:
    """``P[Bin(n, 1/2) >= k]`` exactly."""
    return sum(math.comb(n, j) for j in range(max(k, 0), n + 1)) / 2.0**n


def binomial_threshold(n: int, fpr: float = 0.01) -> int:
    """Smallest number of matching bits ``k`` with ``P[Bin(n, 1/2) >= k] <= fpr`` (``n + 1``: never)."""
    check_range(fpr, "fpr", 0.0, 1.0)
    for k in range(n + 1):
        if binomial_tail(n, k) <= fpr:
            return k
    return n + 1


def tpr_at_fpr(
    positives: Tensor, negatives: Tensor | None = None, *, bits: int | None = None, fpr: float = 0.01
) -> dict:
    """TPR at a fixed FPR of a bit-matching detector.

    ``positives``/``negatives``: per-image bit accuracies. With ``negatives`` (at least ``1/fpr`` of them),
    the threshold is the smallest score that keeps the empirical FPR <= ``fpr``; without them, ``bits`` is
    required and the exact binomial threshold is used. Returns ``{"tpr", "threshold", "fpr", "rule"}``.
    """
    pos = positives.double().flatten()
    check_range(fpr, "fpr", 0.0, 1.0)
    if negatives is None:
        if bits is None:
            raise ValueError("bits: give the message length when no negatives are given (binomial threshold)")
        k = binomial_threshold(int(bits), fpr)
        thr = k / bits
        return {
            "tpr": float((pos * bits >= k - 1e-9).double().mean()),
            "threshold": thr,
            "fpr": binomial_tail(bits, k),
            "rule": "binomial",
        }
    neg = negatives.double().flatten()
    if neg.numel() < math.ceil(1 / max(fpr, 1e-12)) - 1e-9 and neg.numel() < 100:
        raise ValueError(f"negatives: need at least {math.ceil(1 / fpr)} negatives for FPR {fpr}, got {neg.numel()}")
    cands = torch.unique(torch.cat([neg, pos, torch.tensor([2.0], dtype=torch.float64)]))
    for thr in cands.tolist():  # ascending: the smallest threshold meeting the FPR
        if float((neg >= thr).double().mean()) <= fpr:
            return {
                "tpr": float((pos >= thr).double().mean()),
                "threshold": thr,
                "fpr": float((neg >= thr).double().mean()),
                "rule": "empirical",
            }
    raise AssertionError("unreachable")


def attribute(decoded: Tensor, users: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest user by Hamming distance: ``(index (B,), distance (B,))`` for ``decoded (B, n)``, ``users (U, n)``."""
    decoded, users = check_bits(decoded, "decoded"), check_bits(users, "users")
    if decoded.shape[-1] != users.shape[-1]:
        raise ValueError(f"users: fingerprints have {users.shape[-1]} bits, decoded ones {decoded.shape[-1]}")
    dist = (decoded[:, None, :] != users[None, :, :]).sum(-1)
    d, idx = dist.min(-1)
    return idx, d


def attribution_threshold(n: int, users: int, fpr: float = 0.01) -> int:
    """Largest Hamming distance ``d`` accepted as a match, so that an unrelated image matches *any* of
    ``users`` fingerprints with probability <= ``fpr`` (union bound over users of the binomial tail)."""
    best = -1
    for d in range(n + 1):
        if users * binomial_tail(n, n - d) <= fpr:
            best = d
    return best


def read_users(path: str | os.PathLike) -> tuple[list[str], Tensor]:
    """A user registry: a text file with one ``NAME BITS`` (or just ``BITS``, named by its line number) per
    line; ``#`` comments and blank lines are skipped. Returns ``(names, fingerprints (U, n))``. A missing
    file, a malformed line, duplicate names or fingerprints of different lengths: one-line ``ValueError``
    naming ``users``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"users: cannot read the user registry {str(path)!r} ({type(e).__name__})") from None
    names, rows = [], []
    for k, line in enumerate(text.splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) > 2:
            raise ValueError(f"users: line {k} of {str(path)!r} must be 'NAME BITS' or 'BITS', got {line.strip()!r}")
        name, bits = (parts[0], parts[1]) if len(parts) == 2 else (str(k), parts[0])
        rows.append(parse_bits(bits, f"users (line {k})"))
        names.append(name)
    if not rows:
        raise ValueError(f"users: {str(path)!r} lists no user")
    if len({r.numel() for r in rows}) > 1:
        raise ValueError(
            f"users: fingerprints in {str(path)!r} have different lengths {sorted({r.numel() for r in rows})}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"users: duplicate user names in {str(path)!r}")
    return names, torch.stack(rows)


def user_fingerprint(spec: str, users: str | os.PathLike | None = None) -> Tensor:
    """A fingerprint given as a 0/1 string, or -- with a registry ``users`` (:func:`read_users`) -- as a user
    name; an unknown user is a one-line ``ValueError`` naming ``fingerprint``."""
    if users is None:
        return parse_bits(spec, "fingerprint")
    names, fps = read_users(users)
    if spec in names:
        return fps[names.index(spec)]
    if set(spec) <= {"0", "1"} and spec:
        return parse_bits(spec, "fingerprint")
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise ValueError(f"fingerprint: unknown user {spec!r}; {str(users)!r} lists {len(names)} users ({shown})")
