"""Samplers of masked diffusion models: ancestral (with caching), first-hitting (FHS), MaskGIT confidence.

Zheng et al., arXiv 2409.02908:

* **Ancestral** (MDLM, Sec. 2): from ``t`` to ``s < t`` every masked token independently unmasks with
  probability ``(alpha_s - alpha_t) / (1 - alpha_t)`` to a draw from ``p_theta(. | x_t)``; clean tokens
  are copied. Drawn as one categorical over ``K + 1`` outcomes (``K`` tokens, stay masked), the way the
  reference code does -- which is where float32 Gumbel truncation bites. *Caching*: the network is time-
  agnostic, so a row whose tokens did not change reuses its last prediction.
* **First-hitting** (Sec. 4, Alg. 1): with ``n`` masked tokens at time ``t`` the first of their
  independent unmask times ``tau`` has ``P(tau < s) = ((1 - alpha_s)/(1 - alpha_t))^n``, so
  ``1 - alpha_tau = (1 - alpha_t) u^{1/n}``; one uniformly chosen masked token unmasks then. Exactly
  ``L`` network calls; the output law equals the ancestral one (in the many-step limit, and exactly for
  any step count when the model's conditionals factorise). ``tokens_per_step > 1`` is the parallel
  (approximate) variant: ``k`` tokens per call.
* **Confidence** (MaskGIT, Chang et al. 2022): unmask the most confident ``k_n`` positions per step
  along a cosine schedule; a deterministic-order baseline and the base of anchored remasking (APS).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from diffzoo.core.errors import check_batch, check_choice, check_finite, check_int, check_range, check_tensor
from diffzoo.core.random import Generator, generator_list, rand
from diffzoo.discrete.categorical import sample_categorical
from diffzoo.discrete.masked import TokenModel, check_tokens, model_seq_len, model_vocab, predictive_probs
from diffzoo.discrete.schedule import MaskSchedule, get_mask_schedule

Tensor = torch.Tensor


class CallCounter:
    """Counts batched network calls (``nfe``) and per-sequence evaluations (``rows``)."""

    def __init__(self, model: TokenModel) -> None:
        self.model, self.nfe, self.rows = model, 0, 0
        self.vocab_size = model_vocab(model)
        self.seq_len = getattr(model, "seq_len", None)

    def __call__(self, x: Tensor) -> Tensor:
        self.nfe += 1
        self.rows += x.shape[0]
        return self.model(x)


def _init(model: TokenModel, n: int, seq_len: int | None, x_init: Tensor | None, device) -> Tensor:
    vocab = model_vocab(model)
    if x_init is not None:
        check_tokens(check_batch(check_tensor(x_init, "x_init", ndim=2), "x_init"), vocab, "x_init")
        length = getattr(model, "seq_len", None) if seq_len is None else model_seq_len(model, seq_len)
        if length is not None and x_init.shape[1] != int(length):
            raise ValueError(
                f"x_init: expected rows of {int(length)} tokens (the model's seq_len), got {x_init.shape[1]}"
            )
        return x_init.clone()
    length = model_seq_len(model, seq_len)
    if check_int(n, "n") < 1:
        raise ValueError(f"n: expected a positive number of samples, got {n}")
    return torch.full((n, length), vocab, dtype=torch.long, device=device)


def check_times(times: Tensor) -> Tensor:
    """A masking-time grid: 1-D, at least 2 entries, strictly decreasing, within ``[0, 1]``; as float64."""
    check_tensor(times, "times", ndim=1)
    if times.dtype == torch.bool or times.is_complex() or times.numel() < 2:
        raise ValueError(f"times: expected at least 2 real times, got {times.numel()} of dtype {times.dtype}")
    ts = check_finite(times.detach().to(torch.float64), "times")
    if not bool((ts[1:] < ts[:-1]).all()) or float(ts[0]) > 1 or float(ts[-1]) < 0:
        raise ValueError(f"times: must decrease strictly within [0, 1] (1 = all masked), got {ts.tolist()[:8]}")
    return ts


def _device(model: TokenModel):
    try:
        return next(model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def ancestral_step_probs(probs: Tensor, a_t: Tensor, a_s: Tensor) -> Tensor:
    """The ``K + 1`` outcome probabilities of a masked token from ``t`` to ``s`` (last = stay masked)."""
    unmask = (a_s - a_t) / (1.0 - a_t)
    stay = (1.0 - a_s) / (1.0 - a_t)
    return torch.cat([probs * unmask, stay.expand(*probs.shape[:-1], 1)], dim=-1)


@torch.no_grad()
def ancestral_sample(
    model: TokenModel,
    n: int,
    steps: int,
    schedule: str | MaskSchedule = "linear",
    generator: Generator = None,
    precision: str = "float64",
    cache: bool = True,
    seq_len: int | None = None,
    x_init: Tensor | None = None,
    times: Tensor | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """MDLM ancestral sampling with ``steps`` uniform steps from ``t = 1`` to ``0`` (or given ``times``).

    ``precision``: dtype of the categorical draw (``"float32"`` reproduces the truncated-Gumbel bug).
    ``cache``: re-evaluate the network only for rows that changed since their last evaluation.
    ``x_init``: start from a partially masked sequence (its clean tokens are kept).
    """
    if check_int(steps, "steps") < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    check_choice(precision, ("float64", "float32"), "precision")
    sched = get_mask_schedule(schedule)
    vocab = model_vocab(model)
    x = _init(model, n, seq_len, x_init, _device(model))
    fdt = torch.float64 if precision == "float64" else torch.float32
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64) if times is None else check_times(times)
    alphas = sched.alpha(ts)
    probs = predictive_probs(model, x)
    for i in range(len(ts) - 1):
        full = ancestral_step_probs(probs.to(fdt), alphas[i].to(fdt), alphas[i + 1].to(fdt))
        draw = sample_categorical(full, generator, precision)
        new = torch.where(x == vocab, draw, x)
        changed = (new != x).any(dim=1)
        if callback is not None:
            callback(dict(i=i, t=float(ts[i]), s=float(ts[i + 1]), x=new, prev=x, probs=probs))
        x = new
        if i == len(ts) - 2:
            break
        if not cache:
            probs = predictive_probs(model, x)
        elif bool(changed.any()):
            probs = probs.clone()
            probs[changed] = predictive_probs(model, x[changed])
    return x


def first_hitting_times(t: Tensor, n_masked: Tensor | int, schedule: MaskSchedule, u: Tensor) -> Tensor:
    """Time of the first of ``n_masked`` unmask events after ``t``: ``1 - alpha_tau = (1 - alpha_t) u^{1/n}``."""
    one_minus = (1.0 - schedule.alpha(t)) * u.pow(1.0 / n_masked)
    return schedule.t_of_alpha(1.0 - one_minus)


@torch.no_grad()
def first_hitting_sample(
    model: TokenModel,
    n: int,
    schedule: str | MaskSchedule = "linear",
    generator: Generator = None,
    precision: str = "float64",
    tokens_per_step: int = 1,
    seq_len: int | None = None,
    x_init: Tensor | None = None,
    return_times: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """First-hitting sampler: one network call per unmasked token (``tokens_per_step`` per call).

    Returns the samples, and with ``return_times`` the ``(n, calls)`` tensor of hitting times ``tau``
    (the time of the last of the ``tokens_per_step`` events of each call), strictly decreasing in
    exact arithmetic. The schedule only sets the times: the output law does not depend on it.
    """
    if check_int(tokens_per_step, "tokens_per_step") < 1:
        raise ValueError(f"tokens_per_step: expected >= 1, got {tokens_per_step}")
    sched = get_mask_schedule(schedule)
    vocab = model_vocab(model)
    x = _init(model, n, seq_len, x_init, _device(model))
    b, length = x.shape
    t = torch.ones(b, dtype=torch.float64)
    per_row = generator is not None and not isinstance(generator, torch.Generator)
    gens, half = (generator_list(generator) if per_row else []), torch.tensor(0.5, dtype=torch.float64)
    if per_row and len(gens) != b:
        raise ValueError(f"generator: got {len(gens)} generators for a batch of {b}")
    times = []
    i = 0
    while True:
        masked = x == vocab
        n_masked = masked.sum(1)
        if int(n_masked.max()) == 0:
            break
        k = torch.clamp(n_masked, max=tokens_per_step)
        for j in range(int(k.max())):
            if per_row:  # row i draws only its own k_i uniforms: its stream must not depend on the batch
                u = torch.stack([rand((1,), g, dtype=torch.float64)[0] if j < ki else half for g, ki in zip(gens, k)])
            else:
                u = rand((b,), generator, dtype=torch.float64)
            nm = (n_masked - j).clamp_min(1).to(torch.float64)
            t = torch.where(j < k, first_hitting_times(t, nm, sched, u), t)
        times.append(t.clone())
        probs = predictive_probs(model, x)
        score = rand((b, length), generator, dtype=torch.float64)
        score = torch.where(masked, score, torch.full_like(score, -1.0))
        order = score.argsort(dim=1, descending=True)
        rank = order.argsort(dim=1)
        chosen = masked & (rank < k[:, None])
        draw = sample_categorical(probs, generator, precision)
        x = torch.where(chosen, draw, x)
        if callback is not None:
            callback(dict(i=i, t=t, x=x))
        i += 1
    return (x, torch.stack(times, 1)) if return_times else x


def cosine_unmask_counts(length: int, steps: int) -> list[int]:
    """Tokens to unmask at each of ``steps`` steps so that ``L cos(pi/2 * n/N)`` remain masked (MaskGIT)."""
    remaining = [int(math.floor(length * math.cos(0.5 * math.pi * (i + 1) / steps))) for i in range(steps)]
    remaining[-1] = 0
    prev, out = length, []
    for r in remaining:
        r = min(r, prev - 1) if prev > 0 else 0
        out.append(prev - r)
        prev = r
    return out


@torch.no_grad()
def confidence_sample(
    model: TokenModel,
    n: int,
    steps: int,
    generator: Generator = None,
    seq_len: int | None = None,
    x_init: Tensor | None = None,
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
) -> Tensor:
    """MaskGIT-style sampling: draw every masked token, keep the ``k_n`` most confident (cosine schedule).

    Confidence is ``log p(draw) + tau_n g`` with Gumbel noise ``g`` and ``tau_n = choice_temperature
    (1 - (n+1)/N)`` annealed to 0 (MaskGIT's "choice temperature", 4.5 in Chang et al. 2022); with
    ``choice_temperature = 0`` the order is purely by confidence, which on digits collapses to a few
    stroke-like modes.
    """
    check_range(temperature, "temperature", 0.0, None, lo_open=True)
    check_range(choice_temperature, "choice_temperature", 0.0)
    if check_int(steps, "steps") < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    vocab = model_vocab(model)
    x = _init(model, n, seq_len, x_init, _device(model))
    # each row's own schedule over its masked positions (a row must not depend on the rest of the batch)
    table = torch.tensor([cosine_unmask_counts(int(m), steps) for m in (x == vocab).sum(1).tolist()], device=x.device)
    for i, k in enumerate(table.T):
        probs = predictive_probs(model, x)
        if temperature != 1.0:
            probs = torch.softmax(probs.clamp_min(1e-300).log() / temperature, dim=-1)
        draw = sample_categorical(probs, generator)
        conf = probs.gather(-1, draw[..., None])[..., 0].clamp_min(1e-300).log()
        tau = choice_temperature * (1.0 - (i + 1) / steps)
        if tau > 0:
            u = rand(conf.shape, generator, dtype=torch.float64, device=conf.device)
            conf = conf + tau * -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
        x = unmask_top(x, draw, conf, k, vocab)
    return x


def unmask_top(x: Tensor, draw: Tensor, score: Tensor, k: int | Tensor, mask_id: int) -> Tensor:
    """Unmask, in each row, the ``k`` masked positions of highest ``score`` with their ``draw``."""
    masked = x == mask_id
    score = torch.where(masked, score.to(torch.float64), torch.full_like(score, -math.inf, dtype=torch.float64))
    rank = score.argsort(dim=1, descending=True).argsort(dim=1)
    k = torch.as_tensor(k, device=x.device).reshape(-1, 1)
    return torch.where(masked & (rank < k), draw, x)


SAMPLERS = ("fhs", "ancestral", "confidence")


def sample_digits(
    model: TokenModel, n: int, steps: int = 64, sampler: str = "fhs", generator: Generator = None
) -> Tensor:
    """Sample ``n`` digits from a masked model on 8x8 digits: int64 ``(n, 8, 8)``, levels ``0..16``.

    ``sampler``: ``"fhs"`` (exact, 64 calls; ``steps`` ignored), ``"ancestral"`` (``steps`` steps,
    float64, cached) or ``"confidence"`` (MaskGIT, ``steps`` calls). Entry point of ``diffzoo sample`` /
    ``diffzoo demo`` for masked models.
    """
    check_choice(sampler, SAMPLERS, "sampler")
    model_seq_len(model, 64)
    if sampler == "fhs":
        x = first_hitting_sample(model, n, generator=generator)
    elif sampler == "ancestral":
        x = ancestral_sample(model, n, steps, generator=generator)
    else:
        x = confidence_sample(model, n, steps, generator=generator)
    return x.view(n, 8, 8)
