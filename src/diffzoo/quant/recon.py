"""Block reconstruction (BRECQ, Li et al. 2021, arXiv 2102.05426) with AdaRound weights and LSQ activation
steps, optionally with QDrop's random dropping of activation quantization (Wei et al. 2022, arXiv 2203.05740),
as Q-Diffusion (arXiv 2302.04304) and PTQ4DM (arXiv 2211.15736) run it; and QuEST's selective fine-tuning.

For each unit of :func:`~diffzoo.quant.model.block_units` (residual / transformer / attention blocks; the
other layers one by one), in module order:

1. its inputs are captured from the *quantized* model (earlier units already reconstructed) and its
   target output from the full-precision model on the same calibration rows (BRECQ's asymmetric
   reconstruction); with QDrop, each input element is replaced by its full-precision value with
   probability ``drop_prob``;
2. AdaRound: ``h(V)`` of every weight in the unit is optimised (Adam, lr 1e-3) with activation
   quantization off inside the unit, loss ``||f_q - f_fp||^2`` (summed over channels, averaged over the
   rest, as Q-Diffusion's ``lp_loss``) ``+ lambda sum(1 - |2 h - 1|^beta)``, ``lambda = 0.01``, ``beta``
   annealed 20 -> 2 after a 20 % warm-up with no rounding loss; then rounding is made hard and folded;
3. LSQ: the unit's activation step sizes are optimised (Adam, lr 4e-5, Q-Diffusion's) with weights and
   activations quantized.

The papers run 20k iterations per block on GPUs; ours are ``iters`` (default 100 on CPU), recorded in the
result. QuEST (Wang et al., arXiv 2402.03666) -- exact losses not published; our reconstruction, labelled
"-style" in user-facing names: from the reconstructed model, unfreeze the float weights (STE through the
weight quantizer) of the time-embedding layers and the attention/feed-forward layers, plus every
activation step size (one per timestep group), and minimise the local (each fine-tuned layer's output)
plus global (network output) MSE to the full-precision model on the model's own trajectory states.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from diffzoo.quant.calib import CalibSet
from diffzoo.quant.layers import QuantLayer
from diffzoo.quant.model import act_quantizers, block_units, quant_layers, set_mode

log = logging.getLogger(__name__)
Tensor = torch.Tensor

ROUND_LAMBDA = 0.01
BETA_START, BETA_END, WARMUP = 20.0, 2.0, 0.2
WEIGHT_LR, ACT_LR = 1e-3, 4e-5
TIME_LAYERS = re.compile(r"(^|\.)(time|time_embedding|time_emb_proj|emb)(\.|$)")
SENSITIVE_LAYERS = re.compile(r"(to_q|to_k|to_v|to_out|qkv|attn\.proj|attn1|attn2|ff\.)")


class _Stop(Exception):
    pass


class Adam:
    """Plain Adam (Kingma & Ba 2015) over a list of tensors; ``torch.optim`` would import dynamo on its
    first use (about 10 s on a loaded 2-core machine), which dominates a short CPU reconstruction."""

    def __init__(self, groups: list[tuple[list[Tensor], float]], betas=(0.9, 0.999), eps: float = 1e-8):
        self.groups = [(list(ps), lr) for ps, lr in groups]
        self.b1, self.b2, self.eps, self.t = betas[0], betas[1], eps, 0
        self.m = {id(p): torch.zeros_like(p) for ps, _ in self.groups for p in ps}
        self.v = {id(p): torch.zeros_like(p) for ps, _ in self.groups for p in ps}

    def zero_grad(self) -> None:
        for ps, _ in self.groups:
            for p in ps:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for ps, lr in self.groups:
            for p in ps:
                if p.grad is None:
                    continue
                m, v = self.m[id(p)], self.v[id(p)]
                m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
                p.sub_(lr * (m / c1) / ((v / c2).sqrt() + self.eps))


@dataclass
class ReconLog:
    """What a reconstruction did: iterations per unit and the unit losses before/after."""

    iters: int = 0
    units: list[str] = field(default_factory=list)
    loss_before: list[float] = field(default_factory=list)
    loss_after: list[float] = field(default_factory=list)


def lp_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``||pred - target||^2`` summed over dim 1 and averaged over the rest (Q-Diffusion's ``lp_loss``)."""
    d = (pred - target).pow(2)
    return d.sum(1).mean() if d.ndim > 1 else d.mean()


def _first(out: object) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    sample = getattr(out, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    raise TypeError(f"unit output: expected a tensor, got {type(out).__name__}")


def capture(model: nn.Module, unit: nn.Module, batch: CalibSet, output: bool) -> tuple[tuple, dict, Tensor | None]:
    """The inputs (and, with ``output``, the output) of ``unit`` when ``model`` runs ``batch``; the rest of
    the network is not run."""
    got: dict[str, object] = {}

    def pre(mod: nn.Module, args: tuple, kw: dict) -> None:
        got["args"] = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
        got["kwargs"] = {k: v.detach() if isinstance(v, Tensor) else v for k, v in kw.items()}
        if not output:
            raise _Stop

    def post(mod: nn.Module, args: tuple, kw: dict, out: object) -> None:
        got["out"] = _first(out).detach()
        raise _Stop

    h1 = unit.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = unit.register_forward_hook(post, with_kwargs=True)
    try:
        with torch.no_grad():
            batch.call(model)
    except _Stop:
        pass
    finally:
        h1.remove()
        h2.remove()
    if "args" not in got:
        raise ValueError("unit: the network did not call this unit on the calibration inputs")
    return got["args"], got["kwargs"], got.get("out")  # type: ignore[return-value]


def _drop(q: object, f: object, p: float, g: torch.Generator) -> object:
    if p <= 0 or not isinstance(q, Tensor) or not isinstance(f, Tensor) or not q.is_floating_point():
        return q
    keep_fp = torch.rand(q.shape, generator=g) < p
    return torch.where(keep_fp, f, q)


def _beta(i: int, iters: int) -> float | None:
    start = int(WARMUP * iters)
    if i < start:
        return None
    ratio = (i - start) / max(1, iters - start)
    return BETA_END + (BETA_START - BETA_END) * max(0.0, 1.0 - ratio)


def reconstruct(
    qmodel: nn.Module,
    fpmodel: nn.Module,
    calib: CalibSet,
    *,
    iters: int = 100,
    act_iters: int | None = None,
    batch_size: int = 32,
    drop_prob: float = 0.0,
    groups: object = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> ReconLog:
    """BRECQ/AdaRound (+ LSQ, + QDrop) over every unit, in place (see the module docstring)."""
    g = generator or torch.Generator().manual_seed(0)
    act_iters = iters if act_iters is None else act_iters
    rec = ReconLog(iters=iters)
    batches = list(calib.batches(batch_size, groups))
    units = block_units(qmodel)
    from_tqdm = _progress(units, progress)
    for name, unit in from_tqdm:
        fp_unit = fpmodel.get_submodule(name)
        set_mode(qmodel, "sim")
        data = []
        for b in batches:
            a_q, k_q, _ = capture(qmodel, unit, b, output=False)
            a_f, k_f, out = capture(fpmodel, fp_unit, b, output=True)
            data.append((a_q, k_q, a_f, k_f, out))

        def loss_on(j: int, p: float) -> Tensor:
            a_q, k_q, a_f, k_f, out = data[j]
            args = tuple(_drop(q, f, p, g) for q, f in zip(a_q, a_f, strict=True))
            kwargs = {k: _drop(v, k_f.get(k), p, g) for k, v in k_q.items()}
            return lp_loss(_first(unit(*args, **kwargs)), out)

        with torch.no_grad():
            rec.loss_before.append(float(sum(loss_on(j, 0.0) for j in range(len(data))) / len(data)))
        layers = [q for _, q in quant_layers(unit)] if not isinstance(unit, QuantLayer) else [unit]
        # 2. AdaRound on the unit's weights, activation quantization off inside the unit
        params = []
        for q in layers:
            for wq, w in zip(q.wq, q.weight_parts(), strict=True):
                if wq.enabled:
                    wq.init_adaround(w)
                    params.append(wq.alpha)
        set_mode(unit, "sim", acts=False)
        if params and iters > 0:
            opt = Adam([(params, WEIGHT_LR)])
            for i in range(iters):
                j = int(torch.randint(len(data), (1,), generator=g))
                loss = loss_on(j, drop_prob)
                beta = _beta(i, iters)
                if beta is not None:
                    loss = loss + ROUND_LAMBDA * sum(wq.round_loss(beta) for q in layers for wq in q.wq)
                opt.zero_grad()
                loss.backward()
                opt.step()
        for q in layers:  # hard rounding, folded into the stored weight
            with torch.no_grad():
                for wq in q.wq:
                    wq.soft = False
                q.weight.copy_(q.quant_weight())
                for wq in q.wq:
                    wq.alpha = None
        # 3. LSQ on the unit's activation step sizes
        set_mode(unit, "sim")
        deltas = [a.delta for _, a in act_quantizers(unit) if bool(a.ready)]
        if deltas and act_iters > 0:
            for d in deltas:
                d.requires_grad_(True)
            opt = Adam([(deltas, ACT_LR)])
            for _ in range(act_iters):
                j = int(torch.randint(len(data), (1,), generator=g))
                loss = loss_on(j, drop_prob)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for d in deltas:
                        d.clamp_(min=1e-8)
            for d in deltas:
                d.requires_grad_(False)
        with torch.no_grad():
            rec.loss_after.append(float(sum(loss_on(j, 0.0) for j in range(len(data))) / len(data)))
        rec.units.append(name)
        log.info("recon %s: %.4g -> %.4g", name, rec.loss_before[-1], rec.loss_after[-1])
    set_mode(qmodel, "sim")
    return rec


def _progress(units: list, progress: bool) -> Any:
    return tqdm(units, desc="reconstruct", leave=False) if progress else units


def selective_layers(qmodel: nn.Module) -> list[str]:
    """QuEST's fine-tuned layers: the time-embedding path and the attention / feed-forward layers."""
    return [n for n, _ in quant_layers(qmodel) if TIME_LAYERS.search(n) or SENSITIVE_LAYERS.search(n)]


def quest_finetune(
    qmodel: nn.Module,
    fpmodel: nn.Module,
    calib: CalibSet,
    *,
    iters: int = 100,
    batch_size: int = 32,
    lr: float = 1e-4,
    global_weight: float = 1.0,
    groups: object = None,
    generator: torch.Generator | None = None,
) -> list[str]:
    """QuEST-style selective fine-tuning, in place; returns the fine-tuned layers' names."""
    g = generator or torch.Generator().manual_seed(0)
    names = selective_layers(qmodel)
    batches = list(calib.batches(batch_size, groups))
    if not names or iters <= 0 or not batches:
        return names
    set_mode(qmodel, "sim")
    params: list[Tensor] = []
    for n in names:
        q = qmodel.get_submodule(n)
        params.append(q.weight)
        if q.bias is not None:
            params.append(q.bias)
    deltas = [a.delta for _, a in act_quantizers(qmodel) if bool(a.ready)]
    for p in params + deltas:
        p.requires_grad_(True)
    outs_q: dict[str, Tensor] = {}
    outs_f: dict[str, Tensor] = {}

    def keeper(store: dict[str, Tensor], name: str):
        return lambda mod, args, out: store.__setitem__(name, out)

    hooks = [qmodel.get_submodule(n).register_forward_hook(keeper(outs_q, n)) for n in names]
    hooks += [fpmodel.get_submodule(n).register_forward_hook(keeper(outs_f, n)) for n in names]
    opt = Adam([(params, lr), (deltas, ACT_LR)])
    try:
        for _ in range(iters):
            b = batches[int(torch.randint(len(batches), (1,), generator=g))]
            with torch.no_grad():
                target = _first(b.call(fpmodel))
            out = _first(b.call(qmodel))
            local = sum(lp_loss(outs_q[n], outs_f[n].detach()) for n in names) / len(names)
            loss = local + global_weight * lp_loss(out, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for d in deltas:
                    d.clamp_(min=1e-8)
    finally:
        for h in hooks:
            h.remove()
        for p in params + deltas:
            p.requires_grad_(False)
    if not math.isfinite(float(loss.detach())):
        raise FloatingPointError("quest: fine-tuning diverged (non-finite loss)")
    return names


__all__ = ["ReconLog", "capture", "lp_loss", "quest_finetune", "reconstruct", "selective_layers"]
