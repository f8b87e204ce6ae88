"""LSD / LSD+ as the paper defines them: score-scaled Euler students distilled on the teacher's scores.

Fu, Guo, Liu, *Learnable Sampler Distillation for Discrete Diffusion Models* (arXiv 2509.19962, Sec. 3,
Alg. 1-2). (The earlier distribution-level reconstruction is :mod:`diffzoo.discrete.lsd`, kept as the
ablation "trajectory-MMD".)

**Concrete score of a masked model.** With forward masking ``q(x_t^i = x_0^i) = alpha_t``,
``q(x_t^i = m) = 1 - alpha_t``, let ``x`` have ``x^i = m`` and ``y`` equal ``x`` with ``y^i = k``. Summing
over ``x_0`` (``U`` = the unmasked positions of ``x``, ``M`` the masked ones)::

    p_t(y) = alpha_t^{|U|+1} (1 - alpha_t)^{|M|-1} P(x_0^U = x^U, x_0^i = k)
    p_t(x) = alpha_t^{|U|}   (1 - alpha_t)^{|M|}   P(x_0^U = x^U)
    s(x, t)_{i,k} = p_t(y) / p_t(x) = alpha_t / (1 - alpha_t) * p_0(x_0^i = k | x^U),

so the concrete score is the x0-prediction ``p_theta(k | x)`` of the zoo models times
``alpha_t/(1-alpha_t)`` (:func:`concrete_score`; the time enters only through that factor). At clean
positions the reverse rate is 0 (the forward process only moves tokens to ``m``), so the score is 0 there.

**Euler / tau-leaping step** (paper Sec. 2): the forward rate of ``k -> m`` is ``sigma(t) = -alpha'_t /
alpha_t``, and a masked token moves from ``t`` to ``t - dt`` to ``k`` with probability
``dt sigma(t) S_k``, ``S = s`` for the plain sampler (``= dt (-alpha'_t)/(1-alpha_t) p_k``: exactly the
MDLM ancestral step for the linear schedule); it stays masked with the rest, clamped at 0 (probabilities
renormalised when the mass exceeds 1). The last step ends at ``t = 0``, where every remaining token is
revealed (so the last step's coefficient cannot change samples).

* **LSD** (Eq. for ``p(x_{t_{k+1}} | x_{t_k})``): ``S = Phi_k s`` with one learnable scalar per student step
  (``form="paper"``). The official code multiplies the network's *log* output (SEDD: ``exp`` gives the
  score), i.e. ``S = s^Phi_k`` (``form="code"``). For a masked model the paper's form only rescales the
  reveal rate of step ``k``; the code's form also sharpens (``Phi > 1``) or flattens the token law. Our
  results use the paper's form unless a table says otherwise.
* **Loss** (Alg. 2): run the ``N``-step teacher (default 256; the student grid is a subsequence) and
  cache its scores ``s*_k`` at the student times; ``L_k(Phi_k) = E || s*_k - Phi_k s_k ||_2^2`` (sum over
  positions and tokens), each coefficient on its own loss: the states are sampled, so ``Phi_k`` gets a
  gradient only through its own step (Adam here; the paper: plain gradient steps).
* **LSD+**: learnable step sizes ``kappa_k`` (init ``1/M``), student times ``tau_k = 1 - sum_{l<k}
  kappa_l`` (clamped to ``[1e-3, 1]``), and the loss on the *transition term* ``kappa_k sigma(tau_k) Phi_k
  s(x_{tau_k}, tau_k)`` against the teacher's over the same block of the teacher grid, ``sum_j (1/N)
  sigma(t_j) s*(x*_{t_j}, t_j)`` over the ``N/M`` teacher steps ``j`` of student step ``k``. [ASSUMED: the
  paper writes the teacher side as one teacher step ``(T - eps)/N s*``; read literally, that drives
  ``kappa`` to ``~1/N`` and the student never reaches ``t = 0``; the block sum is the teacher's
  transition over the student's interval. ``sigma`` is included because it is what multiplies the score
  in the step.] ``Phi_k`` is learned jointly with the LSD loss at the student's own time.
* **Relaxed objective** (Sec. 3.3): the student starts from ``x~_0`` within Hamming distance ``zeta``
  (default ``0.05 L``) of the teacher's start. [ASSUMED: the start is all-mask, so we reveal ``d ~
  U{0..zeta}`` random positions with the teacher's final tokens.] Sampling uses the all-mask start.
* **Coupling** [ASSUMED]: with an all-mask start "the same ``x_{t_0}``" couples nothing, so teacher and
  student share their noise: each token has an exponential clock ``E`` (revealed at the first step where
  its accumulated hazard ``sum -log P(stay)`` exceeds ``E``: exact, memoryless) and a uniform ``V`` that
  picks its value by inverse CDF (float64). The plain student then has *exactly* the teacher's masked set
  at the student times; the official code gets a similar effect by reusing one seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from diffzoo.core.errors import check_choice, check_range
from diffzoo.core.random import Generator, rand
from diffzoo.discrete.masked import TokenModel, model_seq_len, model_vocab, predictive_probs
from diffzoo.discrete.schedule import MaskSchedule, get_mask_schedule

log = logging.getLogger(__name__)
Tensor = torch.Tensor
FORMS = ("paper", "code")
TAU_MIN = 1e-3  # smallest learned student time before the final step to 0
ALPHA_MIN = 1e-3  # alpha floor at t = 1 (SEDD's log-linear noise has alpha(1) = eps = 1e-3)


def _alpha(sched: MaskSchedule, t: Tensor) -> Tensor:
    return sched.alpha(t.to(torch.float64)).clamp(ALPHA_MIN, 1.0)


def concrete_score(probs: Tensor, x: Tensor, t: Tensor | float, schedule: str | MaskSchedule = "linear") -> Tensor:
    """``s(x, t)_{i,k} = alpha_t/(1-alpha_t) p(k | x)`` at masked positions, 0 at clean ones: ``(B, L, K)``.

    ``probs``: the x0-prediction ``(B, L, K)`` (:func:`~diffzoo.discrete.masked.predictive_probs`);
    ``t``: a scalar or ``(B,)``. ``alpha_t`` is floored at ``1e-3`` (finite rates at ``t = 1``).
    """
    vocab = probs.shape[-1]
    a = _alpha(get_mask_schedule(schedule), torch.as_tensor(t, dtype=torch.float64)).reshape(-1, 1, 1)
    masked = (x == vocab)[..., None]
    return torch.where(masked, probs.to(torch.float64) * a / (1.0 - a).clamp_min(1e-300), 0.0)


def forward_rate(t: Tensor | float, schedule: str | MaskSchedule = "linear") -> Tensor:
    """``sigma(t) = -alpha'_t / alpha_t``: the rate of ``k -> [MASK]`` (``Q_t(k, m)``).

    Written as ``(-alpha'_t / (1 - alpha_t)) / (alpha_t / (1 - alpha_t))`` with the same ``alpha`` floor as
    :func:`concrete_score`, so that ``sigma s = -alpha'_t/(1 - alpha_t) p`` holds exactly at every ``t < 1``
    *and* at ``t = 1`` (the plain step is then the exact ancestral step on any grid).
    """
    sched = get_mask_schedule(schedule)
    t = torch.as_tensor(t, dtype=torch.float64)
    a = sched.alpha(t)
    af = _alpha(sched, t)
    return -sched.d_alpha(t) / (1.0 - a).clamp_min(1e-300) * (1.0 - af) / af


def scale_score(score: Tensor, phi: Tensor | float, form: str = "paper") -> Tensor:
    """``Phi s`` (``form="paper"``) or ``s^Phi`` (``"code"``: the official code scales the log-score)."""
    check_choice(form, FORMS, "form")
    if form == "paper":
        return phi * score
    return torch.where(score > 0, score.clamp_min(1e-300).pow(phi), torch.zeros_like(score))


def euler_step_probs(rate_mass: Tensor) -> Tensor:
    """``(B, L, K+1)`` outcome probabilities of a masked token from the transition masses ``dt sigma S``
    ``(B, L, K)``: ``P(k) = dt sigma S_k``, ``P(stay) = max(0, 1 - sum)``, renormalised if the sum exceeds 1."""
    tot = rate_mass.sum(-1, keepdim=True)
    scale = torch.where(tot > 1.0, 1.0 / tot.clamp_min(1e-300), torch.ones_like(tot))
    return torch.cat([rate_mass * scale, (1.0 - tot).clamp_min(0.0)], -1)


@dataclass
class CoupledNoise:
    """Per-token noise shared by teacher and student: reveal clocks ``E ~ Exp(1)`` and value uniforms ``V``."""

    clock: Tensor  # (B, L) float64
    value: Tensor  # (B, L) float64

    @classmethod
    def draw(cls, n: int, length: int, generator: Generator = None) -> CoupledNoise:
        u = rand((n, 2, length), generator, dtype=torch.float64)
        return cls(-torch.log1p(-u[:, 0]), u[:, 1])

    def __getitem__(self, idx) -> CoupledNoise:
        return CoupledNoise(self.clock[idx], self.value[idx])


def coupled_step(x: Tensor, hazard: Tensor, out: Tensor, noise: CoupledNoise) -> tuple[Tensor, Tensor]:
    """One exact draw from the per-token outcome law ``out`` ``(B, L, K+1)`` with the shared noise.

    A masked token reveals when its accumulated hazard ``H + (-log P(stay))`` reaches its clock (given it
    has not, this happens with probability ``1 - P(stay)``); its value is the inverse CDF of
    ``P(k) / sum P`` at ``V``. Returns the new tokens and hazards.
    """
    vocab = out.shape[-1] - 1
    masked = x == vocab
    stay = out[..., vocab]
    h = hazard + torch.where(stay > 0, -torch.log(stay.clamp_min(1e-300)), torch.full_like(stay, float("inf")))
    reveal = masked & (h >= noise.clock)
    p = out[..., :vocab]
    cdf = torch.cumsum(p / p.sum(-1, keepdim=True).clamp_min(1e-300), -1)
    val = torch.searchsorted(cdf, noise.value[..., None].contiguous()).squeeze(-1).clamp_max(vocab - 1)
    return torch.where(reveal, val, x), torch.where(masked, h, hazard)


@dataclass
class Trajectory:
    """A rollout: the final tokens, and per student step the state, time and score at its start."""

    x: Tensor
    states: list[Tensor] = field(default_factory=list)
    times: list[Tensor] = field(default_factory=list)
    scores: list[Tensor] = field(default_factory=list)


def euler_rollout(
    model: TokenModel,
    noise: CoupledNoise,
    times: Tensor,
    phi: Tensor | None = None,
    form: str = "paper",
    schedule: str | MaskSchedule = "linear",
    x_init: Tensor | None = None,
    record: bool = False,
    callback: Callable[[int, Tensor, Tensor, Tensor], None] | None = None,
) -> Trajectory:
    """Euler / tau-leaping from ``times[0]`` down to ``times[-1]`` (forced to reveal everything at the end)
    with scores scaled by ``phi`` (one per step; ``None`` = 1). One network call per step.

    ``record``: keep each step's state, time and score; ``callback(k, t, s, score)``: see them streamed.
    """
    sched = get_mask_schedule(schedule)
    vocab = model_vocab(model)
    n, length = noise.clock.shape
    x = torch.full((n, length), vocab, dtype=torch.long) if x_init is None else x_init.clone()
    hazard = torch.zeros(n, length, dtype=torch.float64)
    steps = len(times) - 1
    traj = Trajectory(x)
    for k in range(steps):
        t, s = times[k].detach(), times[k + 1].detach()
        probs = predictive_probs(model, x)
        score = concrete_score(probs, x, t, sched)
        if record:
            traj.states.append(x)
            traj.times.append(t)
            traj.scores.append(score)
        if callback is not None:
            callback(k, t, s, score)
        scaled = score if phi is None else scale_score(score, phi[k].detach(), form)
        mass = (t - s).clamp_min(0.0) * forward_rate(t, sched) * scaled
        if k == steps - 1:  # t -> 0: every remaining token is revealed
            mass = mass / mass.sum(-1, keepdim=True).clamp_min(1e-300)
            mass = torch.where(mass.sum(-1, keepdim=True) > 0, mass, probs)
        x, hazard = coupled_step(x, hazard, euler_step_probs(mass), noise)
    traj.x = x
    return traj


def uniform_times(steps: int) -> Tensor:
    """``1 = t_0 > ... > t_steps = 0``, float64."""
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


class LSDStudent(torch.nn.Module):
    """An ``M``-step student: ``phi`` (LSD, init 1) and, with ``learn_times``, step sizes ``kappa`` (LSD+)."""

    def __init__(self, steps: int, learn_times: bool = False, form: str = "paper") -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps: expected >= 1, got {steps}")
        check_choice(form, FORMS, "form")
        self.steps, self.learn_times, self.form = int(steps), bool(learn_times), form
        self.phi = torch.nn.Parameter(torch.ones(steps, dtype=torch.float64))
        self.kappa = torch.nn.Parameter(torch.full((steps,), 1.0 / steps, dtype=torch.float64))
        self.kappa.requires_grad_(self.learn_times)

    def times(self) -> Tensor:
        """``tau_k = 1 - sum_{l<k} kappa_l`` clamped to ``[1e-3, 1]`` (a finite score), ``tau_M = 0``."""
        tau = 1.0 - torch.cat([self.kappa.new_zeros(1), torch.cumsum(self.kappa, 0)[:-1]])
        return torch.cat([tau.clamp(TAU_MIN, 1.0), tau.new_zeros(1)])


@torch.no_grad()
def lsd_sample(
    model: TokenModel,
    student: LSDStudent | int,
    n: int,
    generator: Generator = None,
    schedule: str | MaskSchedule = "linear",
) -> Tensor:
    """``n`` samples ``(n, L)`` from a student (an int ``M``: the plain ``M``-step Euler sampler)."""
    student = LSDStudent(student) if isinstance(student, int) else student
    noise = CoupledNoise.draw(n, model_seq_len(model), generator)
    return euler_rollout(model, noise, student.times(), student.phi, student.form, schedule).x


@dataclass
class TeacherCache:
    """The teacher's final tokens and, per student step ``k``, its score at ``t_k`` and its summed
    transition ``sum_j (1/N) sigma(t_j) s*_j`` over the block of student step ``k``."""

    noise: CoupledNoise
    x: Tensor
    scores: list[Tensor]
    block: list[Tensor]
    teacher_steps: int


@torch.no_grad()
def teacher_caches(
    model: TokenModel,
    student_steps: Sequence[int],
    noise: CoupledNoise,
    teacher_steps: int = 256,
    schedule: str | MaskSchedule = "linear",
) -> dict[int, TeacherCache]:
    """Run the plain ``teacher_steps``-step Euler teacher once with ``noise`` and cache, for every student
    step count ``M`` in ``student_steps``, what LSD/LSD+ match (scores streamed, not all kept).

    ``teacher_steps`` must be a multiple of each ``M`` (the student grid is a subsequence).
    """
    for m in student_steps:
        if m < 1 or teacher_steps % m:
            raise ValueError(f"teacher_steps: expected a multiple of student_steps={m}, got {teacher_steps}")
    sched = get_mask_schedule(schedule)
    times = uniform_times(teacher_steps)
    scores: dict[int, list[Tensor]] = {m: [] for m in student_steps}
    block: dict[int, list[Tensor]] = {m: [] for m in student_steps}

    def keep(j: int, t: Tensor, s: Tensor, score: Tensor) -> None:
        trans = (t - s) * forward_rate(t, sched) * score
        for m in student_steps:
            stride = teacher_steps // m
            if j % stride == 0:
                scores[m].append(score.float())
                block[m].append(trans)
            else:
                block[m][-1] = block[m][-1] + trans
            if (j + 1) % stride == 0:
                block[m][-1] = block[m][-1].float()

    x = euler_rollout(model, noise, times, schedule=sched, callback=keep).x
    return {m: TeacherCache(noise, x, scores[m], block[m], teacher_steps) for m in student_steps}


def teacher_cache(
    model: TokenModel,
    student_steps: int,
    noise: CoupledNoise,
    teacher_steps: int = 256,
    schedule: str | MaskSchedule = "linear",
) -> TeacherCache:
    """:func:`teacher_caches` for one student step count."""
    return teacher_caches(model, [student_steps], noise, teacher_steps, schedule)[student_steps]


def perturb_start(x_teacher: Tensor, zeta: int, generator: Generator = None) -> Tensor:
    """Bool ``(B, L)``: ``d ~ U{0..zeta}`` random positions per row, to be revealed with the teacher's
    final tokens in the relaxed student start [ASSUMED]."""
    n, length = x_teacher.shape
    u = rand((n, length + 1), generator, dtype=torch.float64)
    d = (u[:, -1] * (zeta + 1)).floor().long()
    rank = u[:, :-1].argsort(1).argsort(1)
    return rank < d[:, None]


@dataclass
class LSDResult:
    student: LSDStudent
    losses: list[float]
    seconds: float


def train_lsd_paper(
    model: TokenModel,
    steps: int,
    cache: TeacherCache,
    learn_times: bool = False,
    form: str = "paper",
    iters: int = 30,
    batch: int = 32,
    lr: float = 0.05,
    relaxed: bool = True,
    zeta: float = 0.05,
    schedule: str | MaskSchedule = "linear",
    seed: int = 0,
) -> LSDResult:
    """Distil an ``steps``-step LSD (LSD+ with ``learn_times``) student from a :class:`TeacherCache`.

    Each iteration takes ``batch`` cached teacher rollouts, runs the student with the same noise (from a
    start perturbed within Hamming ``zeta L`` when ``relaxed``), and takes one Adam step on the sum of the
    per-step losses (each coefficient's gradient is that of its own loss). The network stays frozen.
    """
    check_range(zeta, "zeta", 0.0, 1.0)
    model.requires_grad_(False)
    sched = get_mask_schedule(schedule)
    vocab, length = model_vocab(model), model_seq_len(model)
    student = LSDStudent(steps, learn_times, form)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n_cache = cache.x.shape[0]
    losses: list[float] = []
    t0 = time.perf_counter()
    for it in range(iters):
        idx = torch.randperm(n_cache, generator=gen)[:batch]
        x_init = None
        if relaxed and zeta > 0:
            keep = perturb_start(cache.x[idx], int(round(zeta * length)), gen)
            x_init = torch.where(keep, cache.x[idx], torch.full_like(cache.x[idx], vocab))
        tau = student.times()
        with torch.no_grad():
            tr = euler_rollout(model, cache.noise[idx], tau, student.phi, form, sched, x_init=x_init, record=True)
        loss = torch.zeros((), dtype=torch.float64)
        for k in range(steps):
            s = tr.scores[k]
            scaled = scale_score(s, student.phi[k], form)
            loss = loss + (cache.scores[k][idx].double() - scaled).pow(2).sum((1, 2)).mean()
            if learn_times:
                trans = student.kappa[k] * forward_rate(tau[k].detach(), sched) * scaled.detach()
                loss = loss + (cache.block[k][idx].double() - trans).pow(2).sum((1, 2)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            student.phi.clamp_(min=0.0)
            student.kappa.clamp_(min=1e-4)
        losses.append(float(loss.detach()))
        log.info("lsd-paper M=%d it %d loss %.4g", steps, it, losses[-1])
    return LSDResult(student, losses, time.perf_counter() - t0)
