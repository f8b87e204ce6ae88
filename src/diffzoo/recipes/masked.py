"""Training recipes of masked discrete diffusion: ``diffzoo train masked-digits | masked-shapes | masked-countdown``.

Both train :class:`diffzoo.models.transformer.MaskedTransformer` with the continuous-time masked-
diffusion ELBO (:func:`diffzoo.discrete.masked.masked_diffusion_loss`) and diffzoo's trainer, evaluate
the EMA model's test negative ELBO and, with ``--zoo-name``, ship it to the zoo:

* ``masked-digits``: the discrete digits view, 64 tokens (one per pixel) over 17 grey levels.
* ``masked-shapes``: the shapes world tokenised by a patch VQ (MaskGIT-style tokens, at toy scale):
  every 4x4 RGB patch of a 32x32 scene is one of ``--codes`` k-means codes learned from rendered
  scenes, so a scene is 64 tokens; the codebook ships inside the model (buffer ``codebook``) and
  :func:`diffzoo.discrete.tokens.token_space` decodes tokens back to pixels.
* ``masked-countdown``: the procedural countdown task (:mod:`diffzoo.data.countdown`; 256 tokens over
  32 values, LSD arXiv 2509.19962 Fig. 2b), with the exact error rate of FHS samples recorded.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

import torch

from diffzoo.data import countdown, digits, shapes
from diffzoo.discrete.masked import masked_diffusion_loss, negative_elbo
from diffzoo.discrete.samplers import first_hitting_sample
from diffzoo.discrete.tokens import TokenSpace, kmeans
from diffzoo.metrics.image import psnr
from diffzoo.models.registry import build
from diffzoo.recipes.registry import (
    add_train_args,
    check_train_args,
    final_loss,
    register_recipe,
    ship,
    train_config_from_args,
)
from diffzoo.train.trainer import train
from diffzoo.zoo import MASKED_PREDICTION

log = logging.getLogger(__name__)
Tensor = torch.Tensor


def _model_args(
    p: argparse.ArgumentParser,
    name: str,
    steps: int,
    d_model: int,
    n_layers: int = 4,
    dropout: float = 0.1,
    batch_size: int = 256,
    warmup_steps: int = 500,
) -> None:
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine"], help="masking schedule")
    p.add_argument("--loss-type", default="elbo", choices=["elbo", "any_order"])
    p.add_argument("--d-model", type=int, default=d_model)
    p.add_argument("--n-layers", type=int, default=n_layers)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=dropout)
    add_train_args(
        p,
        steps=steps,
        batch_size=batch_size,
        lr=1e-3,
        weight_decay=0.01,
        warmup_steps=warmup_steps,
        ema_decay=0.999,
        grad_clip=1.0,
        ckpt_every=1000,
        log_every=100,
        out_dir=f"runs/{name}",
        threads=1,
    )


def _digits_args(p: argparse.ArgumentParser) -> None:
    _model_args(p, "masked-digits", steps=20000, d_model=96)


def _countdown_args(p: argparse.ArgumentParser) -> None:
    _model_args(p, "masked-countdown", 2500, 48, n_layers=2, dropout=0.0, batch_size=32, warmup_steps=100)
    p.add_argument("--train-seqs", type=int, default=100000, help="countdown training sequences (seed 0)")
    p.add_argument("--eval-samples", type=int, default=64, help="FHS samples whose error rate is recorded")
    p.add_argument("--test-seqs", type=int, default=1000, help="test sequences (seed 1) of the NELBO")


def _shapes_args(p: argparse.ArgumentParser) -> None:
    _model_args(p, "masked-shapes", steps=20000, d_model=128)
    p.add_argument("--train-scenes", type=int, default=60000, help="rendered training scenes")
    p.add_argument("--codes", type=int, default=256, help="VQ codebook size K")
    p.add_argument("--patch", type=int, default=4, help="patch side of one token (pixels)")
    p.add_argument("--kmeans-scenes", type=int, default=4000, help="scenes whose patches fit the codebook")
    p.add_argument("--kmeans-iters", type=int, default=30)


def train_masked(
    args: argparse.Namespace,
    data: Tensor,
    test: Tensor,
    vocab: int,
    arch_extra: dict | None = None,
    dataset: str = "",
    extra_metrics: Callable[[torch.nn.Module], dict] | None = None,
    model_init: Callable[[torch.nn.Module], None] | None = None,
) -> dict:
    """Shared body of the masked recipes: train on token rows ``data (N, L)``, evaluate the test
    negative ELBO (nats/token and bits/token) and, with ``--zoo-name``, ship the EMA model."""

    cfg = train_config_from_args(args, **vars_json(args))  # also applies --threads
    torch.manual_seed(args.seed)
    length = data.shape[1]
    arch_config = dict(
        vocab_size=vocab,
        seq_len=length,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        dropout=args.dropout,
        **(arch_extra or {}),
    )
    model = build("masked-transformer", **arch_config)
    if model_init is not None:
        model_init(model)

    def sample_batch(step: int, gen: torch.Generator, bs: int) -> Tensor:
        return data[torch.randint(len(data), (bs,), generator=gen)].long()  # data may be stored as uint8

    def loss_fn(m: torch.nn.Module, batch: Tensor, gen: torch.Generator) -> Tensor:
        m.vocab_size, m.seq_len = vocab, length  # visible through DDP wrappers too
        return masked_diffusion_loss(m, batch, args.schedule, gen, args.loss_type)

    res = train(model, loss_fn, sample_batch, cfg)
    ema = res.ema_model.eval()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():  # on the training device; 16 stratified times over at most 1000 test rows
        nelbo = negative_elbo(ema, test[:1000].to(next(ema.parameters()).device), args.schedule, n_t=16, generator=gen)
    ema = ema.cpu()
    metrics = {
        "test_nelbo_nats_per_token": nelbo,
        "test_nelbo_bits_per_token": nelbo / 0.6931471805599453,
        "final_train_loss": final_loss(res),
    }
    if extra_metrics is not None:
        metrics.update(extra_metrics(ema))
    # no Gaussian schedule (``denoiser()`` refuses it): the masking schedule is ``mask_schedule``
    ship(
        args,
        ema,
        "masked-transformer",
        arch_config,
        kind="masked",
        sample_shape=(length,),
        steps=res.step,
        schedule=None,
        prediction_type=MASKED_PREDICTION,
        metrics=metrics,
        mask_schedule=args.schedule,
        dataset=dataset,
    )
    return metrics


@register_recipe(
    "masked-digits", "masked (absorbing) discrete diffusion on 8x8 digits (64 tokens, 17 levels)", _digits_args
)
def train_masked_digits(args: argparse.Namespace) -> dict:
    """Train on the digits train split (levels 0..16), evaluate on the test split, ship to the zoo."""

    return train_masked(
        args,
        digits.load("train").levels,
        digits.load("test").levels,
        digits.NUM_LEVELS,
        dataset="digits-discrete (64 tokens, 17 levels, mask id 17)",
    )


@register_recipe(
    "masked-countdown",
    "masked diffusion on the countdown task (256 tokens, 32 values; LSD / Informed correctors)",
    _countdown_args,
)
def train_masked_countdown(args: argparse.Namespace) -> dict:
    """Train on ``--train-seqs`` procedural sequences, record the test NELBO and the exact error rate of
    ``--eval-samples`` first-hitting samples (the many-step limit of the sampler)."""

    check_train_args(args)
    train_seqs = countdown.load("train", args.train_seqs).to(torch.uint8)

    def error_metrics(model: torch.nn.Module) -> dict:
        x = first_hitting_sample(model, args.eval_samples, generator=torch.Generator().manual_seed(0))
        return {
            "fhs_error_rate": countdown.error_rate(x),
            "fhs_sequence_error_rate": countdown.sequence_error_rate(x),
        }

    return train_masked(
        args,
        train_seqs,
        countdown.load("test", args.test_seqs),
        countdown.NUM_VALUES,
        dataset=f"countdown ({countdown.SEQ_LEN} tokens, values 0..{countdown.NUM_VALUES - 1}, mask id "
        f"{countdown.NUM_VALUES}; {args.train_seqs} procedural training sequences)",
        extra_metrics=error_metrics,
    )


def shapes_vq(n_scenes: int, codes: int, patch: int, iters: int, seed: int):
    """The patch-VQ token space of the shapes world: k-means over the patches of ``n_scenes`` scenes."""

    img = shapes.render_batch(shapes.random_scenes(n_scenes, seed + 7919)).to(torch.float64)
    blank = TokenSpace(torch.zeros(1, 3 * patch * patch), (3, shapes.SIZE, shapes.SIZE), patch)
    patches = blank.image_to_embed(img).reshape(-1, blank.dim)
    cb = kmeans(patches, codes, iters, torch.Generator().manual_seed(seed))
    return TokenSpace(cb, blank.image_shape, patch)


def shapes_token_data(space, n: int, seed: int) -> tuple[list, Tensor]:
    """``n`` scenes of the stream ``seed`` and their token ids ``(n, L)``."""

    scenes = shapes.random_scenes(n, seed)
    toks = torch.cat([space.encode(shapes.render_batch(scenes[i : i + 2000])) for i in range(0, n, 2000)])
    return scenes, toks


@register_recipe(
    "masked-shapes", "masked diffusion on patch-VQ tokens of shapes scenes (64 tokens, K codes)", _shapes_args
)
def train_masked_shapes(args: argparse.Namespace) -> dict:
    """Fit the VQ codebook, tokenise ``--train-scenes`` scenes, train, and record the tokenizer's
    reconstruction PSNR and the test NELBO on 2000 unseen scenes."""

    check_train_args(args)  # before the codebook fit and the tokenisation
    torch.manual_seed(args.seed)
    space = shapes_vq(args.kmeans_scenes, args.codes, args.patch, args.kmeans_iters, args.seed)
    _, train_toks = shapes_token_data(space, args.train_scenes, args.seed)
    test_scenes, test_toks = shapes_token_data(space, 2000, args.seed + 1)
    recon = space.decode(test_toks).float()
    tok_psnr = float(psnr(recon, shapes.render_batch(test_scenes)))
    log.info("VQ tokenizer: %d codes of %dx%d patches, test PSNR %.2f dB", args.codes, args.patch, args.patch, tok_psnr)

    def init(model: torch.nn.Module) -> None:
        model.codebook.copy_(space.codebook.to(model.codebook.dtype))

    return train_masked(
        args,
        train_toks,
        test_toks,
        args.codes,
        dict(codebook_dim=space.dim, image_shape=list(space.image_shape), patch=args.patch),
        dataset=f"shapes-vq ({space.seq_len} tokens = {args.patch}x{args.patch} RGB patches, "
        f"{args.codes} k-means codes, mask id {args.codes})",
        extra_metrics=lambda m: {"vq_test_psnr_db": tok_psnr},
        model_init=init,
    )


def vars_json(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}
