"""The "trajectory-MMD" ablation of learnable sampler distillation for masked diffusion (arXiv 2509.19962).

This is the earlier, distribution-level reconstruction, kept as a named ablation; LSD / LSD+ as the paper
defines them (score-scaled Euler steps, L2 to the teacher's cached scores) are in
:mod:`diffzoo.discrete.lsd_paper`.

The official code (``feiyangfu/LSD``, read for structure only) learns, for an ``N``-step student
sampler, one coefficient per step that scales the network output (LSD) and, in LSD+, also the step
sizes (positive increments, ``t = 1 - cumsum``), aligning the student's trajectory with a many-step
teacher's. Its loss is not in the repository; ours is a documented assumption:

* **Student** (masked ancestral sampler, Zheng et al. arXiv 2409.02908 Sec. 2): at step ``i`` from
  ``t_i`` to ``t_{i+1}`` the network logits are scaled by ``phi_i`` (an inverse temperature; ``phi = 1``
  and uniform times give exactly the plain ``N``-step sampler), and every masked token takes one of
  ``K + 1`` outcomes with probabilities ``softmax(phi_i l) (a_{i+1} - a_i)/(1 - a_i)`` and
  ``(1 - a_{i+1})/(1 - a_i)`` (stay masked). LSD+ parameterises the grid as
  ``t_i = 1 - sum_{j<i} softmax(w)_j`` (monotone, from 1 to exactly 0).
* **Teacher**: the exact many-step limit, i.e. the first-hitting sampler, whose recorded hitting
  times give its state at *any* time (a token is revealed at ``t`` iff its hitting time is ``> t``).
* **Relaxed objective**: the student's states are made differentiable with straight-through
  Gumbel-softmax (float64 noise) and, at each student time ``t_{i+1}``, compared with the teacher's
  states at the same time by the unbiased MMD^2 (RBF, median bandwidth) of their features
  ``(pixel value * revealed, revealed)``; the per-step terms are summed and the final-state term is
  weighted by ``N``. The reference code reuses one
  seed every iteration (common random numbers), which aligns its student with a noise-coupled teacher;
  our teacher is not noise-coupled, and one fixed noise draw lets ``phi`` over-fit that draw, so fresh
  student noise each iteration is the default (``crn=True`` restores the fixed seed).
* **Why only a distribution-level objective can help here.** For an exact time-agnostic masked model the
  one-step student's per-token marginals already equal the many-step teacher's (each revealed token's
  law given the state at ``t_i`` is ``p_theta(. | x_{t_i})`` either way); a few-step sampler errs only in
  the *joint* law (tokens revealed together are drawn independently). A per-token KL/MSE alignment is
  minimised by ``phi = 1``, i.e. it cannot improve on the plain sampler; the MMD objective sees the joint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffzoo.core.errors import check_choice
from diffzoo.core.random import Generator
from diffzoo.core.stats import mmd
from diffzoo.discrete.aps import codebook
from diffzoo.discrete.categorical import gumbel_softmax_st, sample_categorical
from diffzoo.discrete.masked import TokenModel, model_seq_len, model_vocab
from diffzoo.discrete.samplers import first_hitting_sample
from diffzoo.discrete.schedule import MaskSchedule, get_mask_schedule

log = logging.getLogger(__name__)
Tensor = torch.Tensor


class StudentSampler(torch.nn.Module):
    """The learnable parameters of an ``N``-step student: ``log_phi`` (LSD) and ``w`` (LSD+ grid)."""

    def __init__(self, steps: int, learn_times: bool = False) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps: expected >= 1, got {steps}")
        self.steps, self.learn_times = int(steps), bool(learn_times)
        self.log_phi = torch.nn.Parameter(torch.zeros(steps, dtype=torch.float64))
        self.w = torch.nn.Parameter(torch.zeros(steps, dtype=torch.float64), requires_grad=learn_times)

    @property
    def phi(self) -> Tensor:
        return self.log_phi.exp()

    def times(self) -> Tensor:
        """The decreasing grid ``t_0 = 1 > t_1 > ... > t_N = 0`` (uniform until LSD+ learns it)."""
        inc = torch.softmax(self.w, 0)
        t = 1.0 - torch.cat([inc.new_zeros(1), torch.cumsum(inc, 0)])
        return torch.cat([t[:-1], t.new_zeros(1)])


def student_outcome_logprobs(logits: Tensor, phi: Tensor, a_t: Tensor, a_s: Tensor) -> Tensor:
    """Log-probabilities of the ``K + 1`` outcomes of a masked token (last = stay masked)."""
    logp = torch.log_softmax(phi * logits.to(torch.float64), -1)
    unmask = torch.log((a_s - a_t).clamp_min(1e-30) / (1.0 - a_t))
    stay = torch.log(((1.0 - a_s) / (1.0 - a_t)).clamp_min(1e-30))
    return torch.cat([logp + unmask, stay.expand(*logp.shape[:-1], 1)], -1)


def run_student(
    model: TokenModel,
    student: StudentSampler,
    n: int,
    schedule: str | MaskSchedule = "linear",
    generator: Generator = None,
    relaxed: bool = True,
    tau: float = 0.5,
) -> list[Tensor]:
    """Student trajectory as one-hot states ``(n, L, K+1)`` after each step (differentiable if ``relaxed``).

    ``relaxed=False`` draws exact categorical samples (float64) with no gradient: the sampler used at test time.
    """
    sched = get_mask_schedule(schedule)
    vocab, length = model_vocab(model), model_seq_len(model)
    x = F.one_hot(torch.full((n, length), vocab), vocab + 1).to(torch.float64)
    alphas = sched.alpha(student.times())
    states = []
    for i in range(student.steps):
        logits = model(x.to(torch.float32))
        logq = student_outcome_logprobs(logits, student.phi[i], alphas[i], alphas[i + 1])
        if relaxed:
            y = gumbel_softmax_st(logq, tau, generator)
        else:
            y = F.one_hot(sample_categorical(logq.exp(), generator), vocab + 1).to(torch.float64)
        m = x[..., vocab:]
        x = x * (1.0 - m) + y * m
        states.append(x)
    return states


def state_features(x: Tensor) -> Tensor:
    """``(pixel value * revealed, revealed)`` per token, flattened: the space the MMD compares."""
    vocab = x.shape[-1] - 1
    revealed = 1.0 - x[..., vocab]
    value = x[..., :vocab] @ codebook(vocab).to(x.dtype)
    return torch.cat([value * revealed, revealed], -1).flatten(1)


def teacher_state(x0: Tensor, hit_times: Tensor, t: Tensor, vocab: int) -> Tensor:
    """One-hot teacher states at time ``t`` from FHS samples ``x0`` and their per-token hitting times."""
    revealed = hit_times > t
    return F.one_hot(torch.where(revealed, x0, torch.full_like(x0, vocab)), vocab + 1).to(torch.float64)


@torch.no_grad()
def teacher_trajectories(model: TokenModel, n: int, generator: Generator = None) -> tuple[Tensor, Tensor]:
    """``n`` FHS samples and the time at which each token was revealed (``(n, L)`` each)."""
    vocab = model_vocab(model)
    order: list[Tensor] = []
    x, times = first_hitting_sample(
        model, n, generator=generator, return_times=True, callback=lambda d: order.append(d["x"].clone())
    )
    hit = torch.zeros(x.shape, dtype=torch.float64)
    prev = torch.full_like(x, vocab)
    for j, state in enumerate(order):
        newly = (prev == vocab) & (state != vocab)
        hit = torch.where(newly, times[:, j : j + 1].expand_as(hit), hit)
        prev = state
    return x, hit


def _mmd2(a: Tensor, b: Tensor) -> Tensor:
    """Unbiased MMD^2 (:func:`diffzoo.core.stats.mmd`) with median bandwidths fixed from detached data."""

    pooled = torch.cat([a.detach(), b.detach()])
    d2 = torch.cdist(pooled, pooled).pow(2)
    med = float(d2[d2 > 0].median().sqrt()) if bool((d2 > 0).any()) else 1.0
    return mmd(a, b, bandwidths=[med * s for s in (0.5, 1.0, 2.0)])


@dataclass
class LSDResult:
    student: StudentSampler
    losses: list[float]


def train_lsd(
    model: TokenModel,
    steps: int,
    learn_times: bool = False,
    iters: int = 60,
    batch: int = 64,
    lr: float = 0.05,
    teacher_n: int = 512,
    schedule: str | MaskSchedule = "linear",
    seed: int = 0,
    teacher: tuple[Tensor, Tensor] | None = None,
    crn: bool = False,
    teacher_batch: int | None = None,
    final_weight: float | None = None,
) -> LSDResult:
    """Distil an ``steps``-step student (LSD; LSD+ with ``learn_times``) from the FHS teacher.

    Adam on ``log_phi`` (and ``w``); the network stays frozen. Each iteration draws ``batch`` student
    trajectories (fresh noise; the same seed every iteration with ``crn``) and compares them with a fresh
    teacher subset of size ``teacher_batch`` (default ``4 * batch``, capped by the teacher set).
    Loss: the per-step MMD^2 terms plus ``final_weight`` (default ``N``) times the final-state term, so the
    output law weighs as much as the whole trajectory: with learnable times (LSD+) an unweighted sum can
    be lowered by moving grid points to where states are nearly empty or full, without better samples.
    """
    check_choice(learn_times, (True, False), "learn_times")
    model.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    x0, hit = teacher if teacher is not None else teacher_trajectories(model, teacher_n, gen)
    vocab = model_vocab(model)
    student = StudentSampler(steps, learn_times)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    losses = []
    for it in range(iters):
        idx = torch.randperm(x0.shape[0], generator=gen)[: teacher_batch or 4 * batch]
        states = run_student(
            model, student, batch, schedule, torch.Generator().manual_seed(seed + 1 + (0 if crn else it))
        )
        ts = student.times()
        terms = [
            _mmd2(state_features(s), state_features(teacher_state(x0[idx], hit[idx], ts[i + 1].detach(), vocab)))
            for i, s in enumerate(states)
        ]
        loss = sum(terms[:-1]) + (steps if final_weight is None else final_weight) * terms[-1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        log.info("lsd N=%d it %d loss %.4f", steps, it, losses[-1])
    return LSDResult(student, losses)


@torch.no_grad()
def student_sample(
    model: TokenModel,
    student: StudentSampler,
    n: int,
    schedule: str | MaskSchedule = "linear",
    generator: Generator = None,
) -> Tensor:
    """Exact (non-relaxed, float64) sampling with a trained student: token ids ``(n, L)``."""
    x = run_student(model, student, n, schedule, generator, relaxed=False)[-1]
    return x[..., :-1].argmax(-1)
