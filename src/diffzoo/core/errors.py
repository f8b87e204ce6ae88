"""Input validation shared by every public function: errors name the argument and what was expected."""

from __future__ import annotations

import operator
from typing import Any, Iterable, Sequence

import torch


class NonFiniteError(ValueError, FloatingPointError):
    """NaN or inf where finite values are required: a ``ValueError`` (bad input, naming the argument) that
    is also a ``FloatingPointError`` (what :func:`check_finite` raised before, and what callers catch)."""


def check_choice(value: Any, choices: Iterable[str], arg: str) -> None:
    """Raise ``ValueError`` naming ``arg`` if ``value`` is not one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{arg}: unknown value {value!r}; expected one of {sorted(choices)}")


def check_tensor(
    x: Any,
    arg: str,
    ndim: int | Sequence[int] | None = None,
    floating: bool | None = None,
    shape: Sequence[int | None] | None = None,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with the given rank / dtype kind / shape (``None`` = any size)."""
    if not torch.is_tensor(x):
        raise TypeError(f"{arg}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in dims:
            raise ValueError(f"{arg}: expected {' or '.join(map(str, dims))} dimensions, got shape {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{arg}: expected a floating-point tensor, got dtype {x.dtype}")
    if floating is False and x.is_floating_point():
        raise TypeError(f"{arg}: expected an integer tensor, got dtype {x.dtype}")
    if shape is not None:
        if len(shape) != x.ndim or any(s is not None and s != d for s, d in zip(shape, x.shape)):
            want = tuple("*" if s is None else s for s in shape)
            raise ValueError(f"{arg}: expected shape {want}, got {tuple(x.shape)}")
    return x


def check_finite(x: torch.Tensor, arg: str) -> torch.Tensor:
    """Raise :class:`NonFiniteError` (a ``ValueError`` and a ``FloatingPointError``) naming ``arg`` if
    ``x`` holds NaN or inf."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{arg}: contains NaN or inf")
    return x


def check_batch(x: torch.Tensor, arg: str) -> torch.Tensor:
    """Raise ``ValueError`` naming ``arg`` unless ``x`` is a non-empty batch ``(B, ...)``, ``B >= 1``."""
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{arg}: expected a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    return x


def check_int(value: Any, arg: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (``int``, NumPy integer, 0-d integer tensor; not ``bool``) in ``[lo, hi]``, as ``int``.

    ``TypeError`` naming ``arg`` for a non-integer (``2.5``, ``"2"``), ``ValueError`` when out of range.
    """
    if isinstance(value, bool):
        raise TypeError(f"{arg}: expected an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{arg}: expected an integer, got {value!r}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(
            f"{arg}: expected an integer in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}], got {v}"
        )
    return v


def check_range(
    value: float,
    arg: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Check ``lo <= value <= hi`` (open ends where asked); ``TypeError`` naming ``arg`` for a non-number."""
    try:
        v = float(value)
    except (TypeError, ValueError, RuntimeError):  # None, "x", objects, tensors with several elements
        raise TypeError(f"{arg}: expected a number, got {value!r:.40}") from None
    bad = v != v
    if lo is not None:
        bad |= v <= lo if lo_open else v < lo
    if hi is not None:
        bad |= v >= hi if hi_open else v > hi
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ValueError(
            f"{arg}: expected a value in {left}{lo if lo is not None else '-inf'}, "
            f"{hi if hi is not None else 'inf'}{right}, got {value}"
        )
    return v
