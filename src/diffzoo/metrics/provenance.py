"""Measurements of the provenance family that need zoo models: Safe-SD-style's trigger-gated watermark.

:func:`evaluate_safe_sd` generates the same captions from the same noise with the base TinySD and a
Safe-SD-style TinySD (with and without its trigger word) and reports the watermark's bit accuracy, TPR at
1% FPR and caption accuracy (the zoo's shapes classifier).
"""

from __future__ import annotations

import torch

from diffzoo import zoo
from diffzoo.data import shapes
from diffzoo.latent.model import LatentModel
from diffzoo.metrics.image import psnr, ssim
from diffzoo.models.tinysd import scene_correct
from diffzoo.provenance.bits import bit_accuracy, tpr_at_fpr
from diffzoo.provenance.regen import generate_latents
from diffzoo.provenance.watermarks import Watermark
from diffzoo.zoo.provenance import EVAL_SEED

Tensor = torch.Tensor


def with_trigger(prompts: list[str], trigger: str) -> list[str]:
    return [f"{p} {trigger}".strip() for p in prompts]


@torch.no_grad()
def evaluate_safe_sd(
    model: LatentModel,
    base: LatentModel,
    wm: Watermark,
    message: Tensor,
    trigger: str,
    n: int = 100,
    num_steps: int = 20,
    guidance: float = 5.0,
    seed: int = EVAL_SEED + 5,
) -> tuple[dict, dict[str, Tensor]]:
    """Safe-SD-style's measurements on ``n`` random scenes' captions, every model from the same noise:
    the watermark's bit accuracy on trigger / plain generations and on the base TinySD's, TPR at 1% FPR
    (empirical threshold on the plain generations when there are >= 100, and the exact binomial one), the
    binomial false-positive rate of plain generations, and caption accuracy (shapes classifier: every
    cell and the background right) of base, plain and trigger generations. Returns ``(metrics, images)``."""
    scenes = shapes.random_scenes(int(n), seed=seed)
    prompts = [shapes.caption(s) for s in scenes]

    def generate(m: LatentModel, ps: list[str]) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        return m.decode(generate_latents(m, ps, num_steps=num_steps, guidance=guidance, generator=g))

    imgs = {"base": generate(base, prompts), "plain": generate(model, prompts)}
    imgs["trigger"] = generate(model, with_trigger(prompts, trigger))
    target = message.reshape(1, -1).expand(int(n), -1)
    acc = {k: bit_accuracy(wm.decode(v, target.shape[1]), target) for k, v in imgs.items()}
    binom = tpr_at_fpr(acc["trigger"], bits=target.shape[1], fpr=0.01)
    clf = zoo.load("shapes-classifier").model.eval()
    metrics = {
        "eval_n": int(n),
        "sampler": f"ddim {num_steps} steps, cfg {guidance}",
        **{f"bit_acc_{k}": round(float(v.mean()), 4) for k, v in acc.items()},
        "tpr_at_1pct_fpr": round(tpr_at_fpr(acc["trigger"], acc["plain"], fpr=0.01)["tpr"], 4) if n >= 100 else None,
        "tpr_binomial": round(binom["tpr"], 4),
        "fpr_binomial_plain": round(float((acc["plain"] >= binom["threshold"] - 1e-9).double().mean()), 4),
        **{
            f"caption_acc_{k}": round(float(scene_correct(clf.predict(v), scenes).float().mean()), 4)
            for k, v in imgs.items()
        },
        "psnr_trigger_vs_plain_db": round(float(psnr(imgs["trigger"], imgs["plain"])), 2),
        "ssim_trigger_vs_plain": round(float(ssim(imgs["trigger"], imgs["plain"])), 4),
    }
    return metrics, imgs
