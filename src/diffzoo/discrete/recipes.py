"""``diffzoo train masked-digits``: a time-agnostic masked diffusion model on the discrete digits view.

Trains :class:`diffzoo.models.transformer.MaskedTransformer` (64 tokens x 17 levels + [MASK]) with the
continuous-time masked-diffusion ELBO (:func:`diffzoo.discrete.masked.masked_diffusion_loss`) on the
digits train split, with diffzoo's trainer, and ships the EMA model to the zoo.
"""

from __future__ import annotations

import argparse
import logging

import torch

from diffzoo.discrete.masked import masked_diffusion_loss, negative_elbo
from diffzoo.train.recipes import register_recipe

log = logging.getLogger(__name__)


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine"])
    p.add_argument("--loss-type", default="elbo", choices=["elbo", "any_order"])
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--out-dir", default="runs/masked-digits")
    p.add_argument("--name", default="masked-digits", help="zoo name to save the EMA model under ('' = don't)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")


@register_recipe("masked-digits", "masked (absorbing) discrete diffusion on 8x8 digits (64 tokens, 17 levels)",
                 _add_args)
def train_masked_digits(args: argparse.Namespace) -> dict:
    """Train, evaluate the test negative ELBO (nats/token, bits/token) and save to the zoo."""
    from diffzoo.data import digits
    from diffzoo.models.registry import build
    from diffzoo.train.trainer import TrainConfig, train

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    arch_config = dict(vocab_size=digits.NUM_LEVELS, seq_len=64, d_model=args.d_model, n_layers=args.n_layers,
                       n_heads=args.n_heads, dropout=args.dropout)
    model = build("masked-transformer", **arch_config)
    data = digits.load("train").levels

    def sample_batch(step: int, gen: torch.Generator, bs: int) -> torch.Tensor:
        return data[torch.randint(len(data), (bs,), generator=gen)]

    def loss_fn(m: torch.nn.Module, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        m.vocab_size, m.seq_len = digits.NUM_LEVELS, 64  # visible through DDP wrappers too
        return masked_diffusion_loss(m, batch, args.schedule, gen, args.loss_type)

    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      warmup_steps=args.warmup_steps, ema_decay=args.ema_decay, seed=args.seed,
                      out_dir=args.out_dir, ckpt_every=250, log_every=50, extra=vars_json(args))
    res = train(model, loss_fn, sample_batch, cfg)
    ema = res.ema_model.eval()
    gen = torch.Generator().manual_seed(1234)
    test = digits.load("test").levels
    nelbo = negative_elbo(ema, test, args.schedule, n_t=32, generator=gen)
    metrics = {"test_nelbo_nats_per_token": nelbo, "test_nelbo_bits_per_token": nelbo / 0.6931471805599453,
               "final_train_loss": sum(res.losses[-50:]) / max(1, len(res.losses[-50:]))}
    if args.name:
        save_masked_model(args.name, ema, arch_config, args.schedule, args.seed, res.step, metrics)
    return metrics


def vars_json(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}


def save_masked_model(name: str, model: torch.nn.Module, arch_config: dict, schedule: str, seed: int,
                      steps: int, metrics: dict) -> None:
    """Ship a masked model to the zoo. ``schedule`` is ``None`` (no Gaussian schedule: ``denoiser()``
    refuses it); the masking schedule is recorded as ``mask_schedule``, the task as ``dataset``."""
    from diffzoo import zoo
    from diffzoo.train.cli import command_line

    zoo.save(name, model, "masked-transformer", arch_config, schedule=None, prediction_type="masked-x0-logits",
             train_command=command_line(), seed=seed, steps=steps, metrics=metrics, mask_schedule=schedule,
             dataset="digits-discrete (64 tokens, 17 levels, mask id 17)")
    log.info("saved %s to the zoo", name)
