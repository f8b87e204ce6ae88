"""Calibration sets for diffusion-model PTQ: the network's own inputs along the full-precision sampler.

:func:`record_calls` runs any sampling function and records every call of the network (its positional
and keyword inputs, exactly as the network sees them: ``x_t``, the network time ``t``, the condition; a
classifier-free-guidance batch is recorded as it is run). :class:`CalibSet` holds the rows, and three
selections are offered (the papers' calibration strategies):

* :func:`timestep_aware` (Q-Diffusion, arXiv 2302.04304, Sec. 3.2): the rows at ``num_steps`` evenly
  spaced steps of the sampler (the paper: 20 of DDIM's 100 steps x 256 samples).
* :func:`ndtc` (PTQ4DM, arXiv 2211.15736, "normally distributed time-step calibration"): per row a time
  ``t* = clamp(N(0.4, 0.4), 0, 1) * t_max``; the row is the state the sampler reached at the step whose
  time is nearest ``t*``, **paired with that step's own time** (the paper's intent). The released code
  (``42Shawn/PTQ4DM``) counts its loop index from the noise end while passing ``t`` as the label, so its
  states and time labels do not match; we deliberately do not reproduce that.
* :func:`uniform`: a uniformly random step per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_int

Tensor = torch.Tensor
CALIBRATIONS = ("timestep_aware", "ndtc", "uniform")


def record_calls(module: nn.Module, run: Callable[[], Any]) -> list[tuple[tuple, dict]]:
    """Every ``(args, kwargs)`` ``module`` is called with while ``run()`` executes (under ``no_grad``)."""
    calls: list[tuple[tuple, dict]] = []
    handle = module.register_forward_pre_hook(lambda m, a, k: calls.append((a, dict(k))), with_kwargs=True)
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    if not calls:
        raise ValueError("run: the sampler never called the network")
    return calls


def _batched(v: Any, b: int) -> bool:
    return isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == b


@dataclass
class CalibSet:
    """Rows of network inputs: ``args``/``kwargs`` entries that are tensors with ``n`` rows are per-row,
    anything else is a constant of every call. ``t``: each row's network time (or zeros); ``step``: the
    sampler call it came from."""

    args: tuple
    kwargs: dict
    t: Tensor
    step: Tensor

    def __len__(self) -> int:
        return int(self.step.numel())

    @classmethod
    def from_calls(cls, calls: list[tuple[tuple, dict]]) -> CalibSet:
        """One set from recorded calls (a 0-dim or length-1 time is broadcast to the call's rows)."""
        rows_a: list[list[Any]] = []
        rows_k: dict[str, list[Any]] = {}
        ts, steps = [], []
        for i, (args, kw) in enumerate(calls):
            if not args or not isinstance(args[0], Tensor):
                raise ValueError("calls: the first input of the network must be the batch tensor x")
            b = args[0].shape[0]
            a = list(args)
            if len(a) > 1 and isinstance(a[1], (Tensor, int, float)):
                t = torch.as_tensor(a[1]).detach().flatten()
                a[1] = t.expand(b).clone() if t.numel() == 1 else t
            ts.append(a[1].double() if len(a) > 1 and isinstance(a[1], Tensor) else torch.zeros(b, dtype=torch.float64))
            steps.append(torch.full((b,), i))
            rows_a.append(a)
            for k, v in kw.items():
                rows_k.setdefault(k, []).append(v)
        args = tuple(_join([r[j] for r in rows_a], j) for j in range(len(rows_a[0])))
        kwargs = {k: _join(v, k) for k, v in rows_k.items()}
        return cls(args, kwargs, torch.cat(ts).double(), torch.cat(steps))

    def subset(self, idx: Tensor) -> CalibSet:
        n = len(self)
        take = lambda v: v[idx] if _batched(v, n) else v  # noqa: E731
        return CalibSet(
            tuple(take(a) for a in self.args), {k: take(v) for k, v in self.kwargs.items()}, self.t[idx], self.step[idx]
        )

    def batches(self, batch_size: int, groups: Callable[[Tensor], Tensor] | None = None) -> Iterator[CalibSet]:
        """Consecutive batches (rows of one timestep group per batch when ``groups`` maps times to groups)."""
        check_int(batch_size, "batch_size", 1)
        order = torch.arange(len(self))
        keys = groups(self.t) if groups is not None else torch.zeros(len(self), dtype=torch.long)
        for g in torch.unique(keys):
            rows = order[keys == g]
            for i in range(0, rows.numel(), batch_size):
                yield self.subset(rows[i : i + batch_size])

    def call(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)

    def check(self, sample_shape: tuple[int, ...] | None = None, t_range: tuple[float, float] | None = None) -> None:
        """``ValueError`` naming ``calib`` for an empty set, ``x`` of the wrong shape or non-finite, or times
        outside ``t_range``."""
        if len(self) == 0:
            raise ValueError("calib: empty calibration set")
        x = self.args[0]
        if sample_shape is not None and tuple(x.shape[1:]) != tuple(sample_shape):
            raise ValueError(f"calib: rows of shape {tuple(x.shape[1:])}, the model takes {tuple(sample_shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("calib: non-finite values in the calibration inputs")
        if t_range is not None:
            lo, hi = t_range
            bad = (self.t < lo - 1e-6) | (self.t > hi + 1e-6)
            if bool(bad.any()):
                raise ValueError(f"calib: times {float(self.t[bad][0]):g} outside the model's range [{lo:g}, {hi:g}]")


def _join(values: list[Any], name: Any) -> Any:
    if all(isinstance(v, Tensor) and v.ndim > 0 for v in values):
        return torch.cat([v.detach() for v in values])
    first = values[0]
    for v in values[1:]:
        same = (v is first) or (
            isinstance(v, Tensor) and isinstance(first, Tensor) and v.shape == first.shape and bool((v == first).all())
        )
        if not same and not (not isinstance(v, Tensor) and v == first):
            raise ValueError(f"calls: input {name!r} is neither per-row nor the same in every call")
    return first


def _step_times(bank: CalibSet) -> tuple[Tensor, Tensor]:
    steps = torch.unique(bank.step)
    times = torch.stack([bank.t[bank.step == s][0] for s in steps])
    return steps, times


def timestep_aware(bank: CalibSet, num_steps: int = 20, per_step: int | None = None) -> CalibSet:
    """Q-Diffusion: all rows (or the first ``per_step``) at ``num_steps`` evenly spaced sampler steps."""
    check_int(num_steps, "num_steps", 1)
    steps, _ = _step_times(bank)
    k = min(num_steps, steps.numel())
    pick = steps[torch.linspace(0, steps.numel() - 1, k).round().long()]
    idx = []
    for s in pick:
        rows = torch.nonzero(bank.step == s).flatten()
        idx.append(rows if per_step is None else rows[:per_step])
    return bank.subset(torch.cat(idx))


def _per_row_steps(bank: CalibSet, steps_chosen: Tensor, generator: torch.Generator) -> CalibSet:
    idx = []
    for s in steps_chosen:
        rows = torch.nonzero(bank.step == s).flatten()
        idx.append(rows[torch.randint(rows.numel(), (1,), generator=generator)])
    return bank.subset(torch.cat(idx))


def ndtc(bank: CalibSet, n: int, generator: torch.Generator, mean: float = 0.4, std: float = 0.4) -> CalibSet:
    """PTQ4DM's NDTC: ``n`` rows whose times follow ``clamp(N(mean, std), 0, 1) * t_max`` (nearest sampler
    step; true ``x_t`` with its true ``t``)."""
    check_int(n, "n", 1)
    steps, times = _step_times(bank)
    u = (torch.randn(n, generator=generator, dtype=torch.float64) * std + mean).clamp(0, 1)
    target = u * float(times.max())
    nearest = (times[None, :] - target[:, None]).abs().argmin(1)
    return _per_row_steps(bank, steps[nearest], generator)


def uniform(bank: CalibSet, n: int, generator: torch.Generator) -> CalibSet:
    """``n`` rows at uniformly random sampler steps."""
    check_int(n, "n", 1)
    steps, _ = _step_times(bank)
    return _per_row_steps(bank, steps[torch.randint(steps.numel(), (n,), generator=generator)], generator)


def select(bank: CalibSet, kind: str, n: int, generator: torch.Generator, num_steps: int = 20) -> CalibSet:
    """One of :data:`CALIBRATIONS` with about ``n`` rows."""
    if kind not in CALIBRATIONS:
        raise ValueError(f"calibration: expected one of {list(CALIBRATIONS)}, got {kind!r}")
    if kind == "timestep_aware":
        steps = min(num_steps, int(torch.unique(bank.step).numel()))
        return timestep_aware(bank, steps, per_step=max(1, n // steps))
    return ndtc(bank, n, generator) if kind == "ndtc" else uniform(bank, n, generator)


__all__ = ["CALIBRATIONS", "CalibSet", "ndtc", "record_calls", "select", "timestep_aware", "uniform"]
