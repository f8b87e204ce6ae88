"""Shared pieces of every sampler: grid tables, the two transfer forms, noise, progress and callbacks.

Every deterministic move from model time ``t`` to ``s`` in diffzoo is the DDIM transfer
``x_s = alpha_s x0 + sigma_s eps`` (:func:`diffzoo.core.parameterization.ddim_step`) applied to a
consistent pair ``(x0, eps)`` with ``x_t = alpha_t x0 + sigma_t eps``. Solvers differ only in how they
build that pair:

* from a combined noise estimate ``eps'`` (PLMS, F-PNDM, Heun): ``x0' = (x_t - sigma_t eps') / alpha_t``
  -- :attr:`Grid.eps_transfer`; this is the PNDM transfer ``phi`` (Liu et al. 2022, Eq. 9) and, in the
  VE frame ``x / alpha``, the Euler/Heun update ``z + (sigma_s - sigma_t) d`` of Karras et al. (2022);
  undefined where ``alpha_t = 0`` (zero terminal SNR), which :func:`prepare` rejects at entry;
* from a combined data estimate ``D`` (DPM-Solver++, Euler): ``eps' = (x_t - alpha_t D) / sigma_t`` --
  :attr:`Grid.x0_transfer`; this equals ``(sigma_s/sigma_t) x_t + alpha_s (1 - e^{-h}) D`` (Lu et al.
  2022b, Eq. 9), ``h = lambda_s - lambda_t``, and k-diffusion's Euler step ``z + (sigma_s - sigma_t)
  (z - D) / sigma_t``; exact at ``alpha_t = 0``.

Both are :func:`~diffzoo.core.parameterization.ddim_step` with the other member of the pair substituted
(:func:`~diffzoo.core.parameterization.ddim_transfer_coefficients`): ``x_s = c_x x_t + c_e e``, with the
coefficients of every step computed once per grid. The substituted member is formed only for callbacks.

Where the checks happen: :func:`prepare` validates the inputs and the whole grid once (range, order,
``x0``/``eps`` defined at every evaluated time) and precomputes every schedule value and conversion
coefficient the loop needs (:meth:`Denoiser.prepare_times`), so a step is the network call plus a few
fused tensor kernels, without host syncs; :func:`finish` checks the result once when the denoiser
validates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from tqdm.auto import tqdm

from diffzoo.core.denoiser import Denoiser, PreparedTimes
from diffzoo.core.errors import check_batch, check_finite, check_tensor
from diffzoo.core.parameterization import ddim_transfer_coefficients, to_x0_eps
from diffzoo.core.random import Generator, generator_list, randn
from diffzoo.sampling.timesteps import validate_timesteps

Tensor = torch.Tensor
Callback = Callable[[dict], "Tensor | None"]
Coefficients = tuple[Tensor, float]  # (c_x, c_e) of x_s = c_x x + c_e e


class Grid:
    """Schedule tables of a sampling grid, precomputed before the loop.

    ``t`` stays float64 (model times); ``times`` holds the denoiser's tables at the grid times (the
    network is evaluated at the first ``N``; at all ``N + 1`` with ``evaluate_end``). For the step
    kernels: ``alpha_f``, ``sigma_f`` (Python floats) and, built on first use, ``alpha_0d`` (0-d tensors
    in the state dtype), the per-step transfer coefficients ``eps_transfer`` and ``x0_transfer``, and the
    vectors ``alpha``, ``sigma``, ``log_snr`` in the state dtype.
    """

    def __init__(self, t: Tensor, times: PreparedTimes, dtype: torch.dtype):
        self.t, self.times, self._dtype = t, times, dtype
        self.extra: PreparedTimes | None = None  # tables at extra stage times (prepare's extra_times)
        self.alpha_f: list[float] = times.alpha.tolist()
        self.sigma_f: list[float] = times.sigma.tolist()

    @property
    def num_steps(self) -> int:
        return self.t.numel() - 1

    @functools.cached_property
    def alpha(self) -> Tensor:
        return self.times.alpha.to(self._dtype)

    @functools.cached_property
    def sigma(self) -> Tensor:
        return self.times.sigma.to(self._dtype)

    @functools.cached_property
    def log_snr(self) -> Tensor:
        """``log(alpha^2 / sigma^2)``: ``+inf`` where ``sigma = 0`` (the clean end), ``-inf`` where ``alpha = 0``."""
        return (2.0 * (torch.log(self.times.alpha) - torch.log(self.times.sigma))).to(self._dtype)

    @functools.cached_property
    def alpha_0d(self) -> list[Tensor]:
        return list(self.alpha.unbind())

    @functools.cached_property
    def eps_transfer(self) -> list[Coefficients]:
        """Per step ``i``: the transfer ``t_i -> t_{i+1}`` along a noise estimate (:func:`transfer`)."""
        a, s = self.times.alpha, self.times.sigma
        return transfer_coefficients(a[:-1], s[:-1], a[1:], s[1:], "eps", self._dtype)

    @functools.cached_property
    def x0_transfer(self) -> list[Coefficients]:
        """Per step ``i``: the transfer ``t_i -> t_{i+1}`` along a data estimate (:func:`transfer`)."""
        a, s = self.times.alpha, self.times.sigma
        return transfer_coefficients(a[:-1], s[:-1], a[1:], s[1:], "x0", self._dtype)


def prepare(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Tensor,
    *,
    moves_along_eps: bool = False,
    evaluate_end: bool = False,
    extra_times: Tensor | None = None,
    name: str = "sampler",
) -> Grid:
    """Validate the inputs of a sampler and precompute its schedule tables (all host syncs are here).

    ``moves_along_eps``: the sampler moves with :attr:`Grid.eps_transfer` from each grid point, so it needs
    ``alpha > 0`` there and a consistent ``(x0, eps)`` pair. ``evaluate_end``: the network is also
    evaluated at the last grid time. ``extra_times``: further model times the network is evaluated at
    (stage points, e.g. F-PNDM's midpoints), prepared in the same pass as ``Grid.extra``.
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser: expected a diffzoo Denoiser, got {type(denoiser).__name__}")
    check_tensor(x, "x", floating=True)
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: samplers run in float32 or float64, got {x.dtype}")
    check_batch(x, "x")
    if x.device.type == "meta":
        raise ValueError("x: a meta tensor has no values; give the state on a real device")
    check_finite(x, "x")
    t = validate_timesteps(denoiser.schedule, timesteps).to(x.device)
    n_extra = 0 if extra_times is None else extra_times.numel()
    both = t if extra_times is None else torch.cat([extra_times.to(t), t])
    extra, times = denoiser.prepare_times(both, x, evaluated=both.numel() - (0 if evaluate_end else 1)).split(n_extra)
    if moves_along_eps:
        if denoiser.x0_correction is not None and not denoiser.recompute_eps:
            raise ValueError(
                f"denoiser: {name} moves along eps, so it would ignore an x0 correction that keeps "
                "the network's eps (recompute_eps=False, diffusers' DDIM convention); build the "
                "denoiser with recompute_eps=True"
            )
        if bool((times.alpha[:-1] == 0).any()):
            raise ValueError(
                f"timesteps: {name} moves along eps from t = {float(t[0]):g} where alpha = 0 (zero "
                "terminal SNR), which is undefined; use ddim, dpmpp_2m or euler, or start the grid "
                "below that time"
            )
    g = Grid(t, times, x.dtype)
    g.extra = extra
    return g


def finish(denoiser: Denoiser, x: Tensor) -> Tensor:
    """The sampler's result, checked once for NaN/inf when the denoiser validates (one host sync)."""
    if denoiser.validate and not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            "x: sampling produced NaN or inf (non-finite network output or an overflowing "
            "state); call denoiser.x0_eps(x, t) step by step to locate it"
        )
    return x


def transfer_coefficients(
    alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor, sigma_s: Tensor, along: str, dtype: torch.dtype
) -> list[Coefficients]:
    """:func:`~diffzoo.core.parameterization.ddim_transfer_coefficients` per entry of float64 vectors, as
    ``(c_x, c_e)`` pairs (0-d tensor in ``dtype``, Python float) for :func:`transfer`."""
    c_x, c_e = ddim_transfer_coefficients(alpha_t, sigma_t, alpha_s, sigma_s, along)
    return list(zip(c_x.to(dtype).unbind(), c_e.tolist()))


def transfer(x: Tensor, e: Tensor, c: Coefficients) -> Tensor:
    """The DDIM transfer ``x_s = c_x x + c_e e`` along the estimate ``e`` (two fused kernels)."""
    return torch.mul(x, c[0]).add_(e, alpha=c[1])


def pair_from_eps(x: Tensor, eps: Tensor, g: Grid, i: int) -> Tensor:
    """``x0`` consistent with ``eps`` at grid point ``i`` (for callbacks)."""
    return to_x0_eps(eps, "epsilon", x, g.alpha_f[i], g.sigma_f[i])[0]


def pair_from_x0(x: Tensor, x0: Tensor, g: Grid, i: int) -> Tensor:
    """``eps`` consistent with ``x0`` at grid point ``i`` (for callbacks)."""
    return to_x0_eps(x0, "sample", x, g.alpha_f[i], g.sigma_f[i])[1]


_CONSTANTS: dict[tuple[float, torch.dtype, torch.device], Tensor] = {}


def constant(value: float, like: Tensor) -> Tensor:
    """``value`` as a 0-d tensor in ``like``'s dtype and device, created once: multiplying by it is one
    kernel, where a Python scalar is first wrapped and copied into a tensor on every call."""
    key = (value, like.dtype, like.device)
    c = _CONSTANTS.get(key)
    if c is None:
        c = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return c


def noise_like(x: Tensor, generator: Generator) -> Tensor:
    """Standard normal noise shaped like ``x``; a list of generators gives per-sample streams."""
    return randn(x.shape, generator, x.dtype, x.device)


class NoiseSource:
    """Draws :func:`noise_like` noise into one buffer allocated before the loop (the same values as
    :func:`diffzoo.core.random.randn`: ``normal_`` is what ``randn`` does). The returned tensor is
    overwritten by the next :meth:`draw`: consume it at once."""

    def __init__(self, x: Tensor, generator: Generator):
        check_generator(generator, x)
        self.buffer = torch.empty_like(x, memory_format=torch.contiguous_format)
        if generator is None or isinstance(generator, torch.Generator):
            self._parts = [(self.buffer, generator)]
        else:  # one generator per sample: row i from generator[i]
            self._parts = list(zip(self.buffer.unbind(), generator))

    def draw(self) -> Tensor:
        for part, gen in self._parts:
            part.normal_(generator=gen)
        return self.buffer


def check_generator(generator: Generator, x: Tensor) -> None:
    if generator is None or isinstance(generator, torch.Generator):
        return
    if len(generator_list(generator)) != x.shape[0]:
        raise ValueError(f"generator: expected a torch.Generator or a list of {x.shape[0]} generators")


def steps(n: int, progress: bool, desc: str) -> Iterable[int]:
    """``range(n)``, with a tqdm bar when ``progress``."""
    return tqdm(range(n), desc=desc, leave=False) if progress else range(n)


def report(callback: Callback | None, grid: Grid, i: int, x: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """Call ``callback(dict(i, t, s, x, x0, eps))`` after step ``i`` (``x`` is the new state at ``s``) and
    return the state to continue from: the callback's return value when it returns a tensor (a per-step
    hook that edits the state, e.g. prompt-to-prompt's local blend or Direct Inversion's offsets; the
    convention of diffusers' ``callback_on_step_end``), else ``x``."""
    if callback is None:
        return x
    if not callable(callback):
        raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
    out = callback({"i": i, "t": grid.t[i], "s": grid.t[i + 1], "x": x, "x0": x0, "eps": eps})
    if out is None:
        return x
    if not isinstance(out, Tensor) or out.shape != x.shape:
        raise ValueError(f"callback: must return None or a tensor of shape {tuple(x.shape)}")
    return out.to(x.dtype)


def predict(denoiser: Denoiser, x: Tensor, grid: Grid, i: int, cond: Any) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` at grid time ``i`` -- the only way samplers see the network
    (:meth:`Denoiser.x0_eps_at`, i.e. ``denoiser.x0_eps(x, grid.t[i], cond)`` from precomputed tables)."""
    return denoiser.x0_eps_at(x, grid.times, i, cond)


def predict_x0(denoiser: Denoiser, x: Tensor, grid: Grid, i: int, cond: Any) -> Tensor:
    """``predict(...)[0]`` without forming ``eps`` (:meth:`Denoiser.x0_at`)."""
    return denoiser.x0_at(x, grid.times, i, cond)


def predict_eps(denoiser: Denoiser, x: Tensor, grid: Grid, i: int, cond: Any) -> Tensor:
    """``predict(...)[1]`` without forming ``x0`` (:meth:`Denoiser.eps_at`)."""
    return denoiser.eps_at(x, grid.times, i, cond)
