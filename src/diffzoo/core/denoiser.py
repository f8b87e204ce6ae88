"""One denoiser interface for every network: ``model(x_t, t, cond) -> prediction``.

A :class:`Denoiser` couples a network (diffzoo's own, a diffusers UNet, or any callable) with the
noise schedule it was trained on and its prediction type (cf. dpm-solver's ``model_wrapper`` and EDM's
preconditioning wrappers). Samplers only ever ask it for ``(x0, eps)`` at a model time, via
:meth:`Denoiser.x0_eps` -- or, inside their loops, its precomputed form :meth:`Denoiser.x0_eps_at`,
which returns the same pair and defers to ``x0_eps`` whenever a subclass overrides it -- so every
algorithm in diffzoo speaks one parameterisation.

An optional x0 correction (:class:`~diffzoo.core.parameterization.ClipX0`,
:class:`~diffzoo.core.parameterization.DynamicThreshold` or any callable ``x0 -> x0``) is applied to
every predicted ``x0``; by default ``eps`` is recomputed from the corrected ``x0``, so the pair stays
consistent (``x_t = alpha x0 + sigma eps``) and every sampler follows the correction.

Dtypes: the state ``x`` may be float64 while the network runs in float32; the denoiser casts the
input to the network's dtype and the prediction back to ``x.dtype``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffzoo.core.errors import check_finite, check_tensor
from diffzoo.core.parameterization import (
    ClipX0,
    DynamicThreshold,
    Linear,
    canonical_prediction_type,
    x0_eps_coefficients,
)
from diffzoo.core.schedules import (
    DIFFUSERS_PREDICTION_TYPES,
    NoiseSchedule,
    check_diffusers_config,
    diffusers_config,
    from_diffusers_config,
)

Tensor = torch.Tensor
NetFn = Callable[[Tensor, Tensor, Any], Tensor]
X0Correction = Callable[[Tensor], Tensor]

# diffusers schedulers whose step keeps the network's eps after clipping x0 (DDIMScheduler.step with its
# default use_clipped_model_output=False); the others (DDPM's posterior mean, DPM-Solver's data
# prediction) move with the pair consistent with the corrected x0.
KEEP_EPS_CLASSES = frozenset(
    {"DDIMScheduler", "DDIMParallelScheduler", "DDIMInverseScheduler", "CogVideoXDDIMScheduler"}
)


def _net_dtype(net: Any) -> torch.dtype | None:
    if isinstance(net, torch.nn.Module):
        for p in net.parameters():
            return p.dtype
    return None


def _linear(c: Linear, x: Tensor, pred: Tensor) -> Tensor:
    """``c_x x + c_p pred`` (``pred`` itself for ``None``) with 0-d or batch-broadcast coefficient tensors:
    two fused kernels, no host sync, the same kernels on every path."""
    return pred if c is None else torch.mul(x, c[0]).addcmul_(pred, c[1])


def _unbind_maps(c: Linear, k: int) -> list[Linear]:
    """Per-time pairs of 0-d coefficient tensors from coefficient vectors of length ``k``."""
    return [None] * k if c is None else list(zip(c[0].unbind(), c[1].unbind()))


@dataclass(frozen=True)
class PreparedTimes:
    """What :meth:`Denoiser.x0_eps_at` needs at a fixed list of model times, computed once per sampling run.

    Built by :meth:`Denoiser.prepare_times` for states of one batch size, dtype and device. Per time ``k``:
    the network's time input (batch-expanded, in the network's dtype), and the conversion coefficients
    ``x0 = c_x x + c_p pred``, ``eps = ...`` (0-d tensors in the state dtype).
    """

    t: Tensor  # (K,) float64 model times on the state's device
    alpha: Tensor  # (K,) float64 alpha(t)
    sigma: Tensor  # (K,) float64 sigma(t)
    net_t: list[Tensor]  # the network's time input per time
    x0_map: list[Linear]
    eps_map: list[Linear]
    redo_eps: list[Linear]  # eps from a corrected x0 (None: the correction keeps the network's eps)
    net_dtype: torch.dtype | None  # cast the state to this dtype before the network (None: no cast)
    fallback: bool  # x0_eps (or __call__) is overridden: x0_eps_at calls x0_eps

    def split(self, k: int) -> tuple[PreparedTimes, PreparedTimes]:
        """The tables of the first ``k`` times and of the rest (one :meth:`Denoiser.prepare_times` call
        for two lists of times)."""

        def part(sl: slice) -> PreparedTimes:
            return PreparedTimes(
                self.t[sl],
                self.alpha[sl],
                self.sigma[sl],
                self.net_t[sl],
                self.x0_map[sl],
                self.eps_map[sl],
                self.redo_eps[sl],
                self.net_dtype,
                self.fallback,
            )

        return part(slice(None, k)), part(slice(k, None))


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
        Direct calls (``den(x, t)``, :meth:`x0_eps`) check that model times are in range, that ``x0``/``eps``
        are defined there, and raise ``FloatingPointError`` when the network returns NaN/inf -- host syncs
        on every call. Samplers check their whole grid once at entry (always) and, with ``validate``, the
        finiteness of the result once at the end (no per-step sync). Benchmarks of pure sampler
        overhead may turn it off.
    x0_correction:
        Applied to every predicted ``x0``: :class:`~diffzoo.core.parameterization.ClipX0`,
        :class:`~diffzoo.core.parameterization.DynamicThreshold` or any callable ``x0 -> x0``.
    recompute_eps:
        With an ``x0_correction``: ``True`` returns ``eps = (x_t - alpha x0') / sigma``, the pair consistent
        with the corrected ``x0'`` that every sampler follows (Glide; diffusers' DDPM and DPM-Solver);
        ``False`` keeps the network's ``eps`` (diffusers' ``DDIMScheduler`` default,
        ``use_clipped_model_output=False``), which samplers that move along ``eps`` alone (PLMS, F-PNDM,
        Heun) would not follow: they refuse such a denoiser.
    """

    def __init__(
        self,
        net: NetFn,
        schedule: NoiseSchedule,
        prediction_type: str = "epsilon",
        dtype: torch.dtype | None = None,
        validate: bool = True,
        module: Any = None,
        *,
        x0_correction: X0Correction | None = None,
        recompute_eps: bool = True,
    ):
        if not callable(net):
            raise TypeError(f"net: expected a callable net(x_t, t, cond), got {type(net).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule: expected a NoiseSchedule, got {type(schedule).__name__}")
        if x0_correction is not None and not callable(x0_correction):
            raise TypeError(
                f"x0_correction: expected a callable x0 -> x0 (e.g. ClipX0), got {type(x0_correction).__name__}"
            )
        self.net = net
        self.module = module if module is not None else (net if isinstance(net, torch.nn.Module) else None)
        self.schedule = schedule
        self.prediction_type = canonical_prediction_type(prediction_type)
        self.dtype = dtype or _net_dtype(self.module)
        self.validate = validate
        self.x0_correction = x0_correction
        self.recompute_eps = bool(recompute_eps)
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

    def _check_range(self, t: Tensor, arg: str = "t") -> None:
        sch = self.schedule
        if bool(((t >= sch.t_end) & (t <= sch.t_max + 1e-6)).logical_not_().any()):  # NaN is out of range too
            raise ValueError(f"{arg}: model times must lie in [{sch.t_end:g}, {sch.t_max:g}]")

    def _coefficients(
        self, t64: Tensor, dtype: torch.dtype, check: int, alpha_sigma: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Linear, Linear, Linear]:
        """The ``x0`` / ``eps`` maps at float64 model times ``t64`` (and the eps-from-corrected-x0 map), in
        ``dtype``; raises where they are undefined among the first ``check`` times (one host sync)."""
        if alpha_sigma is None:
            a, s = self.schedule.alpha_sigma(t64, check=False)
            a, s = a.to(torch.float64), s.to(torch.float64)
        else:
            a, s = alpha_sigma
        da = ds = None
        if self.prediction_type == "velocity":
            da, ds = self.schedule.d_alpha_sigma(t64)
            da, ds = da.to(torch.float64), ds.to(torch.float64)
        if check:
            n = check if t64.ndim else 1
            self._check_defined(*(None if v is None else v.reshape(-1)[:n] for v in (t64, a, s, da, ds)))
        cx0, ceps = x0_eps_coefficients(self.prediction_type, a, s, da, ds)
        redo = None
        if self.x0_correction is not None and self.recompute_eps:
            redo = x0_eps_coefficients("sample", a, s)[1]
        cast = lambda c: None if c is None else (c[0].to(dtype), c[1].to(dtype))  # noqa: E731
        return cast(cx0), cast(ceps), cast(redo)

    def _check_defined(self, t: Tensor, a: Tensor, s: Tensor, da: Tensor | None, ds: Tensor | None) -> None:
        kind = self.prediction_type
        if kind in ("epsilon", "score") and bool((a == 0).any()):
            bad = float(t.reshape(-1)[(a.reshape(-1) == 0).nonzero()[0, 0]])
            raise ValueError(
                f"prediction_type: x0 is undefined for an {kind!r} prediction where alpha = 0 "
                f"(t = {bad:g}, zero terminal SNR); start the grid below that time (e.g. 'leading' "
                "spacing) or use a v_prediction / sample model"
            )
        needs_sigma = kind == "sample" or (self.x0_correction is not None and self.recompute_eps)
        if needs_sigma and bool((s == 0).any()):
            bad = float(t.reshape(-1)[(s.reshape(-1) == 0).nonzero()[0, 0]])
            raise ValueError(
                f"t: eps is undefined at sigma = 0 (t = {bad:g}) for a {kind!r} prediction"
                + (" with a recomputing x0 correction" if kind != "sample" else "")
            )
        if kind == "velocity" and bool((a * ds - s * da == 0).any()):
            raise ValueError(
                "t: a 'velocity' prediction does not determine (x0, eps) where alpha sigma' = sigma alpha'"
            )

    def _correct(self, x: Tensor, x0: Tensor, eps: Tensor, redo: Linear) -> tuple[Tensor, Tensor]:
        x0 = self.x0_correction(x0)  # type: ignore[misc]
        return x0, (eps if redo is None else _linear(redo, x, x0))

    def __call__(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        """The raw prediction (in this denoiser's ``prediction_type``), in ``x.dtype``."""
        check_tensor(x, "x", floating=True)
        t = self._times(x, t)
        if self.validate:
            self._check_range(t)
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
        """``(x0_hat, eps_hat)`` at model time ``t`` (exact conversion from the native prediction, then the
        x0 correction if any). ``t`` is a scalar or one time per sample."""
        pred = self(x, t, cond)
        scalar = not torch.is_tensor(t) or t.ndim == 0  # one time: 0-d coefficients, as in x0_eps_at
        tt = (torch.as_tensor(t, device=x.device) if scalar else self._times(x, t)).to(torch.float64)
        cx0, ceps, redo = self._coefficients(tt, x.dtype, check=tt.numel() if self.validate else 0)
        if tt.ndim:  # per-sample coefficients, broadcast batch-first
            shape = (-1,) + (1,) * (x.ndim - 1)
            cx0, ceps, redo = (
                (None if c is None else (c[0].reshape(shape), c[1].reshape(shape))) for c in (cx0, ceps, redo)
            )
        x0, eps = _linear(cx0, x, pred), _linear(ceps, x, pred)
        if self.x0_correction is not None:
            x0, eps = self._correct(x, x0, eps, redo)
        return x0, eps

    def eps(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        return self.x0_eps(x, t, cond)[1]

    def x0(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        return self.x0_eps(x, t, cond)[0]

    # ------------------------------------------------------------------------------------------ fast path
    def prepare_times(self, t: Tensor, like: Tensor, evaluated: int | None = None) -> PreparedTimes:
        """Check model times ``t`` once (range; ``x0``/``eps`` defined there, e.g. no ``epsilon``
        prediction at ``alpha = 0``) and precompute :meth:`x0_eps_at`'s tables for states like ``like``.

        ``evaluated``: the network is evaluated only at the first ``evaluated`` times (default: all); the
        others (a sampler's end point) are only range-checked, and their ``alpha``/``sigma`` are returned
        in the table like the rest. Raises ``ValueError`` naming the problem. Host syncs happen here,
        not in the sampling loop.
        """
        check_tensor(like, "x", floating=True)
        t64 = torch.as_tensor(t).detach()
        if t64.dtype != torch.float64 or t64.device != like.device or t64.ndim != 1:
            t64 = t64.to(device=like.device, dtype=torch.float64).reshape(-1)
        self._check_range(t64, "timesteps")
        k, b = t64.numel(), like.shape[0]
        a, s = self.schedule.alpha_sigma(t64, check=False)
        if a.dtype != torch.float64:
            a, s = a.to(torch.float64), s.to(torch.float64)
        cx0, ceps, redo = self._coefficients(t64, like.dtype, k if evaluated is None else evaluated, (a, s))
        tin = t64 if self.dtype is None else t64.to(self.dtype if self.dtype.is_floating_point else t64.dtype)
        cls = type(self)
        fallback = cls.x0_eps is not Denoiser.x0_eps or cls.__call__ is not Denoiser.__call__ or "x0_eps" in vars(self)
        return PreparedTimes(
            t=t64,
            alpha=a,
            sigma=s,
            net_t=list(tin[:, None].expand(k, b).unbind()),
            x0_map=_unbind_maps(cx0, k),
            eps_map=_unbind_maps(ceps, k),
            redo_eps=_unbind_maps(redo, k),
            net_dtype=self.dtype if self.dtype not in (None, like.dtype) else None,
            fallback=fallback,
        )

    def _net_at(self, x: Tensor, times: PreparedTimes, k: int, cond: Any) -> Tensor:
        out = self.net(x if times.net_dtype is None else x.to(times.net_dtype), times.net_t[k], cond)
        self.nfe += 1
        if out.shape != x.shape:
            raise ValueError(f"net output: expected shape {tuple(x.shape)}, got {tuple(out.shape)}")
        return out if out.dtype == x.dtype else out.to(x.dtype)

    def x0_eps_at(self, x: Tensor, times: PreparedTimes, k: int, cond: Any = None) -> tuple[Tensor, Tensor]:
        """``x0_eps(x, times.t[k], cond)`` from the precomputed tables: no schedule interpolation, no
        validation, no host sync (``times`` was checked by :meth:`prepare_times`). A subclass that
        overrides :meth:`x0_eps` (e.g. an inverse-problem correction) is called through it instead."""
        if times.fallback:
            return self.x0_eps(x, times.t[k], cond)
        out = self._net_at(x, times, k, cond)
        x0, eps = _linear(times.x0_map[k], x, out), _linear(times.eps_map[k], x, out)
        if self.x0_correction is not None:
            x0, eps = self._correct(x, x0, eps, times.redo_eps[k])
        return x0, eps

    def x0_at(self, x: Tensor, times: PreparedTimes, k: int, cond: Any = None) -> Tensor:
        """``x0_eps_at(...)[0]``, without forming ``eps``."""
        if times.fallback:
            return self.x0_eps(x, times.t[k], cond)[0]
        x0 = _linear(times.x0_map[k], x, self._net_at(x, times, k, cond))
        return x0 if self.x0_correction is None else self.x0_correction(x0)

    def eps_at(self, x: Tensor, times: PreparedTimes, k: int, cond: Any = None) -> Tensor:
        """``x0_eps_at(...)[1]``, without forming ``x0`` when no x0 correction is set."""
        if times.fallback or self.x0_correction is not None:
            return self.x0_eps_at(x, times, k, cond)[1]
        return _linear(times.eps_map[k], x, self._net_at(x, times, k, cond))

    def with_net(self, net: NetFn) -> Denoiser:
        """A copy of this denoiser around another network function (same schedule, type and options)."""
        return Denoiser(
            net,
            self.schedule,
            self.prediction_type,
            self.dtype,
            self.validate,
            self.module,
            x0_correction=self.x0_correction,
            recompute_eps=self.recompute_eps,
        )


# -------------------------------------------------------------------------------------------------
# Adapters
# -------------------------------------------------------------------------------------------------


def from_callable(fn: NetFn, schedule: NoiseSchedule, prediction_type: str = "epsilon", **kw: Any) -> Denoiser:
    """Wrap any user callable ``fn(x_t, t, cond)``."""
    return Denoiser(fn, schedule, prediction_type, **kw)


def diffusers_denoiser_options(scheduler_or_config: Any) -> dict[str, Any]:
    """The :class:`Denoiser` options a diffusers scheduler (object, ``.config`` or dict) asks for:
    ``prediction_type``; ``x0_correction`` from ``thresholding`` (:class:`DynamicThreshold` with
    ``dynamic_thresholding_ratio``, ``sample_max_value``; it takes precedence, as in diffusers) or
    ``clip_sample`` (:class:`ClipX0` with ``clip_sample_range``); ``recompute_eps`` (``False`` for the
    DDIM schedulers of :data:`KEEP_EPS_CLASSES`, whose step keeps the network's eps). Raises
    ``ValueError`` naming an entry diffzoo cannot honour."""
    cfg, cls = diffusers_config(scheduler_or_config)
    check_diffusers_config(cfg)
    correction: X0Correction | None = None
    if cfg.get("thresholding", False):
        correction = DynamicThreshold(
            float(cfg.get("dynamic_thresholding_ratio", 0.995)), float(cfg.get("sample_max_value", 1.0))
        )
    elif cfg.get("clip_sample", False):
        correction = ClipX0(float(cfg.get("clip_sample_range", 1.0)))
    return {
        "prediction_type": DIFFUSERS_PREDICTION_TYPES[cfg.get("prediction_type", "epsilon")],
        "x0_correction": correction,
        "recompute_eps": cls not in KEEP_EPS_CLASSES,
    }


def from_diffusers_unet(
    unet: Any,
    scheduler_or_config: Any = None,
    schedule: NoiseSchedule | None = None,
    prediction_type: str | None = None,
    **kw: Any,
) -> Denoiser:
    """Wrap a diffusers ``UNet2DModel`` or ``UNet2DConditionModel`` with its scheduler's configuration.

    ``cond`` is passed as ``class_labels`` to a ``UNet2DModel`` and as ``encoder_hidden_states`` to a
    ``UNet2DConditionModel`` (a dict ``cond`` is passed as keyword arguments). From the given diffusers
    scheduler / config come the schedule (:func:`~diffzoo.core.schedules.from_diffusers_config`: betas,
    zero terminal SNR, end of sampling), the prediction type and the x0 correction
    (:func:`diffusers_denoiser_options`: ``clip_sample``, ``thresholding``); explicit ``schedule``,
    ``prediction_type``, ``x0_correction`` or ``recompute_eps`` arguments take precedence. An entry
    diffzoo cannot honour raises ``ValueError`` naming it.
    """
    opts: dict[str, Any] = {}
    if scheduler_or_config is not None:
        opts = diffusers_denoiser_options(scheduler_or_config)
        if schedule is None:
            schedule = from_diffusers_config(scheduler_or_config)
    elif schedule is None:
        raise ValueError("scheduler_or_config: give a diffusers scheduler/config or an explicit schedule")
    if prediction_type is None:
        prediction_type = opts.get("prediction_type", "epsilon")
    for key in ("x0_correction", "recompute_eps"):
        if key in opts:
            kw.setdefault(key, opts[key])
    is_cond = (
        type(unet).__name__ == "UNet2DConditionModel"
        or hasattr(unet.config, "cross_attention_dim")
        and getattr(unet.config, "cross_attention_dim", None) is not None
    )

    def net(x: Tensor, t: Tensor, cond: Any) -> Tensor:
        if isinstance(cond, dict):
            return unet(x, t, **cond).sample
        if is_cond:
            return unet(x, t, encoder_hidden_states=cond).sample
        return unet(x, t, class_labels=cond).sample

    return Denoiser(net, schedule, prediction_type, module=unet, **kw)
