"""One denoiser interface for every network: ``model(x_t, t, cond) -> prediction``.

A :class:`Denoiser` couples a network (diffzoo's own, a diffusers UNet, or any callable) with the
noise schedule it was trained on and its prediction type (cf. dpm-solver's ``model_wrapper`` and EDM's
preconditioning wrappers). Samplers only ever ask it for ``(x0, eps)`` at a model time, via
:meth:`Denoiser.x0_eps`, so every algorithm in diffzoo speaks one parameterisation.

Dtypes: the state ``x`` may be float64 while the network runs in float32; the denoiser casts the
input to the network's dtype and the prediction back to ``x.dtype``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from diffzoo.core.errors import check_finite, check_tensor
from diffzoo.core.parameterization import canonical_prediction_type, to_x0_eps
from diffzoo.core.schedules import NoiseSchedule

Tensor = torch.Tensor
NetFn = Callable[[Tensor, Tensor, Any], Tensor]


def _net_dtype(net: Any) -> torch.dtype | None:
    if isinstance(net, torch.nn.Module):
        for p in net.parameters():
            return p.dtype
    return None


class Denoiser:
    """A network with its schedule and prediction type.

    Parameters
    ----------
    net:
        ``net(x_t, t, cond) -> prediction`` where ``t`` is a 1-D tensor (one model time per sample).
    schedule:
        The :class:`~diffzoo.core.schedules.NoiseSchedule` the network was trained on.
    prediction_type:
        ``epsilon``, ``sample`` (x0), ``v_prediction``, ``score`` or ``velocity`` (aliases accepted).
    dtype:
        The dtype the network runs in (inferred from ``net``'s parameters when it is a module).
    validate:
        Check model times are in range and raise ``FloatingPointError`` when the network returns
        NaN/inf. Costs a host sync per call; benchmarks of pure sampler overhead turn it off.
    """

    def __init__(self, net: NetFn, schedule: NoiseSchedule, prediction_type: str = "epsilon",
                 dtype: torch.dtype | None = None, validate: bool = True, module: Any = None):
        if not callable(net):
            raise TypeError(f"net: expected a callable net(x_t, t, cond), got {type(net).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule: expected a NoiseSchedule, got {type(schedule).__name__}")
        self.net = net
        self.module = module if module is not None else (net if isinstance(net, torch.nn.Module) else None)
        self.schedule = schedule
        self.prediction_type = canonical_prediction_type(prediction_type)
        self.dtype = dtype or _net_dtype(self.module)
        self.validate = validate
        self.nfe = 0  # network evaluations counted (per batched call), for benchmarks

    # ------------------------------------------------------------------------------------------
    def _times(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        if not t.is_floating_point():
            t = t.to(torch.float64)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        elif t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t: expected a scalar or shape ({x.shape[0]},), got {tuple(t.shape)}")
        return t

    def __call__(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        """The raw prediction (in this denoiser's ``prediction_type``), in ``x.dtype``."""
        check_tensor(x, "x", floating=True)
        t = self._times(x, t)
        if self.validate and bool(((t < self.schedule.t_end) | (t > self.schedule.t_max + 1e-6)).any()):
            raise ValueError(f"t: model times must lie in [{self.schedule.t_end:g}, {self.schedule.t_max:g}]")
        xin = x if self.dtype is None else x.to(self.dtype)
        tin = t if self.dtype is None else t.to(self.dtype if self.dtype.is_floating_point else t.dtype)
        out = self.net(xin, tin, cond)
        self.nfe += 1
        if out.shape != x.shape:
            raise ValueError(f"net output: expected shape {tuple(x.shape)}, got {tuple(out.shape)}")
        if self.validate:
            check_finite(out, "model output")
        return out.to(x.dtype)

    def x0_eps(self, x: Tensor, t: Tensor | float, cond: Any = None) -> tuple[Tensor, Tensor]:
        """``(x0_hat, eps_hat)`` at model time ``t`` (exact conversion from the native prediction)."""
        pred = self(x, t, cond)
        tt = self._times(x, t).to(x.dtype)
        a, s = self.schedule.alpha_sigma(tt, check=False)  # __call__ validated t
        da = ds = None
        if self.prediction_type == "velocity":
            da, ds = self.schedule.d_alpha_sigma(tt)
        return to_x0_eps(pred, self.prediction_type, x, a, s, da, ds)

    def eps(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        return self.x0_eps(x, t, cond)[1]

    def x0(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        return self.x0_eps(x, t, cond)[0]

    def with_net(self, net: NetFn) -> "Denoiser":
        """A copy of this denoiser around another network function (same schedule and type)."""
        return Denoiser(net, self.schedule, self.prediction_type, self.dtype, self.validate, self.module)


# -------------------------------------------------------------------------------------------------
# Adapters
# -------------------------------------------------------------------------------------------------

def from_callable(fn: NetFn, schedule: NoiseSchedule, prediction_type: str = "epsilon", **kw: Any) -> Denoiser:
    """Wrap any user callable ``fn(x_t, t, cond)``."""
    return Denoiser(fn, schedule, prediction_type, **kw)


def from_diffusers_unet(unet: Any, scheduler_or_config: Any = None, schedule: NoiseSchedule | None = None,
                        prediction_type: str | None = None, **kw: Any) -> Denoiser:
    """Wrap a diffusers ``UNet2DModel`` or ``UNet2DConditionModel``.

    ``cond`` is passed as ``class_labels`` to a ``UNet2DModel`` and as ``encoder_hidden_states`` to a
    ``UNet2DConditionModel`` (a dict ``cond`` is passed as keyword arguments). The schedule and the
    prediction type default to those of the given diffusers scheduler / config.
    """
    from diffzoo.core.schedules import from_diffusers_config

    if schedule is None:
        if scheduler_or_config is None:
            raise ValueError("scheduler_or_config: give a diffusers scheduler/config or an explicit schedule")
        schedule = from_diffusers_config(scheduler_or_config)
    if prediction_type is None:
        cfg = getattr(scheduler_or_config, "config", scheduler_or_config) or {}
        prediction_type = dict(cfg).get("prediction_type", "epsilon")
    is_cond = type(unet).__name__ == "UNet2DConditionModel" or hasattr(unet.config, "cross_attention_dim") \
        and getattr(unet.config, "cross_attention_dim", None) is not None

    def net(x: Tensor, t: Tensor, cond: Any) -> Tensor:
        if isinstance(cond, dict):
            return unet(x, t, **cond).sample
        if is_cond:
            return unet(x, t, encoder_hidden_states=cond).sample
        return unet(x, t, class_labels=cond).sample

    return Denoiser(net, schedule, prediction_type, module=unet, **kw)
