"""Reversible couplings with a memory-free backward (IDM, Chen et al. 2025, Sec. 3.2; RevNet, Gomez 2017).

A coupling maps ``(x1, x2) -> (y1, y2) = ((1 - v) F(x1) + v x2, x1)`` for any (non-invertible) ``F``
and a learnable ``v in (0, 1)`` (IDM's form; ``v = sigmoid(raw)``, init 0.5). It is invertible:
``x1 = y2``, ``x2 = (y1 - (1 - v) F(x1)) / v``. :func:`rev_sequence` runs a list of couplings under a
custom autograd function that keeps *only the final outputs*: the backward pass walks the blocks in
reverse, recomputes ``F(x1)`` once per block with grad enabled (``x1 = y2`` is known), rebuilds
``x2`` from it, and back-propagates through that single block -- so activation memory is one block's,
not the whole chain's. Nesting works: an ``F`` may itself call :func:`rev_sequence` (IDM's two levels:
invertible sampling steps whose noise estimator has invertible blocks).

:class:`SavedTensorMeter` measures activation memory on any device: it counts the bytes of the tensors
autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``), live at each moment, and
keeps the peak; parameters (stored anyway) are excluded.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

Tensor = torch.Tensor


class RevCoupling(nn.Module):
    """``(x1, x2) -> ((1 - v) F(x1) + v x2, x1)``; ``f`` is an ``nn.Module`` computing ``F``."""

    def __init__(self, f: nn.Module, v_init: float = 0.5):
        super().__init__()
        if not 0.0 < v_init < 1.0:
            raise ValueError(f"v_init: expected a value in (0, 1), got {v_init}")
        self.f = f
        self.v_raw = nn.Parameter(torch.logit(torch.tensor(float(v_init))))

    @property
    def v(self) -> Tensor:
        return torch.sigmoid(self.v_raw)

    def combine(self, fx1: Tensor, x2: Tensor) -> Tensor:
        v = self.v.to(x2.dtype)
        return (1 - v) * fx1 + v * x2

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        return self.combine(self.f(x1), x2), x1

    @torch.no_grad()
    def inverse(self, y1: Tensor, y2: Tensor) -> tuple[Tensor, Tensor]:
        v = self.v.to(y1.dtype)
        return y2, (y1 - (1 - v) * self.f(y2)) / v


class _RevFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, blocks: Sequence[RevCoupling], params: Sequence[nn.Parameter], x1: Tensor, x2: Tensor, *flat: Tensor
    ) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            for b in blocks:
                x1, x2 = b(x1, x2)
        ctx.blocks, ctx.params = blocks, params
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx: Any, g1: Tensor, g2: Tensor) -> tuple[Any, ...]:
        y1, y2 = ctx.saved_tensors
        params = ctx.params
        acc: list[Tensor | None] = [None] * len(params)
        g1 = torch.zeros_like(y1) if g1 is None else g1
        g2 = torch.zeros_like(y2) if g2 is None else g2
        for b in reversed(ctx.blocks):
            with torch.enable_grad():
                x1 = y2.detach().requires_grad_(True)
                fx1 = b.f(x1)
                with torch.no_grad():  # rebuild x2 from the outputs: nothing was stored
                    v = b.v.to(y1.dtype)
                    x2 = ((y1 - (1 - v) * fx1) / v).detach()
                x2.requires_grad_(True)
                out1 = b.combine(fx1, x2)
                grads = torch.autograd.grad(out1, (x1, x2, *params), g1, allow_unused=True)
            gx1 = torch.zeros_like(x1) if grads[0] is None else grads[0]
            gx2, gp = grads[1], grads[2:]
            g1, g2 = gx1 + g2, gx2  # y2 = x1 passes g2 straight through to x1
            for i, g in enumerate(gp):
                if g is not None:
                    acc[i] = g if acc[i] is None else acc[i] + g
            y1, y2 = x1.detach(), x2.detach()
        return (None, None, g1, g2, *acc)


def _trainable(blocks: Iterable[nn.Module], extra: Iterable[nn.Parameter] = ()) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for b in blocks:
        for p in b.parameters():
            if p.requires_grad:
                seen.setdefault(id(p), p)
    for p in extra:
        if p.requires_grad:
            seen.setdefault(id(p), p)
    return list(seen.values())


def rev_sequence(
    blocks: Sequence[RevCoupling],
    x1: Tensor,
    x2: Tensor,
    invertible: bool = True,
    extra_params: Iterable[nn.Parameter] = (),
) -> tuple[Tensor, Tensor]:
    """Run ``blocks`` on ``(x1, x2)``; with ``invertible=True`` back-propagate without stored activations.

    ``extra_params``: parameters the blocks' ``F`` uses that do not belong to the blocks (shared
    modules); they receive gradients too. With ``invertible=False`` plain autograd is used (same
    values, same gradients, all activations stored): the reference for tests and memory benchmarks.
    """
    if not invertible or not torch.is_grad_enabled():
        for b in blocks:
            x1, x2 = b(x1, x2)
        return x1, x2
    params = _trainable(blocks, extra_params)
    return _RevFunction.apply(list(blocks), params, x1, x2, *params)


class SavedTensorMeter:
    """Live and peak bytes of tensors saved for backward (activation memory), storage-deduplicated.

    Use as a context manager around both the forward *and* the backward pass (reversible backward
    passes recompute and save activations one block at a time; those count too).
    """

    def __init__(self, exclude: Iterable[Tensor] = ()):
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _release(self, key: int) -> None:
        ent = self._refs.get(key)
        if ent is None:
            return
        ent[0] -= 1
        if ent[0] == 0:
            self.live -= ent[1]
            del self._refs[key]

    def _pack(self, t: Tensor) -> Any:
        st = t.untyped_storage()
        key = st.data_ptr()
        if key in self._exclude or st.nbytes() == 0:
            return _Plain(t)
        ent = self._refs.get(key)
        if ent is None:
            self._refs[key] = [1, st.nbytes()]
            self.live += st.nbytes()
            self.peak = max(self.peak, self.live)
        else:
            ent[0] += 1
        return _Handle(t, self, key)

    @staticmethod
    def _unpack(h: Any) -> Tensor:
        return h.t

    def __enter__(self) -> SavedTensorMeter:
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


class _Plain:
    __slots__ = ("t",)

    def __init__(self, t: Tensor):
        self.t = t


class _Handle:
    __slots__ = ("__weakref__", "_fin", "t")

    def __init__(self, t: Tensor, meter: SavedTensorMeter, key: int):
        self.t = t
        self._fin = weakref.finalize(self, meter._release, key)
