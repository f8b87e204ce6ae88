"""Categorical sampling, in float64 by default, and the float32 variant that lowers the temperature.

Exponential-race Gumbel-max (Zheng et al., arXiv 2409.02908, Sec. 5): with ``E_k = -log U_k``,
``U_k ~ U(0, 1)`` i.i.d., ``argmax_k p_k / E_k`` is distributed as ``Cat(p)``. Widely copied masked
diffusion code evaluates ``argmax(p / (1e-10 - log(U + 1e-10)))`` in float32. There ``U`` is a multiple
of ``2^-24``, so ``E`` never falls below ``~2^-24``: the implied Gumbel noise ``-log E`` is truncated at
``24 ln 2 ~ 16.6`` (float64: ``53 ln 2 ~ 36.7``). Tokens whose probability is below ``~1e-7`` times the
largest one can then never win, and small ones are under-sampled -- an effective temperature below 1.
It matters most when ``p`` carries the tiny per-step unmasking factor of a many-step ancestral sampler.
Float64 is therefore the default everywhere in :mod:`diffzoo.discrete`.
"""

from __future__ import annotations

import torch

from diffzoo.core.errors import check_choice, check_tensor
from diffzoo.core.random import Generator, rand

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


def sample_categorical(probs: torch.Tensor, generator: Generator = None, precision: str = "float64") -> torch.Tensor:
    """Draw one index per row of ``probs`` (``(B, ..., K)``, rows summing to 1) by the exponential race.

    ``precision`` is the dtype of the race; ``"float32"`` reproduces the truncated-Gumbel bug, kept
    only for the benchmark that measures it. ``generator`` may be a list (one per batch row).
    """
    check_tensor(probs, "probs", floating=True)
    check_choice(precision, PRECISIONS, "precision")
    p = probs.to(PRECISIONS[precision])
    return (p / race_noise(p.shape, generator, precision, p.device)).argmax(dim=-1)


def race_noise(shape, generator: Generator = None, precision: str = "float64", device="cpu") -> torch.Tensor:
    """The exponential variates ``E = 1e-10 - log(U + 1e-10)`` of the race, computed in ``precision``.

    In float32 ``E >= -log(1 - 2^-24) ~ 5.96e-8`` always (the Gumbel ``-log E`` is capped at ~16.6).
    """
    check_choice(precision, PRECISIONS, "precision")
    dtype = PRECISIONS[precision]
    u = rand(shape, generator, dtype=dtype, device=device)
    return 1e-10 - torch.log(u + 1e-10)


def gumbel_softmax_st(logits: torch.Tensor, tau: float = 0.5, generator: Generator = None) -> torch.Tensor:
    """Straight-through Gumbel-softmax (float64 noise): a hard one-hot forward, soft gradient backward.

    ``y_soft = softmax((logits + g) / tau)``, ``g = -log(-log U)``; returns ``y_hard - y_soft.detach() + y_soft``.
    """
    u = rand(logits.shape, generator, dtype=torch.float64, device=logits.device)
    g = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16))).to(logits.dtype)
    y_soft = torch.softmax((logits + g) / tau, dim=-1)
    y_hard = torch.nn.functional.one_hot(y_soft.argmax(-1), logits.shape[-1]).to(y_soft.dtype)
    return y_hard - y_soft.detach() + y_soft
