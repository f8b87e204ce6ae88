"""Absorbing-state (masked) diffusion: forward masking, the continuous-time ELBO, predictive probabilities.

Zheng et al., *Masked Diffusion Models are Secretly Time-Agnostic Masked Models and Exploit Inaccurate
Categorical Sampling* (arXiv 2409.02908), Sec. 2-3. Tokens take values in ``{0..K-1}``; ``K`` is
``[MASK]``. The negative ELBO of a sequence ``x_0`` of length ``L`` is

    L(x_0) = int_0^1  -alpha'_t / (1 - alpha_t)  E_{x_t ~ q(.|x_0)} [ sum_{i: x_t^i = m} -log p_theta(x_0^i | x_t) ] dt,

and since the optimal ``p_theta`` depends only on the mask pattern, the network takes no time input.
With ``k`` masked tokens the same quantity is the any-order masked-model loss
``E_{k ~ U{1..L}} (L / k) E_{random k-mask} sum_masked -log p`` (Sec. 3.1), offered as ``loss_type="any_order"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from diffzoo.core.errors import check_choice, check_tensor
from diffzoo.core.random import Generator, rand
from diffzoo.discrete.schedule import MaskSchedule, get_mask_schedule

Tensor = torch.Tensor
TokenModel = Callable[[Tensor], Tensor]


def model_vocab(model: TokenModel, vocab_size: int | None = None) -> int:
    """The clean vocabulary size ``K`` (mask id) of ``model`` (attribute ``vocab_size``) or the given one."""
    k = vocab_size if vocab_size is not None else getattr(model, "vocab_size", None)
    if k is None:
        raise ValueError("vocab_size: model has no `vocab_size` attribute; pass vocab_size explicitly")
    return int(k)


def model_seq_len(model: TokenModel, seq_len: int | None = None) -> int:
    """The sequence length ``L`` the model was trained for, checked against a requested one."""
    trained = getattr(model, "seq_len", None)
    if seq_len is not None and trained is not None and int(seq_len) != int(trained):
        raise ValueError(f"seq_len: the model was trained for sequences of length {trained}, got {seq_len}")
    length = seq_len if seq_len is not None else trained
    if length is None:
        raise ValueError("seq_len: model has no `seq_len` attribute; pass seq_len explicitly")
    return int(length)


def check_tokens(x: Tensor, vocab_size: int, arg: str = "x", allow_mask: bool = True) -> Tensor:
    """Integer token ids in ``[0, K]`` (``K`` = mask) or ``[0, K-1]`` when ``allow_mask`` is False."""
    check_tensor(x, arg, floating=False)
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{arg}: expected integer token ids, got dtype {x.dtype}")
    hi = vocab_size if allow_mask else vocab_size - 1
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > hi):
        what = f"[0, {hi}] ({vocab_size} = [MASK])" if allow_mask else f"[0, {hi}] (no [MASK] allowed)"
        raise ValueError(f"{arg}: token ids must lie in {what}, got range [{int(x.min())}, {int(x.max())}]")
    return x


def mask_tokens(
    x0: Tensor, t: Tensor, schedule: str | MaskSchedule, mask_id: int, generator: Generator = None
) -> Tensor:
    """Sample ``x_t ~ q(x_t | x_0)``: each token masked independently with probability ``1 - alpha_t``.

    ``t``: shape ``(B,)``. Returns the masked sequence (same shape as ``x0``).
    """
    sched = get_mask_schedule(schedule)
    a = sched.alpha(t.to(torch.float64).cpu()).to(x0.device).view(-1, *([1] * (x0.ndim - 1)))
    u = rand(x0.shape, generator, dtype=torch.float64).to(x0.device)  # CPU draw: generator-portable
    return torch.where(u < 1.0 - a, torch.full_like(x0, mask_id), x0)


def masked_diffusion_loss(
    model: TokenModel,
    x0: Tensor,
    schedule: str | MaskSchedule = "linear",
    generator: Generator = None,
    loss_type: str = "elbo",
    t_min: float = 1e-4,
) -> Tensor:
    """Negative ELBO per token (nats), a Monte-Carlo estimate over one ``t`` (or ``k``) per sequence.

    ``loss_type="elbo"``: ``t ~ U(t_min, 1)`` with low-discrepancy (stratified) draws over the batch,
    weight ``-alpha'_t/(1-alpha_t)``. ``loss_type="any_order"``: ``k ~ U{1..L}`` masked positions, weight
    ``L/k`` (equal in expectation for any schedule, Zheng et al. Sec. 3.1).
    """
    check_choice(loss_type, ("elbo", "any_order"), "loss_type")
    vocab = model_vocab(model)
    check_tokens(x0, vocab, "x0", allow_mask=False)
    b, length = x0.shape
    u0 = rand((1,), generator, dtype=torch.float64).to(x0.device)
    strat = (u0 + torch.arange(b, dtype=torch.float64, device=x0.device) / b) % 1.0
    if loss_type == "elbo":
        sched = get_mask_schedule(schedule)
        t = t_min + (1.0 - t_min) * strat
        xt = mask_tokens(x0, t, sched, vocab, generator)
        weight = sched.elbo_weight(t)
    else:
        k = (strat * length).floor().long() + 1
        noise = rand(x0.shape, generator, dtype=torch.float64).to(x0.device)
        rank = noise.argsort(dim=1).argsort(dim=1)
        xt = torch.where(rank < k[:, None], torch.full_like(x0, vocab), x0)
        weight = length / k.to(torch.float64)
    logits = model(xt)
    nll = F.cross_entropy(logits.transpose(1, 2).float(), x0, reduction="none")
    masked = (xt == vocab).float()
    per_seq = (nll * masked).sum(1) * weight.to(nll.dtype)
    return per_seq.mean() / length


def predictive_probs(model: TokenModel, x: Tensor) -> Tensor:
    """``p_theta(x_0^i | x)`` as float64 probabilities ``(B, L, K)``; unmasked positions become one-hot.

    The carry-over of unmasked tokens is the SUBS parameterisation (MDLM): a clean token never changes.
    """
    vocab = model_vocab(model)
    logits = model(x)
    if not torch.is_tensor(logits) or logits.shape != (*x.shape, vocab):
        got = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"model output: expected logits of shape {(*x.shape, vocab)} (B, L, K), got {got}")
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    keep = x != vocab
    onehot = F.one_hot(x.clamp_max(vocab - 1), vocab).to(probs.dtype)
    return torch.where(keep[..., None], onehot, probs)


@torch.no_grad()
def negative_elbo(
    model: TokenModel, x0: Tensor, schedule: str | MaskSchedule = "linear", n_t: int = 16, generator: Generator = None
) -> float:
    """Mean negative ELBO per token (nats) of ``x0`` averaged over ``n_t`` stratified time draws."""
    vals = [float(masked_diffusion_loss(model, x0, schedule, generator)) for _ in range(n_t)]
    return sum(vals) / len(vals)
