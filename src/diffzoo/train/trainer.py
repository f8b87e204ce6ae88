"""diffzoo's trainer: AdamW + EMA + linear LR warm-up + gradient clipping, on Hugging Face Accelerate.

Everything a diffusion paper trains in diffzoo goes through :func:`train`::

    result = train(model, loss_fn, sample_batch, TrainConfig(steps=1000, out_dir="runs/x"))

* ``sample_batch(step, generator, batch_size) -> batch`` draws the batch of optimisation step ``step``
  from a generator seeded by ``(seed, step, process)`` only, so a run that is killed and resumed sees
  exactly the batches of an uninterrupted run (per-step seeded batches; no data-loader state).
* ``loss_fn(model, batch, generator) -> scalar`` gets the same per-step CPU generator for its own noise
  (timesteps, epsilon, label dropout); draw on the CPU and move to the batch's device.
* The EMA model follows ``ema <- d * ema + (1 - d) * theta`` after each step (Polyak averaging, as in
  DDPM, Ho et al. 2020, App. B) with ``d = min(ema_decay, (1 + n) / (10 + n))`` (warm-up of the decay).
* The learning rate is ``lr * min(1, (n + 1) / warmup_steps)`` at step ``n``, recomputed from the
  step counter, so it resumes exactly.
* Checkpoints (model, EMA, AdamW state, losses, step, config) are atomic safetensors files in
  ``out_dir`` (:mod:`diffzoo.train.checkpoint`); a new call with the same ``out_dir`` resumes, bit for
  bit as an uninterrupted run, also after a SIGKILL mid-step or during a checkpoint write (it then resumes
  from the previous checkpoint).

Multi-GPU: ``accelerate launch -m diffzoo.cli train RECIPE ...``; each process draws its share of the
batch (``batch_size // num_processes``) from its own per-step generator.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from diffzoo.core.errors import check_range
from diffzoo.core.parameterization import canonical_prediction_type, from_x0_eps
from diffzoo.train.checkpoint import load_checkpoint, remove_stale_temps, save_checkpoint

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, Any, torch.Generator], torch.Tensor]
BatchFn = Callable[[int, torch.Generator, int], Any]


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (all of it is stored in every checkpoint)."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    out_dir: str | None = None
    ckpt_every: int = 500
    log_every: int = 100
    progress: bool = True
    keep_checkpoints: bool = False  # also keep checkpoint-<step>.safetensors for every save
    extra: dict[str, Any] = field(default_factory=dict)  # recipe options, recorded in checkpoints

    def validate(self) -> None:
        for name in ("steps", "batch_size", "ckpt_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        check_range(self.lr, "lr", 0, None, lo_open=True)
        check_range(self.ema_decay, "ema_decay", 0, 1)
        check_range(self.weight_decay, "weight_decay", 0)
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected >= 0, got {self.warmup_steps}")


@dataclass
class TrainResult:
    model: torch.nn.Module
    ema_model: torch.nn.Module
    step: int
    losses: list[float]


def step_generator(seed: int, step: int, process: int = 0) -> torch.Generator:
    """The CPU generator of optimisation step ``step``: a pure function of ``(seed, step, process)``."""
    s = np.random.SeedSequence([int(seed), int(step), int(process)]).generate_state(2, dtype=np.uint32)
    return torch.Generator("cpu").manual_seed(int(s[0]) << 32 | int(s[1]))


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to ``cfg.lr`` over ``cfg.warmup_steps`` steps, then constant."""
    if cfg.warmup_steps <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def _to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d.pop("progress", None)
    d.pop("keep_checkpoints", None)
    return d


def train(
    model: torch.nn.Module,
    loss_fn: LossFn,
    sample_batch: BatchFn,
    cfg: TrainConfig,
    param_groups: list[dict[str, Any]] | None = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` optimisation steps (resuming from ``cfg.out_dir`` if possible).

    ``param_groups``: optional AdamW parameter groups of ``model``'s parameters, each with an ``lr_mult``
    (its learning rate is ``lr_mult`` times the schedule's); default: one group, multiplier 1.

    Returns the trained model (unwrapped, in train mode), its EMA copy (eval mode), the final step
    and the per-step losses (of the main process).
    """
    from accelerate import Accelerator

    cfg.validate()
    acc = Accelerator()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    groups = param_groups if param_groups is not None else [{"params": list(model.parameters()), "lr_mult": 1.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, losses = 0, []
    if cfg.out_dir is not None:
        if acc.is_main_process:
            for p in remove_stale_temps(cfg.out_dir):  # a previous run killed during a checkpoint write
                log.info("removed %s (a checkpoint write that was killed)", p)
        restored = load_checkpoint(cfg.out_dir, model, ema, opt)
        if restored is not None:
            start, losses = restored
            log.info("resuming from %s at step %d", cfg.out_dir, start)
    model, opt = acc.prepare(model, opt)
    ema.to(acc.device)
    per_proc = max(1, cfg.batch_size // acc.num_processes)
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc="train",
        disable=not (cfg.progress and acc.is_main_process),
        dynamic_ncols=True,
    )
    for step in bar:
        loss = _train_step(model, opt, acc, loss_fn, sample_batch, cfg, step, per_proc)
        ema_update(ema, acc.unwrap_model(model), min(cfg.ema_decay, (1 + step) / (10 + step)))
        losses.append(loss)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            recent = losses[-cfg.log_every :]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
            log.info("step %d loss %.5f lr %.2e", done, sum(recent) / len(recent), lr_at(cfg, step))
        if cfg.out_dir is not None and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            _save(acc, cfg, model, ema, opt, done, losses)
    bar.close()
    return TrainResult(acc.unwrap_model(model), ema, max(start, cfg.steps), losses)


def _train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    acc: Any,
    loss_fn: LossFn,
    sample_batch: BatchFn,
    cfg: TrainConfig,
    step: int,
    per_proc: int,
) -> float:
    gen = step_generator(cfg.seed, step, acc.process_index)
    batch = _to_device(sample_batch(step, gen, per_proc), acc.device)
    for g in opt.param_groups:
        g["lr"] = lr_at(cfg, step) * g.get("lr_mult", 1.0)
    model.train()
    loss = loss_fn(model, batch, gen)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss: non-finite value {loss.item()} at step {step}")
    opt.zero_grad(set_to_none=True)
    acc.backward(loss)
    if cfg.grad_clip and cfg.grad_clip > 0 and math.isfinite(cfg.grad_clip):
        acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return float(acc.reduce(loss.detach(), reduction="mean").item())


def _save(
    acc: Any,
    cfg: TrainConfig,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    losses: list[float],
) -> None:
    acc.wait_for_everyone()
    if acc.is_main_process:
        path = save_checkpoint(Path(cfg.out_dir), acc.unwrap_model(model), ema, opt, step, _config_dict(cfg), losses)
        if cfg.keep_checkpoints:
            keep = path.with_name(f"checkpoint-{step}.safetensors")
            keep.unlink(missing_ok=True)
            os.link(path, keep)
    acc.wait_for_everyone()


def diffusion_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    schedule: Any,
    generator: torch.Generator,
    cond: Any = None,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """The simple denoising loss ``E_{t, eps} |f(x_t, t, c) - target|^2`` (Ho et al. 2020, Eq. 14).

    ``t`` is uniform over the discrete schedule's training steps (or ``U[t_min, t_max]`` for a
    continuous one), ``x_t = alpha_t x0 + sigma_t eps``, and the target is ``eps`` converted to
    ``prediction_type`` by :func:`diffzoo.core.parameterization.from_x0_eps`. Noise is drawn on the
    CPU from ``generator`` (resume-exact) and moved to ``x0``'s device.
    """

    prediction_type = canonical_prediction_type(prediction_type)
    b = x0.shape[0]
    if schedule.kind == "discrete":
        t = torch.randint(int(schedule.t_max) + 1, (b,), generator=generator).to(torch.float64)
    else:
        t = schedule.t_min + (schedule.t_max - schedule.t_min) * torch.rand(b, generator=generator, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator).to(device=x0.device, dtype=x0.dtype)
    alpha, sigma = schedule.alpha_sigma(t)
    shape = (b,) + (1,) * (x0.ndim - 1)
    a = alpha.to(x0.device, x0.dtype).reshape(shape)
    s = sigma.to(x0.device, x0.dtype).reshape(shape)
    x_t = a * x0 + s * eps
    if prediction_type == "epsilon":
        target = eps
    else:
        da = ds = None
        if prediction_type == "velocity":
            da, ds = (v.to(x0.device, x0.dtype).reshape(shape) for v in schedule.d_alpha_sigma(t))
        target = from_x0_eps(x0, eps, prediction_type, a, s, da, ds)
    pred = model(x_t, t.to(x0.device, torch.float32), cond)
    return torch.nn.functional.mse_loss(pred, target)
