"""Randomness with explicit generators and per-sample seeds (EDM's convention).

A sample never depends on the rest of its batch when each sample draws from its own generator:
pass a list of ``torch.Generator`` (one per sample), e.g. from :func:`generators_from_seeds`.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

Generator = Union[torch.Generator, Sequence[torch.Generator], None]


def generators_from_seeds(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per sample, seeded with ``seeds[i]``."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def generator_list(generator: Generator) -> list[torch.Generator]:
    """``generator`` as a list of ``torch.Generator`` (one per sample); ``TypeError`` naming ``generator``
    when it is neither a generator nor a sequence of them."""
    if isinstance(generator, torch.Generator):
        return [generator]
    try:
        gens = list(generator)  # type: ignore[arg-type]
    except TypeError:
        gens = None
    if gens is None or not all(isinstance(g, torch.Generator) for g in gens):
        raise TypeError(
            f"generator: expected None, a torch.Generator or a list of them (one per sample), "
            f"got {type(generator).__name__}"
        )
    return gens


def _draw(
    fn, shape: Sequence[int], generator: Generator, dtype: torch.dtype, device: str | torch.device
) -> torch.Tensor:
    """``fn(shape)`` from one generator, or row ``i`` from ``generator[i]`` (per-sample streams)."""
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        return fn(shape, generator=generator, dtype=dtype, device=device)
    gens = generator_list(generator)
    if not shape or len(gens) != shape[0]:
        raise ValueError(f"generator: got {len(gens)} generators for a batch of {shape[0] if shape else 'none'}")
    return torch.stack([fn(shape[1:], generator=g, dtype=dtype, device=device) for g in gens])


def randn(
    shape: Sequence[int],
    generator: Generator = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Standard normal noise. With a list of generators, row ``i`` comes from ``generator[i]``."""
    return _draw(torch.randn, shape, generator, dtype, device)


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    return randn(x.shape, generator, x.dtype, x.device)


def rand(
    shape: Sequence[int],
    generator: Generator = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Uniform [0, 1) noise with the same per-sample generator convention as :func:`randn`."""
    return _draw(torch.rand, shape, generator, dtype, device)
