"""Training: the Accelerate-based trainer, EMA, atomic safetensors checkpoints, the recipe registry.

``train(model, loss_fn, sample_batch, TrainConfig(...)) -> TrainResult`` (see :mod:`diffzoo.train.trainer`);
``diffzoo train RECIPE [options]`` runs a registered recipe (:mod:`diffzoo.recipes.registry`).
"""

from diffzoo.train.checkpoint import (
    atomic_save_safetensors,
    load_checkpoint,
    read_safetensors,
    save_checkpoint,
)
from diffzoo.train.trainer import (
    TrainConfig,
    TrainResult,
    diffusion_loss,
    ema_update,
    lr_at,
    step_generator,
    train,
)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "atomic_save_safetensors",
    "diffusion_loss",
    "ema_update",
    "load_checkpoint",
    "lr_at",
    "read_safetensors",
    "save_checkpoint",
    "step_generator",
    "train",
]
