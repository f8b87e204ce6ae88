"""One entry point: :func:`quantize` a network with a named PTQ method on a calibration bank.

``METHODS`` (name -> :class:`Method`):

* ``minmax`` -- naive PTQ: per-channel min-max weights (round to nearest), per-tensor activation ranges
  = the calibration max, uniform-random-step calibration, no reconstruction.
* ``ptq4dm`` -- PTQ4DM (Shang et al., CVPR 2023, arXiv 2211.15736): NDTC calibration (true ``x_t`` with its
  true ``t``, see :mod:`diffzoo.quant.calib`), MSE ranges, BRECQ/AdaRound reconstruction with QDrop
  (drop probability 0.5).
* ``qdiffusion`` -- Q-Diffusion (Li et al., ICCV 2023, arXiv 2302.04304): time-step-aware calibration,
  MSE ranges, BRECQ/AdaRound + LSQ, split shortcut quantizers (``split=False``: the ablation).
* ``quest`` -- QuEST-style (Wang et al., arXiv 2402.03666; exact losses not published, our
  reconstruction): the Q-Diffusion model with time-aware activation quantizers (one step size per
  timestep group, ``groups``), then selective fine-tuning of the time-embedding and attention layers
  with local + global MSE on the model's own trajectories (data-free).

Iteration counts are scaled down for CPU (``iters``, default 100 per block vs the papers' 20 000) and
recorded in :class:`QuantResult`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from diffzoo.core.errors import check_choice, check_int
from diffzoo.quant.calib import CalibSet, select
from diffzoo.quant.model import QuantSpec, calibrating, default_spec, prepare, set_mode
from diffzoo.quant.quantizer import check_bits
from diffzoo.quant.recon import ReconLog, quest_finetune, reconstruct

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """A PTQ recipe: calibration selection, range init, reconstruction, QDrop, split, QuEST stage."""

    calibration: str
    weight_init: str
    act_init: str
    recon: bool
    drop_prob: float = 0.0
    split: bool = False
    quest: bool = False
    paper: str = ""


METHODS: dict[str, Method] = {
    "minmax": Method("uniform", "max", "max", False, paper="naive min-max PTQ"),
    "ptq4dm": Method("ndtc", "mse", "mse", True, drop_prob=0.5, paper="PTQ4DM, arXiv 2211.15736"),
    "qdiffusion": Method("timestep_aware", "mse", "mse", True, split=True, paper="Q-Diffusion, arXiv 2302.04304"),
    "quest": Method("timestep_aware", "mse", "mse", True, split=True, quest=True, paper="QuEST, arXiv 2402.03666"),
}


@dataclass
class QuantResult:
    """The quantized network (in place of the input), its spec and what was run."""

    model: nn.Module
    spec: QuantSpec
    method: str
    calibration: str
    calib_rows: int
    recon: ReconLog | None = None
    quest_layers: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def _edges(calib: CalibSet, groups: int) -> list[float]:
    """``groups - 1`` edges splitting the calibration times into equal-count timestep groups."""
    if groups <= 1:
        return []
    t = torch.unique(calib.t)
    qs = torch.quantile(t, torch.linspace(0, 1, groups + 1, dtype=t.dtype)[1:-1])
    return [float(v) for v in qs]


def quantize(
    model: nn.Module,
    bank: CalibSet,
    method: str = "qdiffusion",
    wbits: int = 8,
    abits: int = 8,
    *,
    calibration: str | None = None,
    n_calib: int = 256,
    split: bool | None = None,
    attention: bool = True,
    groups: int = 4,
    iters: int = 100,
    quest_iters: int | None = None,
    batch_size: int = 32,
    act_qmax: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> QuantResult:
    """Quantize ``model`` in place with ``method`` (see :data:`METHODS`) on ``bank``, the recorded network
    inputs along the full-precision sampler (:func:`~diffzoo.quant.calib.record_calls`).

    ``calibration`` overrides the method's calibration selection (the ablation); ``n_calib`` rows are
    used; ``groups`` only matters for ``quest``; ``act_qmax`` (e.g. 127) narrows the activation grid
    (the real int8 W8A8 kernel needs it, :mod:`diffzoo.quant.int8`).
    """
    check_choice(method, METHODS, "method")
    wbits, abits = check_bits(wbits, "wbits"), check_bits(abits, "abits")
    check_int(n_calib, "n_calib", 1)
    check_int(iters, "iters", 0)
    check_int(groups, "groups", 1, 64)
    if not isinstance(bank, CalibSet):
        raise TypeError(f"bank: expected a CalibSet, got {type(bank).__name__}")
    bank.check()
    m = METHODS[method]
    g = generator or torch.Generator().manual_seed(0)
    calib_kind = calibration or m.calibration
    calib = select(bank, calib_kind, n_calib, g)
    fp = copy.deepcopy(model).eval().requires_grad_(False)
    model.eval().requires_grad_(False)
    groups = groups if m.quest else 1
    example = calib.subset(torch.arange(min(2, len(calib))))
    spec = default_spec(
        model,
        wbits,
        abits,
        split=m.split if split is None else split,
        example=(example.args, example.kwargs),
        attention=attention,
        groups=groups,
        edges=_edges(calib, groups),
        act_qmax=act_qmax,
    )
    prepare(model, spec, weight_init=m.weight_init)
    group_fn = model.quant_ctx.group_of if groups > 1 else None
    set_mode(model, "sim", acts=True)
    with calibrating(model, m.act_init), torch.no_grad():
        for b in calib.batches(max(batch_size, 64), group_fn):
            b.call(model)
    rec = None
    if m.recon:
        rec = reconstruct(
            model,
            fp,
            calib,
            iters=iters,
            batch_size=batch_size,
            drop_prob=m.drop_prob,
            groups=group_fn,
            generator=g,
            progress=progress,
        )
    names: list[str] = []
    if m.quest:
        names = quest_finetune(
            model,
            fp,
            calib,
            iters=iters if quest_iters is None else quest_iters,
            batch_size=batch_size,
            groups=group_fn,
            generator=g,
        )
    set_mode(model, "sim")
    settings = dict(
        iters=iters if m.recon else 0,
        batch_size=batch_size,
        n_calib=len(calib),
        groups=groups,
        drop_prob=m.drop_prob,
        weight_init=m.weight_init,
        act_init=m.act_init,
    )
    return QuantResult(model, spec, method, calib_kind, len(calib), rec, names, settings)


__all__ = ["METHODS", "Method", "QuantResult", "quantize"]
