"""Noise processes: one schedule abstraction for every forward process diffzoo drives.

Every Gaussian diffusion used here has the form (Lai et al., *The Principles of Diffusion Models*,
2025, Sec. 2)::

    x_t = alpha(t) * x_0 + sigma(t) * eps,        eps ~ N(0, I)

with log-SNR ``lambda(t) = log(alpha(t)^2 / sigma(t)^2)``. A schedule answers ``alpha``, ``sigma`` and
``log_snr`` for a *model time* ``t`` -- the number the network was trained to receive:

* :class:`DiscreteSchedule` (DDPM-style, Ho et al. 2020): integer timesteps ``0..T-1`` with
  ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``. Fractional timesteps interpolate
  ``log(sigma/alpha)`` linearly between neighbours, as k-diffusion does, so Karras grids work on
  discrete models. The time ``-1`` denotes the end of sampling, with ``abar = final_alpha_cumprod``
  (1.0 for "clean"; diffusers' ``set_alpha_to_one=False`` uses ``abar_0``).
* :class:`ContinuousSchedule`: ``t`` in a real interval (VP-cosine and rectified flow on ``[0, 1]``,
  VE/EDM where ``t = sigma``).

All schedule tensors are precomputed in float64; values are returned in the dtype/device of ``t``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from diffzoo.core.errors import check_choice, check_finite, check_int, check_range

Tensor = torch.Tensor


def _as_time(t: Tensor | float, like: Tensor | None = None) -> Tensor:
    if not torch.is_tensor(t):
        t = torch.tensor(float(t), dtype=torch.float64 if like is None else like.dtype)
    return t


class NoiseSchedule:
    """Base class. Subclasses implement :meth:`alpha_sigma` (and may override the rest).

    Attributes
    ----------
    kind: ``"discrete"`` or ``"continuous"``.
    t_min, t_max: the model-time range the network was trained on (``t_max`` is the noisiest end).
    t_end: the model time at which sampling ends (``-1`` for discrete schedules, ``t_min`` or 0 else).
    """

    kind: str = "continuous"
    name: str = "schedule"
    t_min: float = 0.0
    t_max: float = 1.0
    t_end: float = 0.0

    # --- the two functions that define the process --------------------------------------------
    def alpha_sigma(self, t: Tensor | float, check: bool = True) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def alpha(self, t: Tensor | float) -> Tensor:
        return self.alpha_sigma(t)[0]

    def sigma(self, t: Tensor | float) -> Tensor:
        return self.alpha_sigma(t)[1]

    def log_snr(self, t: Tensor | float) -> Tensor:
        a, s = self.alpha_sigma(t)
        return 2.0 * (torch.log(a) - torch.log(s))

    def d_alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Time derivatives ``(alpha'(t), sigma'(t))`` by autograd on a float64 copy of ``t``."""
        t = _as_time(t)
        tt = t.detach().to(torch.float64).requires_grad_(True)
        with torch.enable_grad():
            a, s = self.alpha_sigma(tt)
            # a constant coefficient (VE/EDM: alpha = 1) has no graph: its derivative is zero
            da = torch.autograd.grad(a.sum(), tt, retain_graph=True)[0] if a.requires_grad else torch.zeros_like(tt)
            ds = torch.autograd.grad(s.sum(), tt)[0] if s.requires_grad else torch.zeros_like(tt)
        return da.to(t.dtype), ds.to(t.dtype)

    # --- k-diffusion's view: the variance-exploding sigma = sigma_t / alpha_t --------------------
    def ve_sigma(self, t: Tensor | float) -> Tensor:
        """``sigma(t) / alpha(t)``: the noise level of the equivalent VE process ``x / alpha``."""
        a, s = self.alpha_sigma(t)
        return s / a

    def t_from_ve_sigma(self, ve_sigma: Tensor) -> Tensor:
        """Inverse of :meth:`ve_sigma` (model time for a VE noise level)."""
        raise NotImplementedError

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}(name={self.name!r}, t_min={self.t_min}, t_max={self.t_max})"


TINY_TERMINAL_ABAR = 2.0**-24  # diffusers' stand-in for a zero terminal abar ("FP16 smallest positive subnormal")


class DiscreteSchedule(NoiseSchedule):
    """A DDPM schedule given by its cumulative products ``abar_t`` (t = 0..T-1).

    ``final_alpha_cumprod`` is the ``abar`` used at the end time ``t = -1`` (1.0 = clean data).

    Zero terminal SNR (Lin et al., *Common Diffusion Noise Schedules and Sample Steps are Flawed*, 2024):
    the last entry may be exactly 0, so ``alpha = 0``, ``sigma = 1`` at ``t = T-1`` (``x_{T-1}`` is pure
    noise; see :func:`rescale_zero_terminal_snr`). There ``log_snr = -inf`` and ``ve_sigma = inf``;
    ``x0`` cannot be recovered from an ``epsilon`` (or ``score``) prediction, while ``v_prediction`` and
    ``sample`` stay exact. On the last interval ``(T-2, T-1)`` fractional times interpolate ``alpha``
    linearly (``log(sigma/alpha)`` is infinite at ``T-1``). diffusers' DPM-Solver, Euler and UniPC
    schedulers store ``2**-24`` instead of 0 (:data:`TINY_TERMINAL_ABAR`), which on a rescaled schedule
    exceeds ``abar_{T-2}``; that one non-monotone last entry is accepted as it is, to reproduce them.
    """

    kind = "discrete"

    def __init__(self, alphas_cumprod: Tensor, final_alpha_cumprod: float = 1.0, name: str = "discrete"):
        acp = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if acp.numel() < 2:
            raise ValueError(f"alphas_cumprod: need at least 2 entries, got {acp.numel()}")
        check_finite(acp, "alphas_cumprod")
        if bool((acp[:-1] <= 0).any() | (acp > 1).any() | (acp[-1] < 0)):
            raise ValueError(
                "alphas_cumprod: every entry must lie in (0, 1] (only the last may be 0: zero terminal SNR)"
            )
        if bool(acp[-1] == 1):
            raise ValueError("alphas_cumprod: every entry is 1, so no timestep adds noise")
        rising = acp[1:] > acp[:-1]
        if acp[-1] == TINY_TERMINAL_ABAR:  # diffusers' stand-in for a zero terminal abar may exceed abar_{T-2}
            rising[-1] = False
        if bool(rising.any()):
            raise ValueError("alphas_cumprod: must be non-increasing in t")
        check_range(final_alpha_cumprod, "final_alpha_cumprod", 0.0, 1.0, lo_open=True)
        if final_alpha_cumprod < float(acp[0]):  # the end of sampling would be noisier than t = 0
            raise ValueError(
                f"final_alpha_cumprod: must be >= alphas_cumprod[0] = {float(acp[0]):.6g} (sampling ends at "
                f"least as clean as t = 0; diffusers' set_alpha_to_one=False uses alphas_cumprod[0]), "
                f"got {final_alpha_cumprod}"
            )
        self.alphas_cumprod = acp
        self.final_alpha_cumprod = float(final_alpha_cumprod)
        self.num_train_timesteps = acp.numel()
        self.zero_terminal_snr = bool(acp[-1] == 0)
        self.name = name
        self.t_min, self.t_max, self.t_end = 0.0, float(acp.numel() - 1), -1.0
        # log(sigma/alpha) per integer step, for fractional-time interpolation (k-diffusion style); +inf at a
        # zero-SNR end
        self._log_ve = 0.5 * (torch.log1p(-acp.clamp(max=1 - 1e-16)) - torch.log(acp))
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(alphas_cumprod, log_ve)`` on ``device`` (copied once per device)."""
        tabs = self._cache.get(device)
        if tabs is None:
            tabs = self._cache[device] = (self.alphas_cumprod.to(device), self._log_ve.to(device))
        return tabs

    @property
    def betas(self) -> Tensor:
        acp = self.alphas_cumprod
        return 1 - acp / torch.cat([acp.new_ones(1), acp[:-1]])

    def check_times(self, t: Tensor) -> None:
        """Raise ``ValueError`` naming ``t`` if any model time lies outside ``[-1, T-1]`` (one host sync)."""
        tf = t.detach().to(torch.float64)
        if bool(((tf >= -1) & (tf <= self.t_max)).logical_not_().any()):  # NaN is out of range too
            raise ValueError(
                f"t: discrete timesteps must lie in [-1, {self.t_max:g}] (got min "
                f"{tf.min().item():g}, max {tf.max().item():g})"
            )

    def _abar(self, t: Tensor) -> Tensor:
        """``abar`` at (possibly fractional) model time ``t``; ``t = -1`` gives the final value.

        No validation and no host sync.
        """
        tf = t if t.dtype == torch.float64 else t.to(torch.float64)
        acp, log_ve = self._tables(t.device)
        tc = tf.clamp(0, self.t_max)
        lo_f = tc.floor()
        w = tc - lo_f
        lo = lo_f.long()
        hi = (lo + 1).clamp_(max=self.num_train_timesteps - 1)
        frac = torch.lerp(log_ve[lo], log_ve[hi], w).mul_(-2).sigmoid_()
        abar = torch.where(w == 0, acp[lo], frac)
        if self.zero_terminal_snr:  # last interval: alpha linear in t, from sqrt(abar_{T-2}) down to 0
            last = (1 - w) * acp[lo].sqrt()
            abar = torch.where((hi == self.num_train_timesteps - 1) & (w > 0), last * last, abar)
        return abar.masked_fill_(tf < 0, self.final_alpha_cumprod)

    def alpha_sigma(self, t: Tensor | float, check: bool = True) -> tuple[Tensor, Tensor]:
        """``(sqrt(abar_t), sqrt(1 - abar_t))``; ``check=False`` skips the range check (hot paths that
        validated their times already)."""
        t = _as_time(t)
        if check and not t.requires_grad:
            self.check_times(t)
        abar = self._abar(t)
        a, s = abar.sqrt(), (1 - abar).clamp_(min=0).sqrt_()
        if t.is_floating_point() and t.dtype != torch.float64:
            a, s = a.to(t.dtype), s.to(t.dtype)
        return a, s

    def d_alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """``(alpha'(t), sigma'(t))`` of the interpolated schedule, in closed form: on the piece
        ``[k, k + 1]`` ``abar = sigmoid(-2 log(sigma/alpha))`` with ``log(sigma/alpha)`` linear (alpha linear on a
        zero-SNR last piece). At an integer ``t`` the derivative of the piece starting there (of the last
        piece at ``t = T - 1``); 0 at the end marker ``t < 0``. (Autograd through :meth:`alpha_sigma` gives
        0 at every integer ``t``, where the table value is selected.)"""
        t = _as_time(t)
        tf = t.detach().to(torch.float64)
        acp, log_ve = self._tables(tf.device)
        n = self.num_train_timesteps
        lo = tf.clamp(0, self.t_max).floor().clamp_(max=n - 2).long()
        abar = self._abar(tf)
        a, s = abar.sqrt(), (1 - abar).clamp(min=0).sqrt()
        d_abar = -2 * abar * (1 - abar) * (log_ve[lo + 1] - log_ve[lo])
        da = d_abar / (2 * a)
        ds = torch.where(s > 0, -d_abar / (2 * s.clamp(min=1e-300)), torch.zeros_like(s))
        if self.zero_terminal_snr:  # last piece: alpha = (1 - w) sqrt(abar_{T-2}), sigma = sqrt(1 - alpha^2)
            last = lo == n - 2
            da_last = -acp[n - 2].sqrt().expand_as(a)
            da = torch.where(last, da_last, da)
            ds = torch.where(last, -a * da_last / s.clamp(min=1e-300), ds)
        zero = tf < 0
        out = t.dtype if t.is_floating_point() else torch.float64
        return da.masked_fill(zero, 0.0).to(out), ds.masked_fill(zero, 0.0).to(out)

    def ve_sigma(self, t: Tensor | float) -> Tensor:
        t = _as_time(t)
        abar = self._abar(t)
        out_dtype = t.dtype if t.is_floating_point() else torch.float64
        return ((1 - abar) / abar).clamp(min=0).sqrt().to(out_dtype)

    def t_from_ve_sigma(self, ve_sigma: Tensor) -> Tensor:
        """Fractional timestep whose VE sigma is ``ve_sigma`` (k-diffusion's ``sigma_to_t``; on a zero-SNR
        schedule the last interval inverts the linear-``alpha`` interpolation and ``inf`` maps to ``T-1``)."""
        ve_sigma = torch.as_tensor(ve_sigma)
        log_s = ve_sigma.to(torch.float64).log()
        acp, log_ve = self._tables(ve_sigma.device)
        dists = log_s[..., None] - log_ve
        lo = (dists >= 0).cumsum(-1).argmax(-1).clamp(max=log_ve.numel() - 2)
        hi = lo + 1
        low, high = log_ve[lo], log_ve[hi]
        w = ((low - log_s) / (low - high)).clamp(0, 1)
        if self.zero_terminal_snr:
            alpha = torch.rsqrt(1 + ve_sigma.to(torch.float64) ** 2)
            w_last = (1 - alpha / acp[-2].sqrt()).clamp(0, 1)
            w = torch.where(hi == log_ve.numel() - 1, w_last, w)
        t = (1 - w) * lo + w * hi
        return t.to(ve_sigma.dtype if ve_sigma.is_floating_point() else torch.float64)

    def sigma_min_max(self) -> tuple[float, float]:
        """The smallest and largest VE sigma of the training grid (for Karras spacing; the largest is
        ``inf`` on a zero-SNR schedule)."""
        ve = self._log_ve.exp()
        return float(ve[0]), float(ve[-1])


def rescale_zero_terminal_snr(alphas_cumprod: Tensor) -> Tensor:
    """Rescale a schedule to zero terminal SNR (Lin et al. 2024, Algorithm 1; diffusers'
    ``rescale_betas_zero_snr``): shift ``sqrt(abar)`` so its last entry is 0 and scale it so its first
    entry is unchanged, ``sqrt(abar') = (sqrt(abar) - sqrt(abar_T)) sqrt(abar_0) / (sqrt(abar_0) - sqrt(abar_T))``."""
    sq = torch.as_tensor(alphas_cumprod, dtype=torch.float64).sqrt()
    first, last = sq[0].clone(), sq[-1].clone()
    sq = (sq - last) * (first / (first - last))
    return sq * sq


# -------------------------------------------------------------------------------------------------
# Discrete factories (beta schedules of DDPM, Stable Diffusion, improved DDPM)
# -------------------------------------------------------------------------------------------------


def _from_betas(betas: Tensor, name: str, final_alpha_cumprod: float = 1.0, args: str = "betas") -> DiscreteSchedule:
    check_range(final_alpha_cumprod, "final_alpha_cumprod", 0.0, 1.0, lo_open=True)
    try:
        return DiscreteSchedule(torch.cumprod(1 - betas.to(torch.float64), 0), final_alpha_cumprod, name=name)
    except ValueError as e:  # e.g. betas so large that alphas_cumprod underflows to 0 before the end
        if not str(e).startswith("alphas_cumprod"):
            raise
        raise ValueError(f"{args}: give a valid {name!r} schedule ({e})") from None


def _check_steps_and_betas(num_train_timesteps: int, **betas: float) -> int:
    """``num_train_timesteps >= 2`` and each beta in ``[0, 1)``, naming the argument."""
    n = check_int(num_train_timesteps, "num_train_timesteps", lo=2)
    for arg, v in betas.items():
        check_range(v, arg, 0.0, 1.0, hi_open=True)
    return n


def linear(
    num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, final_alpha_cumprod: float = 1.0
) -> DiscreteSchedule:
    """DDPM's linear beta schedule (Ho et al. 2020, Sec. 4)."""
    n = _check_steps_and_betas(num_train_timesteps, beta_start=beta_start, beta_end=beta_end)
    betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    return _from_betas(betas, "linear", final_alpha_cumprod, "beta_start, beta_end")


def scaled_linear(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    final_alpha_cumprod: float = 1.0,
) -> DiscreteSchedule:
    """Stable Diffusion's schedule: linear in sqrt(beta) (Rombach et al. 2022)."""
    n = _check_steps_and_betas(num_train_timesteps, beta_start=beta_start, beta_end=beta_end)
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return _from_betas(betas, "scaled_linear", final_alpha_cumprod, "beta_start, beta_end")


def cosine(
    num_train_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999, final_alpha_cumprod: float = 1.0
) -> DiscreteSchedule:
    """Improved DDPM's cosine schedule (Nichol & Dhariwal 2021, Eq. 17), betas clipped at ``max_beta``.

    Same construction as diffusers' ``squaredcos_cap_v2``.
    """

    n = _check_steps_and_betas(num_train_timesteps)
    check_range(s, "s", 0.0, math.inf, hi_open=True)
    check_range(max_beta, "max_beta", 0.0, 1.0, lo_open=True)

    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - f((i + 1) / n) / f(i / n), max_beta) for i in range(n)], dtype=torch.float64)
    return _from_betas(betas, "cosine", final_alpha_cumprod, "s, max_beta")


# -------------------------------------------------------------------------------------------------
# Continuous schedules
# -------------------------------------------------------------------------------------------------


class ContinuousSchedule(NoiseSchedule):
    """A continuous-time schedule defined by closed-form ``alpha(t)`` and ``sigma(t)``.

    ``ve_sigma_fn_inv`` optionally inverts ``t -> sigma/alpha`` in closed form.
    """

    kind = "continuous"

    def __init__(
        self,
        name: str,
        alpha_fn: Callable[[Tensor], Tensor],
        sigma_fn: Callable[[Tensor], Tensor],
        t_min: float = 0.0,
        t_max: float = 1.0,
        t_end: float = 0.0,
        ve_sigma_fn_inv: Callable[[Tensor], Tensor] | None = None,
    ):
        self.name, self.alpha_fn, self.sigma_fn = name, alpha_fn, sigma_fn
        self.t_min, self.t_max, self.t_end = (
            check_range(v, a) for v, a in ((t_min, "t_min"), (t_max, "t_max"), (t_end, "t_end"))
        )
        if not (math.isfinite(self.t_max) and self.t_end <= self.t_min < self.t_max):
            raise ValueError(
                f"t_min, t_max: need t_end <= t_min < t_max < inf, got t_end={self.t_end:g}, t_min={self.t_min:g}, "
                f"t_max={self.t_max:g}"
            )
        self.ve_sigma_fn_inv = ve_sigma_fn_inv

    def check_times(self, t: Tensor) -> None:
        """Raise ``ValueError`` naming ``t`` if a model time is NaN or outside ``[t_end, t_max]`` (up to
        ``1e-6`` relative, the tolerance of :func:`~diffzoo.sampling.timesteps.validate_timesteps`; one host sync)."""
        tf = t.detach().to(torch.float64)
        tol = 1e-6 * max(1.0, abs(self.t_max))
        if bool(((tf >= self.t_end - tol) & (tf <= self.t_max + tol)).logical_not_().any()):
            raise ValueError(
                f"t: model times of schedule {self.name!r} must lie in [{self.t_end:g}, {self.t_max:g}] "
                f"(got min {tf.min().item():g}, max {tf.max().item():g})"
            )

    def alpha_sigma(self, t: Tensor | float, check: bool = True) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))``; ``check=False`` skips the range check (hot paths that validated their times)."""
        t = _as_time(t)
        if check and not t.requires_grad:
            self.check_times(t)
        tf = t if t.is_floating_point() else t.to(torch.float64)
        return self.alpha_fn(tf), self.sigma_fn(tf)

    def t_from_ve_sigma(self, ve_sigma: Tensor) -> Tensor:
        if self.ve_sigma_fn_inv is None:
            raise NotImplementedError(f"schedule {self.name!r} has no closed-form inverse of sigma/alpha")
        return self.ve_sigma_fn_inv(torch.as_tensor(ve_sigma))


def _check_unit_range(t_min: float, t_max: float) -> None:
    """``0 <= t_min < t_max <= 1`` for the schedules defined on the unit interval, naming the argument."""
    check_range(t_min, "t_min", 0.0, 1.0, hi_open=True)
    if not check_range(t_max, "t_max", 0.0, 1.0) > t_min:
        raise ValueError(f"t_max: must exceed t_min={t_min:g}, got {t_max:g}")


def ve(sigma_min: float = 0.002, sigma_max: float = 80.0) -> ContinuousSchedule:
    """Variance exploding (Song et al. 2021): ``alpha = 1``, ``sigma = t``; model time is sigma."""
    check_range(sigma_min, "sigma_min", 0.0, math.inf, hi_open=True)
    if not check_range(sigma_max, "sigma_max", 0.0, math.inf, hi_open=True) > sigma_min:
        raise ValueError(f"sigma_max: must exceed sigma_min={sigma_min:g}, got {sigma_max:g}")
    return ContinuousSchedule(
        "ve",
        lambda t: torch.ones_like(t),
        lambda t: t,
        t_min=sigma_min,
        t_max=sigma_max,
        t_end=0.0,
        ve_sigma_fn_inv=lambda s: s,
    )


def edm(sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5) -> ContinuousSchedule:
    """EDM (Karras et al. 2022): a VE process with ``t = sigma``; pair it with the ``karras`` spacing."""
    check_range(sigma_data, "sigma_data", 0.0, math.inf, lo_open=True, hi_open=True)
    sch = ve(sigma_min, sigma_max)
    sch.name = "edm"
    sch.sigma_data = sigma_data  # type: ignore[attr-defined]
    return sch


def vp_cosine(s: float = 0.008, t_min: float = 1e-4, t_max: float = 1.0 - 1e-4) -> ContinuousSchedule:
    """Continuous VP cosine: ``alpha = cos(pi/2 * (t+s)/(1+s)) / cos(pi/2 * s/(1+s))``, ``sigma^2 = 1-alpha^2``."""
    check_range(s, "s", 0.0, math.inf, hi_open=True)
    _check_unit_range(t_min, t_max)
    c0 = math.cos(math.pi / 2 * s / (1 + s))

    def a(t: Tensor) -> Tensor:
        return torch.cos(math.pi / 2 * (t + s) / (1 + s)) / c0

    def sg(t: Tensor) -> Tensor:
        return (1 - a(t) ** 2).clamp(min=0).sqrt()

    def inv(vs: Tensor) -> Tensor:  # sigma/alpha = tan(theta) relation up to c0
        al = 1 / torch.sqrt(1 + vs.to(torch.float64) ** 2)
        return ((torch.acos((al * c0).clamp(-1, 1)) * 2 / math.pi) * (1 + s) - s).to(vs.dtype)

    return ContinuousSchedule("vp_cosine", a, sg, t_min=t_min, t_max=t_max, t_end=0.0, ve_sigma_fn_inv=inv)


def vp_linear(beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3) -> ContinuousSchedule:
    """Continuous VP-SDE with linear beta(t) (Song et al. 2021): ``log alpha = -b_min t/2 - (b_max-b_min) t^2/4``."""
    check_range(beta_min, "beta_min", 0.0, math.inf, hi_open=True)
    if not check_range(beta_max, "beta_max", 0.0, math.inf, hi_open=True) > beta_min:
        raise ValueError(f"beta_max: must exceed beta_min={beta_min:g}, got {beta_max:g}")
    _check_unit_range(t_min, 1.0)

    def a(t: Tensor) -> Tensor:
        return torch.exp(-0.5 * beta_min * t - 0.25 * (beta_max - beta_min) * t**2)

    def sg(t: Tensor) -> Tensor:
        return (-torch.expm1(-beta_min * t - 0.5 * (beta_max - beta_min) * t**2)).clamp(min=0).sqrt()

    def inv(vs: Tensor) -> Tensor:
        c = torch.log1p(vs.to(torch.float64) ** 2)  # = beta_min t + (bmax-bmin) t^2 / 2
        d = beta_max - beta_min
        return ((-beta_min + torch.sqrt(beta_min**2 + 2 * d * c)) / d).to(vs.dtype)

    return ContinuousSchedule("vp_linear", a, sg, t_min=t_min, t_max=1.0, t_end=0.0, ve_sigma_fn_inv=inv)


def rectified_flow(t_min: float = 0.0, t_max: float = 1.0) -> ContinuousSchedule:
    """Rectified flow / flow matching (Liu et al. 2023): ``alpha = 1 - t``, ``sigma = t``; t = 0 is data."""
    _check_unit_range(t_min, t_max)
    return ContinuousSchedule(
        "rectified_flow",
        lambda t: 1 - t,
        lambda t: t,
        t_min=t_min,
        t_max=t_max,
        t_end=0.0,
        ve_sigma_fn_inv=lambda s: s / (1 + s),
    )


# -------------------------------------------------------------------------------------------------
# Registry and diffusers interop
# -------------------------------------------------------------------------------------------------

SCHEDULES: dict[str, Callable[..., NoiseSchedule]] = {
    "linear": linear,
    "scaled_linear": scaled_linear,
    "cosine": cosine,
    "ve": ve,
    "edm": edm,
    "vp_cosine": vp_cosine,
    "vp_linear": vp_linear,
    "rectified_flow": rectified_flow,
}


def get_schedule(name: str, **kwargs: Any) -> NoiseSchedule:
    """Build a schedule by name (``linear``, ``scaled_linear``, ``cosine``, ``ve``, ``edm``,
    ``vp_cosine``, ``vp_linear``, ``rectified_flow``)."""
    check_choice(name, SCHEDULES, "schedule")
    return SCHEDULES[name](**kwargs)


# diffusers schedulers that replace a zero terminal abar by 2**-24 so their first VE sigma (~4096) is finite
TINY_TERMINAL_ABAR_CLASSES = frozenset(
    {
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "UniPCMultistepScheduler",
    }
)

# Config entries that change the algorithm in a way no diffzoo component reproduces: entry -> (accepted values,
# what a different value asks for). The accepted values are every diffusers scheduler's defaults.
UNSUPPORTED_DIFFUSERS_ENTRIES: dict[str, tuple[tuple[Any, ...], str]] = {
    "variance_type": (
        (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"),
        "a network that also predicts its variance (extra output channels)",
    ),
    "timestep_type": (("discrete",), "continuous timesteps (the network receives 0.25 log sigma)"),
    "use_flow_sigmas": ((False, None), "flow-matching sigmas"),
    "use_dynamic_shifting": ((False, None), "resolution-dependent time shifting"),
    "shift_terminal": ((None,), "a shifted terminal time"),
    "use_exponential_sigmas": ((False, None), "an exponential sigma grid"),
    "use_beta_sigmas": ((False, None), "a beta-distribution sigma grid"),
    "use_lu_lambdas": ((False, None), "a grid uniform in log-SNR (Lu et al.)"),
    "interpolation_type": (("linear",), "log-linear sigma interpolation"),
    "lambda_min_clipped": ((-math.inf,), "a grid truncated at a minimum log-SNR"),
    "euler_at_final": ((False,), "a first-order last DPM-Solver step on every grid"),
    "timestep_scaling": ((), "consistency-model (LCM/TCD) boundary conditions"),
}
DIFFUSERS_PREDICTION_TYPES = {
    "epsilon": "epsilon",
    "sample": "sample",
    "original_sample": "sample",
    "v_prediction": "v_prediction",
}


def _infer_class(cfg: Mapping[str, Any]) -> str | None:
    """The diffusers scheduler class a full config dict (``dict(scheduler.config)``) comes from, by entries
    only that class (family) defines; ``None`` when they do not tell."""
    keys = set(cfg)
    if keys & {"euler_at_final", "use_lu_lambdas"}:
        return "DPMSolverMultistepScheduler"
    if "interpolation_type" in keys:
        return "EulerDiscreteScheduler"
    if keys & {"predict_x0", "disable_corrector"}:
        return "UniPCMultistepScheduler"
    if {"clip_sample", "set_alpha_to_one"} <= keys and "timestep_scaling" not in keys:
        return "DDIMScheduler"
    if {"clip_sample", "variance_type"} <= keys:
        return "DDPMScheduler"
    return None


def diffusers_config(config: Mapping[str, Any] | Any) -> tuple[dict[str, Any], str | None]:
    """``(entries, class name)`` of a diffusers scheduler object, its ``.config`` or a plain dict. The class
    name comes from the object's type, the dict's ``_class_name``, or else the entries only one scheduler
    family defines (``None`` when they do not tell)."""
    cls = type(config).__name__ if hasattr(config, "config") else None
    if hasattr(config, "config"):
        config = config.config
    try:
        cfg = dict(config)
    except (TypeError, ValueError):
        raise TypeError(
            f"config: expected a diffusers scheduler, its config or a dict, got {type(config).__name__}"
        ) from None
    return cfg, cls or cfg.get("_class_name") or _infer_class(cfg)


def check_diffusers_config(cfg: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first entry whose value asks for something diffzoo does not support
    (:data:`UNSUPPORTED_DIFFUSERS_ENTRIES`, an unknown ``prediction_type``)."""
    for key, (ok, what) in UNSUPPORTED_DIFFUSERS_ENTRIES.items():
        if key in cfg and cfg[key] not in ok:
            raise ValueError(
                f"{key}: {cfg[key]!r} asks for {what}, which diffzoo does not support (accepted: "
                f"{list(ok) or 'none'}); drop the entry to use the model with diffzoo's samplers"
            )
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in DIFFUSERS_PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type: unsupported diffusers prediction type {pred!r} (expected one of "
            f"{sorted(DIFFUSERS_PREDICTION_TYPES)})"
        )


def from_diffusers_config(config: Mapping[str, Any] | Any) -> DiscreteSchedule:
    """The schedule a diffusers scheduler config describes, so a diffusers model runs on its own schedule.

    Accepts a scheduler object, its ``.config`` or a plain dict. Reads ``beta_schedule`` (``linear``,
    ``scaled_linear``, ``squaredcos_cap_v2``) or ``trained_betas``, ``num_train_timesteps``,
    ``rescale_betas_zero_snr`` (:func:`rescale_zero_terminal_snr`: ``abar = 0`` at ``t = T-1``) and the
    end of sampling: ``set_alpha_to_one`` (DDIM/PNDM) or ``final_sigmas_type`` (``"zero"``: clean end,
    ``"sigma_min"``: ``abar_0``) set ``final_alpha_cumprod``. Given a scheduler object, its own
    ``alphas_cumprod`` tensor is used bit for bit (diffusers builds it in float32). As in diffusers, the
    schedulers of :data:`TINY_TERMINAL_ABAR_CLASSES` (DPM-Solver multistep, Euler, UniPC) replace a zero
    terminal ``abar`` by ``2**-24``; so does a dict config of theirs (:func:`diffusers_config`).

    Entries that choose the sampler or its grid (``timestep_spacing``, ``steps_offset``,
    ``use_karras_sigmas``, ``solver_order``, ...) are not the model's: pass them to the sampler and
    :func:`diffzoo.sampling.get_timesteps`. x0 clipping / thresholding and the prediction type are read
    by :func:`diffzoo.core.denoiser.from_diffusers_unet`. Raises ``ValueError`` naming any entry that asks
    for something diffzoo cannot reproduce (:data:`UNSUPPORTED_DIFFUSERS_ENTRIES`).
    """
    own_acp = getattr(config, "alphas_cumprod", None)  # a scheduler object: use its exact tensor
    cfg, cls = diffusers_config(config)
    check_diffusers_config(cfg)
    n = int(cfg.get("num_train_timesteps", 1000))
    trained = cfg.get("trained_betas")
    kind = cfg.get("beta_schedule", "linear")
    if own_acp is not None:
        sch = DiscreteSchedule(torch.as_tensor(own_acp).to(torch.float64), name=str(kind))
    else:
        if trained is not None:
            sch = _from_betas(torch.as_tensor(trained, dtype=torch.float64), "trained")
        elif kind == "linear":
            sch = linear(n, cfg.get("beta_start", 1e-4), cfg.get("beta_end", 0.02))
        elif kind == "scaled_linear":
            sch = scaled_linear(n, cfg.get("beta_start", 0.00085), cfg.get("beta_end", 0.012))
        elif kind == "squaredcos_cap_v2":
            sch = cosine(n)
        else:
            raise ValueError(
                f"beta_schedule: unsupported value {kind!r} (expected linear, scaled_linear, "
                "squaredcos_cap_v2 or trained_betas)"
            )
        if cfg.get("rescale_betas_zero_snr", False):
            acp = rescale_zero_terminal_snr(sch.alphas_cumprod)
            if cls in TINY_TERMINAL_ABAR_CLASSES:
                acp[-1] = TINY_TERMINAL_ABAR
            sch = DiscreteSchedule(acp, name=f"{sch.name}+zero_snr")
    if not cfg.get("set_alpha_to_one", True) or cfg.get("final_sigmas_type", "zero") == "sigma_min":
        sch.final_alpha_cumprod = float(sch.alphas_cumprod[0])
    elif cfg.get("final_sigmas_type", "zero") != "zero":
        raise ValueError(
            f"final_sigmas_type: unsupported value {cfg['final_sigmas_type']!r} (expected 'zero' or 'sigma_min')"
        )
    return sch
