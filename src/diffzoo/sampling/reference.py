"""Reference implementations to check and benchmark diffzoo's samplers against: diffusers' schedulers
and k-diffusion's samplers, driven by the same :class:`~diffzoo.core.denoiser.Denoiser`.

k-diffusion's package ``__init__`` imports torchvision, clip, wandb, ...; only its ``sampling.py`` is
needed, so :func:`load_k_diffusion_sampling` loads that file under a private package name with a
minimal ``utils`` stub (``append_dims``). It needs ``scipy``, ``torchdiffeq`` and ``torchsde``.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.errors import check_choice
from diffzoo.sampling.timesteps import validate_timesteps

Tensor = torch.Tensor

_KD_PACKAGE = "_diffzoo_k_diffusion"


def _append_dims(x: Tensor, target_dims: int) -> Tensor:
    """``x`` with trailing singleton dimensions up to ``target_dims`` (k-diffusion's utils.append_dims)."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"x: has {x.ndim} dims, more than target_dims={target_dims}")
    return x[(...,) + (None,) * missing]


def load_k_diffusion_sampling() -> types.ModuleType:
    """k-diffusion's ``sampling`` module, loaded without its package ``__init__`` (cached)."""
    name = f"{_KD_PACKAGE}.sampling"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("k_diffusion: not installed (pip install k-diffusion --no-deps)")
    root = Path(next(iter(spec.submodule_search_locations)))
    pkg = types.ModuleType(_KD_PACKAGE)
    pkg.__path__ = [str(root)]  # type: ignore[attr-defined]
    utils = types.ModuleType(f"{_KD_PACKAGE}.utils")
    utils.append_dims = _append_dims  # type: ignore[attr-defined]
    pkg.utils = utils  # type: ignore[attr-defined]
    sys.modules[_KD_PACKAGE] = pkg
    sys.modules[utils.__name__] = utils
    sspec = importlib.util.spec_from_file_location(name, root / "sampling.py")
    module = importlib.util.module_from_spec(sspec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        sspec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[name]
        raise
    return module


def k_diffusion_available() -> bool:
    """Whether k-diffusion's ``sampling`` module can be loaded (it is an optional reference)."""
    try:
        load_k_diffusion_sampling()
    except ImportError:  # ModuleNotFoundError included: not installed, or a dependency of it missing
        return False
    return True


def kdiff_model(denoiser: Denoiser, cond: Any = None) -> Callable[[Tensor, Tensor], Tensor]:
    """k-diffusion's model convention ``D(z, sigma) -> x0`` in the VE frame ``z = x / alpha``."""
    sch = denoiser.schedule

    def model(z: Tensor, sigma: Tensor, **_: Any) -> Tensor:
        t = sch.t_from_ve_sigma(sigma.to(torch.float64))
        a = sch.alpha(t).to(z.dtype).reshape(-1, *([1] * (z.ndim - 1)))
        return denoiser.x0(z * a, t, cond)

    return model


KDIFF_SAMPLERS = {
    "euler": "sample_euler",
    "heun": "sample_heun",
    "dpmpp_2m": "sample_dpmpp_2m",
    "lms": "sample_lms",
    "euler_ancestral": "sample_euler_ancestral",
}


@torch.no_grad()
def run_k_diffusion(
    name: str, denoiser: Denoiser, x: Tensor, timesteps: Tensor, cond: Any = None, **kwargs: Any
) -> Tensor:
    """Run k-diffusion's sampler ``name`` on our grid: ``sigmas = ve_sigma(timesteps)``, starting from
    ``z = x / alpha_{t_0}``; returns the result mapped back to ``x = alpha_{t_N} z``."""
    check_choice(name, KDIFF_SAMPLERS, "name")
    kd = load_k_diffusion_sampling()
    t = validate_timesteps(denoiser.schedule, timesteps)
    a = denoiser.schedule.alpha(t)
    sigmas = denoiser.schedule.ve_sigma(t).to(x.dtype)
    z = getattr(kd, KDIFF_SAMPLERS[name])(
        kdiff_model(denoiser, cond), x / a[0].to(x.dtype), sigmas, disable=True, **kwargs
    )
    return z * a[-1].to(x.dtype)


DIFFUSERS_SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "plms": "PNDMScheduler",
    "pndm": "PNDMScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
}


def diffusers_scheduler(name: str, config: dict | None = None, **overrides: Any) -> Any:
    """A diffusers scheduler for our sampler ``name`` with settings that make the algorithms comparable
    (no clipping / thresholding; PNDM's PRK warm start only for ``pndm``)."""
    check_choice(name, DIFFUSERS_SCHEDULERS, "name")
    import diffusers

    cls = getattr(diffusers, DIFFUSERS_SCHEDULERS[name])
    kw: dict[str, Any] = dict(config or {})
    if name in ("ddim", "ddpm"):
        kw.setdefault("clip_sample", False)
    if name in ("plms", "pndm"):
        kw["skip_prk_steps"] = name == "plms"
    if name == "dpmpp_2m":
        kw.setdefault("algorithm_type", "dpmsolver++")
        kw.setdefault("solver_order", 2)
    kw.update(overrides)
    allowed = set(inspect.signature(cls.__init__).parameters)
    return cls(**{k: v for k, v in kw.items() if k in allowed})


@torch.no_grad()
def run_diffusers(
    scheduler: Any,
    denoiser: Denoiser,
    x: Tensor,
    num_steps: int,
    cond: Any = None,
    generator: torch.Generator | None = None,
    **step_kwargs: Any,
) -> Tensor:
    """The standard diffusers loop ``for t in scheduler.timesteps: x = scheduler.step(net(x, t), t, x)``,
    with the denoiser's native prediction as the model output."""
    scheduler.set_timesteps(num_steps)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        xin = scheduler.scale_model_input(x, t)
        out = denoiser(xin, t, cond)
        kw = dict(step_kwargs)
        if generator is not None:
            kw["generator"] = generator
        x = scheduler.step(out, t, x, **kw).prev_sample
    return x
