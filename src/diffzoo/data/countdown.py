"""The procedural *countdown* task (Zhao et al., *Informed correctors for discrete diffusion models*,
arXiv 2407.21243; used by LSD, arXiv 2509.19962, Fig. 2b): sequences of ``L = 256`` tokens over the
values ``0..31`` in which every token that follows a non-zero token is that token minus one.

The rule, as we define it (the two papers state it in one sentence; the generator below is our reading):

* ``x_0 ~ U{0..V-1}``;
* for ``i >= 1``: if ``x_{i-1} > 0`` then ``x_i = x_{i-1} - 1`` (the count goes on); if ``x_{i-1} = 0``
  then ``x_i ~ U{0..V-1}`` (a new count starts, possibly at ``0`` again).

So a sequence is a concatenation of runs ``s, s-1, ..., 0`` cut at length ``L``; only the run starts are
random. The exact error metric: position ``i >= 1`` is a *violation* iff ``x_{i-1} > 0`` and
``x_i != x_{i-1} - 1``. :func:`error_rate` is the fraction of the ``L - 1`` transitions that are
violations (0 for any valid sequence, ``~0.94`` for i.i.d. uniform tokens), :func:`sequence_error_rate`
the fraction of sequences with at least one violation.
"""

from __future__ import annotations

import torch

from diffzoo.core.errors import check_tensor

SEQ_LEN = 256
NUM_VALUES = 32


def generate(
    n: int, seq_len: int = SEQ_LEN, num_values: int = NUM_VALUES, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` valid countdown sequences, int64 ``(n, seq_len)`` in ``0..num_values-1``."""
    if n < 1:
        raise ValueError(f"n: expected a positive number of sequences, got {n}")
    if seq_len < 1:
        raise ValueError(f"seq_len: expected >= 1, got {seq_len}")
    if num_values < 2:
        raise ValueError(f"num_values: expected >= 2, got {num_values}")
    starts = torch.randint(num_values, (n, seq_len), generator=generator)
    x = torch.empty(n, seq_len, dtype=torch.long)
    x[:, 0] = starts[:, 0]
    for i in range(1, seq_len):
        prev = x[:, i - 1]
        x[:, i] = torch.where(prev > 0, prev - 1, starts[:, i])
    return x


def load(split: str = "train", n: int = 20000) -> torch.Tensor:
    """A fixed split: ``"train"`` (seed 0) or ``"test"`` (seed 1), ``n`` sequences of length 256."""
    seeds = {"train": 0, "test": 1}
    if split not in seeds:
        raise ValueError(f"split: expected one of {sorted(seeds)}, got {split!r}")
    return generate(n, generator=torch.Generator().manual_seed(seeds[split]))


def violations(x: torch.Tensor) -> torch.Tensor:
    """Bool ``(B, L-1)``: transition ``i-1 -> i`` breaks the rule (``x_{i-1} > 0`` and ``x_i != x_{i-1} - 1``)."""
    check_tensor(x, "x", ndim=2, floating=False)
    if x.shape[1] < 2:
        raise ValueError(f"x: expected sequences of length >= 2, got {x.shape[1]}")
    prev, cur = x[:, :-1], x[:, 1:]
    return (prev > 0) & (cur != prev - 1)


def error_rate(x: torch.Tensor) -> float:
    """Fraction of the ``B (L-1)`` transitions that are violations (exact; 0 for valid data)."""
    return float(violations(x).double().mean())


def sequence_error_rate(x: torch.Tensor) -> float:
    """Fraction of sequences with at least one violation."""
    return float(violations(x).any(1).double().mean())
