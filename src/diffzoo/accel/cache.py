"""Feature caching without retraining: Faster Diffusion's encoder propagation and the DeepCache baseline.

* **Faster Diffusion** (Li, Hu, Wang, ..., Yang, *Faster Diffusion: Rethinking the Role of the Encoder for
  Diffusion Model Inference*, arXiv 2312.09608; official code ``hutaiHang/Faster-Diffusion``,
  ``utils_sd.py``). At a *key* step the whole UNet runs and the encoder's features (the skip features and
  the middle block's output) are cached; at a non-key step the encoder and middle block are skipped and
  only the decoder runs, on the cached features with the step's *own* time embedding (and condition).
  Because the decoder then does not depend on the current state, the *parallel* mode runs the decoders
  of a key step and of all the non-key steps that follow it in one batch (stacked time embeddings) and
  hands out the stored outputs as the sampler reaches those steps. *Prior noise injection*
  (:func:`prior_noise_injection`): ``z_t <- z_t + 0.003 z_T`` before every network call with ``t / T <
  0.5``, to restore high-frequency detail.
* **DeepCache** (Ma, Fang, Wang, *DeepCache: Accelerating Diffusion Models for Free*, arXiv 2312.00858;
  the ``DeepCache`` PyPI package is the behavioural reference). At a full step the whole UNet runs and the
  input of the up level ``L - depth`` (the deep branch's output) is cached; at the other steps only the
  shallow branch runs (input convolution, the first ``depth`` down levels, the last ``depth`` up levels on
  the cached deep feature, output head). With uniform full steps every ``N`` steps this is its "uniform
  1:N" strategy at block granularity.

Both are network functions ``net(x, t, cond)`` over a :class:`~diffzoo.accel.split.UNetSplit`, so a
denoiser built on them (:func:`cached_denoiser`) works with every sampler of :mod:`diffzoo.sampling`, with
classifier-free guidance (wrap the plain denoiser, then apply :func:`~diffzoo.core.guidance.cfg_denoiser`:
the cache then holds the ``[cond; uncond]`` batch), and, through :class:`CachedUNet` (a drop-in for a
diffusers UNet inside a :class:`~diffzoo.latent.LatentModel`), with editing and inversion.

Which calls are key calls: the wrapper knows the sampling grid (``timesteps``, model times) and the key
step indices (step 0 is the noisiest and must be a key step). A call at grid time ``t_i`` is a key call
when ``i`` is a key step; a call at a time off the grid (a solver's stage point) belongs to the step whose
interval holds it (so "every step a key step" runs the full network at every call); a call whose batch
differs from the cached one, or whose samples are at different times, runs the full network.
The cache is the only state; :meth:`CachedNet.reset` clears it (a new run refreshes it at step 0 anyway).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from diffzoo.accel.split import Features, UNetSplit, repeat_batch, split_unet
from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_choice, check_int, check_range, check_tensor
from diffzoo.core.schedules import NoiseSchedule

Tensor = torch.Tensor

#: Faster Diffusion's key steps for 50 DDIM / DPM-Solver steps (0-indexed, step 0 the noisiest;
#: ``utils_sd.py``, mode ``50ls``).
PAPER_KEY_STEPS_50 = (0, 1, 2, 3, 5, 10, 15, 25, 35)

CACHE_METHODS = ("faster-diffusion", "deepcache")
CACHES = CACHE_METHODS  # alias


def key_steps(num_steps: int, spec: str | int | Iterable[int] = "paper") -> tuple[int, ...]:
    """Key-step indices for ``num_steps`` sampling steps.

    ``spec``: ``"paper"`` (the 50-step set ``{0,1,2,3,5,10,15,25,35}`` scaled by ``num_steps / 50``),
    ``"uniform:K"`` or an int ``K`` (every ``K``-th step: 0, K, 2K, ...; ``K = 1`` = every step), ``"all"``,
    or an explicit iterable of indices (must contain 0, all in ``[0, num_steps)``).
    """
    check_int(num_steps, "num_steps", 1)
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "paper":
            return tuple(sorted({min(num_steps - 1, round(k * num_steps / 50)) for k in PAPER_KEY_STEPS_50}))
        if s == "all":
            return tuple(range(num_steps))
        if s.startswith("uniform:"):
            try:
                spec = int(s.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"key_steps: expected 'uniform:K' with an integer K, got {spec!r}") from None
        else:
            raise ValueError(f"key_steps: expected 'paper', 'all', 'uniform:K' or a list of indices, got {spec!r}")
    if isinstance(spec, bool):
        raise TypeError("key_steps: expected 'paper', 'uniform:K', an int K or a list of step indices, got bool")
    if isinstance(spec, int):
        check_int(spec, "key_steps", 1)
        return tuple(range(0, num_steps, spec))
    try:
        idx = sorted({int(i) for i in spec})
    except (TypeError, ValueError):
        raise TypeError(f"key_steps: expected step indices, got {spec!r}") from None
    if not idx or idx[0] != 0:
        raise ValueError(f"key_steps: must include step 0 (the first call fills the cache), got {idx}")
    if idx[-1] >= num_steps or idx[0] < 0:
        raise ValueError(f"key_steps: indices must lie in [0, {num_steps}), got {idx}")
    return tuple(idx)


def _grid(timesteps: Tensor | Sequence[float]) -> Tensor:
    ts = torch.as_tensor(timesteps, dtype=torch.float64).detach().cpu().reshape(-1)
    if ts.numel() < 2:
        raise ValueError(f"timesteps: expected a sampling grid of at least 2 times, got {ts.numel()}")
    if not bool(torch.isfinite(ts).all()) or not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("timesteps: expected a finite, strictly decreasing sampling grid")
    return ts


class CachedNet:
    """Base of the caching network functions ``net(x, t, cond)``; subclasses define :meth:`_full` /
    :meth:`_partial`. Counts ``full_calls`` and ``partial_calls`` (network calls of each kind)."""

    method = "none"

    def __init__(
        self,
        model: Any,
        timesteps: Tensor | Sequence[float],
        keys: str | int | Iterable[int] = "paper",
    ):
        self.split: UNetSplit = split_unet(model)
        grid = _grid(timesteps)
        self.times = grid[:-1]  # the evaluated grid times (the last grid point is the end of sampling)
        self.num_steps = self.times.numel()
        self.key_steps = key_steps(self.num_steps, keys)
        self._key = set(self.key_steps)
        self.full_calls = 0
        self.partial_calls = 0
        self.reset()

    def reset(self) -> None:
        """Drop the cache (the next call runs the full network)."""
        self._shape: tuple[int, ...] | None = None

    def step_index(self, t: Tensor) -> tuple[int, bool]:
        """``(i, on_grid)``: the grid step of model times ``t`` (one per sample) -- for a time off the grid,
        the step whose interval ``(t_{i+1}, t_i)`` holds it; ``(-1, False)`` when the samples are at
        different times (no caching)."""
        t = torch.as_tensor(t).detach().reshape(-1).to("cpu", torch.float64)
        t0 = t[0]
        if t.numel() > 1 and not bool((t == t0).all()):
            return -1, False
        d = (self.times - t0).abs()
        k = int(d.argmin())
        if float(d[k]) <= 1e-4 * max(1.0, abs(float(t0))):
            return k, True
        return max(0, int((self.times > t0).sum()) - 1), False

    def __call__(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        check_tensor(x, "x", floating=True)
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        i, on_grid = self.step_index(t)
        if i == -1:
            self.full_calls += 1
            return self.split(x, t, cond)
        if self._shape != tuple(x.shape) or i in self._key:
            self.full_calls += 1
            out = self._full(x, t, cond, i if on_grid else None)
            self._shape = tuple(x.shape)
            return out
        self.partial_calls += 1
        return self._partial(x, t, cond, i if on_grid else None)

    def _full(self, x: Tensor, t: Tensor, cond: Any, i: int | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _partial(self, x: Tensor, t: Tensor, cond: Any, i: int | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class FasterDiffusionNet(CachedNet):
    """Faster Diffusion's encoder propagation (see the module docstring); ``parallel`` batches the decoders
    of each key step and its following non-key steps into one call."""

    method = "faster-diffusion"

    def __init__(self, model: Any, timesteps: Tensor | Sequence[float], keys: Any = "paper", parallel: bool = False):
        super().__init__(model, timesteps, keys)
        self.parallel = bool(parallel)

    def reset(self) -> None:
        super().reset()
        self._feats: Features | None = None
        self._stored: dict[int, Tensor] = {}

    def _following(self, i: int) -> list[int]:
        out = [i]
        j = i + 1
        while j < self.num_steps and j not in self._key:
            out.append(j)
            j += 1
        return out

    def _full(self, x: Tensor, t: Tensor, cond: Any, i: int | None) -> Tensor:
        split = self.split
        ctx = split.context(x, t, cond)
        self._feats = feats = split.encode(x, ctx)
        self._stored = {}
        if not self.parallel or i is None:
            return split.decode(feats, ctx)[0]
        steps = self._following(i)
        k, b = len(steps), x.shape[0]
        if k == 1:
            return split.decode(feats, ctx)[0]
        t_all = torch.cat([self.times[j].to(t).expand(b) for j in steps])
        ctx_all = split.context(repeat_batch(x, k), t_all, repeat_batch(cond, k))
        out = split.decode(Features(repeat_batch(feats.h, k), tuple(repeat_batch(feats.skips, k))), ctx_all)[0]
        outs = out.chunk(k)
        self._stored = dict(zip(steps[1:], outs[1:]))
        return outs[0]

    def _partial(self, x: Tensor, t: Tensor, cond: Any, i: int | None) -> Tensor:
        if i is not None and i in self._stored:
            return self._stored[i]
        assert self._feats is not None
        return self.split.decode(self._feats, self.split.context(x, t, cond))[0]


class DeepCacheNet(CachedNet):
    """DeepCache: full network at key steps (caching the deep branch's output), the shallow branch of
    ``depth`` levels elsewhere."""

    method = "deepcache"

    def __init__(self, model: Any, timesteps: Tensor | Sequence[float], keys: Any = "uniform:3", depth: int = 1):
        super().__init__(model, timesteps, keys)
        check_int(depth, "depth", 1)
        if depth >= self.split.num_levels + 1:
            raise ValueError(f"depth: the UNet has {self.split.num_levels} levels; depth must be <= that, got {depth}")
        self.depth = int(depth)

    def reset(self) -> None:
        super().reset()
        self._deep: Tensor | None = None

    def _full(self, x: Tensor, t: Tensor, cond: Any, i: int | None) -> Tensor:
        split = self.split
        ctx = split.context(x, t, cond)
        out, self._deep = split.decode(split.encode(x, ctx), ctx, capture=split.num_levels - self.depth)
        return out

    def _partial(self, x: Tensor, t: Tensor, cond: Any, i: int | None) -> Tensor:
        assert self._deep is not None
        return self.split.shallow(x, self.split.context(x, t, cond), self._deep, self.depth)


def cached_net(
    model: Any,
    timesteps: Tensor | Sequence[float],
    method: str = "faster-diffusion",
    keys: str | int | Iterable[int] | None = None,
    *,
    parallel: bool = False,
    depth: int = 1,
) -> CachedNet:
    """A caching network function for ``model`` over the sampling grid ``timesteps`` (model times).

    ``method``: ``faster-diffusion`` (``keys`` default ``"paper"``; ``parallel``) or ``deepcache`` (``keys``
    default ``"uniform:3"``; ``depth``).
    """
    check_choice(method, CACHE_METHODS, "method")
    if method == "faster-diffusion":
        return FasterDiffusionNet(model, timesteps, "paper" if keys is None else keys, parallel=parallel)
    if parallel:
        raise ValueError("parallel: only Faster Diffusion's decoders can run in parallel (DeepCache's depend on x)")
    return DeepCacheNet(model, timesteps, "uniform:3" if keys is None else keys, depth=depth)


def _is_plain(den: Denoiser) -> bool:
    net = den.net
    return net is den.module or getattr(net, "__qualname__", "") == "from_diffusers_unet.<locals>.net"


def cached_denoiser(
    denoiser: Denoiser,
    timesteps: Tensor | Sequence[float],
    method: str = "faster-diffusion",
    keys: str | int | Iterable[int] | None = None,
    *,
    parallel: bool = False,
    depth: int = 1,
) -> Denoiser:
    """``denoiser`` with its network replaced by :func:`cached_net` over its module (same schedule,
    prediction type and options). ``denoiser`` must be the plain model denoiser (``Denoiser(unet, ...)``
    or :func:`~diffzoo.core.denoiser.from_diffusers_unet`); apply classifier-free guidance afterwards.
    The returned denoiser's ``net`` is the :class:`CachedNet` (its ``full_calls``/``partial_calls``)."""
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser: expected a diffzoo Denoiser, got {type(denoiser).__name__}")
    if denoiser.module is None:
        raise ValueError("denoiser: has no network module to split (build it with Denoiser(unet, ...))")
    if not _is_plain(denoiser):
        raise ValueError(
            "denoiser: wrap the plain model denoiser (before classifier-free guidance or other net wrappers); "
            "its network function is not the module's own call"
        )
    net = cached_net(denoiser.module, timesteps, method, keys, parallel=parallel, depth=depth)
    return denoiser.with_net(net)


class _Output:
    __slots__ = ("sample",)

    def __init__(self, sample: Tensor):
        self.sample = sample

    def __getitem__(self, k: int) -> Tensor:
        if k != 0:
            raise IndexError(k)
        return self.sample


class CachedUNet(torch.nn.Module):
    """A diffusers-UNet drop-in whose call goes through a :class:`CachedNet`: ``forward(sample, timestep,
    encoder_hidden_states=None, class_labels=None, return_dict=True)``; other attributes (``config``,
    ``dtype``, attention processors, ...) are the wrapped UNet's. Put it in a latent model with
    ``dataclasses.replace(model, unet=CachedUNet(net))`` to cache inside editing and inversion.

    Prompt-to-prompt attention control counts attention calls per UNet call; decoder-only calls run fewer
    attention layers, so a controller's step count is wrong under the cache (editing refuses the pair).
    """

    def __init__(self, net: CachedNet):
        super().__init__()
        if not isinstance(net, CachedNet):
            raise TypeError(f"net: expected a CachedNet (cached_net(...)), got {type(net).__name__}")
        self.unet = net.split.module
        self.cache = net

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["unet"], name)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float,
        encoder_hidden_states: Tensor | None = None,
        class_labels: Tensor | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        extra = sorted(k for k, v in kwargs.items() if v is not None)
        if extra:
            raise ValueError(f"kwargs: {extra} are not supported by the cached UNet")
        if encoder_hidden_states is not None and class_labels is not None:
            cond: Any = {"encoder_hidden_states": encoder_hidden_states, "class_labels": class_labels}
        else:
            cond = encoder_hidden_states if encoder_hidden_states is not None else class_labels
        out = self.cache(sample, torch.as_tensor(timestep, device=sample.device), cond)
        return _Output(out) if return_dict else (out,)


def cache_latent_model(
    model: Any,
    timesteps: Tensor | Sequence[float],
    method: str = "faster-diffusion",
    keys: str | int | Iterable[int] | None = None,
    *,
    parallel: bool = False,
    depth: int = 1,
) -> Any:
    """A copy of the latent model ``model`` (a :class:`~diffzoo.latent.LatentModel` or any dataclass with a
    ``unet`` field) whose UNet goes through :func:`cached_net` over ``timesteps`` (model times of the grid
    the caller will run; calls off the grid fall into the interval that holds them). Used by
    ``diffzoo edit --cache``; prompt-to-prompt attention control refuses a cached UNet (see
    :class:`CachedUNet`), so edit with ``p2p="none"``. Inversion passes run ascending times: their first
    call finds an empty cache and runs the full network, and exact round trips (EDICT, BDIA) stop being
    exact, because a non-key call's output depends on the last key call."""
    if not dataclasses.is_dataclass(model) or not hasattr(model, "unet"):
        raise TypeError(f"model: expected a latent model with a unet field, got {type(model).__name__}")
    if isinstance(model.unet, CachedUNet):
        raise ValueError("model: its UNet is already cached")
    net = cached_net(model.unet, timesteps, method, keys, parallel=parallel, depth=depth)
    return dataclasses.replace(model, unet=CachedUNet(net))


def prior_noise_injection(
    x_T: Tensor, schedule: NoiseSchedule, scale: float = 0.003, below: float = 0.5
) -> Callable[[dict], Tensor | None]:
    """A sampler callback adding ``scale * x_T`` to the state before every network call at ``t / T < below``
    (Faster Diffusion's prior noise injection; ``T`` = the schedule's training horizon: ``t_max + 1`` for a
    discrete schedule, ``t_max`` for a continuous one). ``x_T`` is the initial noise of the run."""
    check_tensor(x_T, "x_T", floating=True)
    check_range(scale, "scale", 0.0, math.inf)
    check_range(below, "below", 0.0, 1.0)
    horizon = schedule.t_max + 1 if schedule.kind == "discrete" else schedule.t_max
    end = schedule.t_end

    def callback(d: dict) -> Tensor | None:
        s = float(d["s"])
        if s > end and s / horizon < below:
            return d["x"] + scale * x_T.to(d["x"])
        return None

    return callback


# ------------------------------------------------------------------------------------------------------
# The premise of Faster Diffusion: encoder features change little between adjacent steps
# ------------------------------------------------------------------------------------------------------


class FeatureRecorder:
    """A network function running ``model`` through its split and recording, per call, the output of every
    encoder level (down levels, then the middle block) and decoder level (up levels), in ``records``."""

    def __init__(self, model: Any):
        self.split = split_unet(model)
        self.records: list[tuple[list[Tensor], list[Tensor]]] = []

    def __call__(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        ctx = self.split.context(x, t, cond)
        enc: list[Tensor] = []
        dec: list[Tensor] = []
        out = self.split.decode(self.split.encode(x, ctx, record=enc), ctx, record=dec)[0]
        self.records.append(([e.detach().clone() for e in enc], [d.detach().clone() for d in dec]))
        return out

    def block_names(self) -> list[str]:
        n = self.split.num_levels
        return [f"down{i}" for i in range(n)] + ["mid"] + [f"up{j}" for j in range(n)]

    def relative_changes(self) -> Tensor:
        """``(calls - 1, blocks)``: ``|f_k - f_{k-1}| / |f_{k-1}|`` per block between adjacent calls (Frobenius
        norms over the whole batch); blocks as :meth:`block_names`."""
        rows = []
        for (e0, d0), (e1, d1) in zip(self.records[:-1], self.records[1:]):
            prev, cur = e0 + d0, e1 + d1
            rows.append([float((b - a).norm() / a.norm().clamp_min(1e-12)) for a, b in zip(prev, cur)])
        return torch.tensor(rows, dtype=torch.float64)


def theoretical_speedup(num_steps: int, num_keys: int, cost_full: float, cost_partial: float) -> float:
    """``S cost_full / (K cost_full + (S - K) cost_partial)`` (the Faster Diffusion brief's formula)."""
    return num_steps * cost_full / (num_keys * cost_full + (num_steps - num_keys) * cost_partial)


__all__ = [
    "CACHES",
    "CACHE_METHODS",
    "PAPER_KEY_STEPS_50",
    "CachedNet",
    "CachedUNet",
    "DeepCacheNet",
    "FasterDiffusionNet",
    "FeatureRecorder",
    "cache_latent_model",
    "cached_denoiser",
    "cached_net",
    "key_steps",
    "prior_noise_injection",
    "theoretical_speedup",
]
