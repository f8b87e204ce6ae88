"""Forensics (issue 14): detection metrics, DIRE, the hallucination detector and Diff-Protect.

What must be true: the metrics agree with their definitions (perfect / inverted separation, top-M
aggregation monotone and permutation-invariant); DIRE is ~0 for an image on the model's own
deterministic DDIM trajectory and larger for real data; the hallucination score is non-negative,
shift-invariant and flags between-mode samples of a mixture; the SDS gradient has a positive cosine with
the true semantic-loss gradient and saves less for backward than AdvDM; perturbations respect the budget.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffzoo.core.analytic import GaussianMixture
from diffzoo.core.schedules import get_schedule
from diffzoo.forensics.detection import (
    detection_metrics,
    filter_by_score,
    random_patches,
    removal_stats,
    threshold_for_kept,
    top_m_mean,
)
from diffzoo.forensics.dire import dire
from diffzoo.forensics.hallucination import between_modes, hallucination_score, sample_with_x0, score_field
from diffzoo.forensics.protect import _noisy, latent_change, protect, sds_direction, semantic_loss
from diffzoo.sampling import ddim, get_timesteps


def test_detection_metrics_definitions():
    y = torch.tensor([0] * 150 + [1] * 50)
    s = torch.cat([torch.linspace(0, 0.4, 150), torch.linspace(0.6, 1, 50)])
    m = detection_metrics(s, y)
    assert m["auc"] == 1 and m["ap"] == 1 and m["acc"] == 1 and m["tpr_at_1fpr"] == pytest.approx(1)
    inv = detection_metrics(1 - s, y)
    assert inv["auc"] == 0 and inv["acc"] == 0
    few = detection_metrics(s[100:], y[100:])  # 50 negatives: TPR at 1% FPR is not measurable
    assert math.isnan(few["tpr_at_1fpr"])
    with pytest.raises(ValueError, match="labels"):
        detection_metrics(s, torch.full_like(y, 2))
    with pytest.raises(ValueError, match="labels"):
        detection_metrics(s, torch.zeros_like(y))
    with pytest.raises(ValueError, match="scores"):
        detection_metrics(torch.full((200,), float("nan")), y)


def test_top_m_and_patches():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 40, generator=g)
    assert torch.allclose(top_m_mean(s), s.mean(1))
    perm = torch.randperm(40, generator=g)
    assert torch.allclose(top_m_mean(s[:, perm], 7), top_m_mean(s, 7))
    bumped = s.clone()
    bumped[:, 3] += 1
    assert bool((top_m_mean(bumped, 7) >= top_m_mean(s, 7)).all())
    with pytest.raises(ValueError, match="m"):
        top_m_mean(s, 41)
    img = torch.rand(2, 3, 32, 32, generator=g)
    p = random_patches(img, 6, 16, torch.Generator().manual_seed(1))
    assert p.shape == (2, 6, 3, 16, 16)
    with pytest.raises(ValueError, match="size"):
        random_patches(img, 2, 33)


def test_filter_and_removal():
    scores = torch.tensor([0.1, 5.0, 0.2, 7.0, 0.3])
    bad = torch.tensor([False, True, False, True, False])
    keep = filter_by_score(scores, 0.6)
    assert keep.tolist() == [True, False, True, False, True]
    st = removal_stats(scores, bad, threshold_for_kept(scores, ~bad, 1.0))
    assert st["bad_removed"] == 1 and st["good_kept"] == 1
    with pytest.raises(ValueError, match="keep"):
        filter_by_score(scores, 1.5)


# -------------------------------------------------------------------------------------------------
# DIRE
# -------------------------------------------------------------------------------------------------


def _image_mixture_denoiser():
    """The exact denoiser of a 4-mode Gaussian mixture of 1x4x4 "images" (a model that knows its data)."""
    g = torch.Generator().manual_seed(0)
    gm = GaussianMixture(torch.randn(4, 16, generator=g, dtype=torch.float64) * 0.4, 0.1)
    flat = gm.denoiser(get_schedule("linear"))
    return flat.with_net(lambda x, t, c=None: flat.net(x.flatten(1), t, c).view_as(x))


def test_dire_small_on_own_trajectory_large_on_off_manifold():
    den = _image_mixture_denoiser()
    g = torch.Generator().manual_seed(1)
    # generated: the model's own deterministic 20-step DDIM samples
    ts = get_timesteps(den.schedule, 20)
    fake = ddim(den, torch.randn(64, 1, 4, 4, generator=g, dtype=torch.float64), ts).clamp(-1, 1)
    # "real": images the model has not learned (uniform noise images)
    real = torch.rand(64, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    d_fake, d_real = dire(den, fake, 20), dire(den, real, 20)
    assert d_fake.dire.shape == (64, 1, 4, 4) and bool((d_fake.dire >= 0).all())
    assert float(d_fake.score().mean()) < 0.5 * float(d_real.score().mean())
    with pytest.raises(ValueError, match="images"):
        dire(den, real * 3, 20)
    with pytest.raises(ValueError, match="images"):
        dire(den, real.flatten(1), 20)


# -------------------------------------------------------------------------------------------------
# hallucination
# -------------------------------------------------------------------------------------------------


def test_hallucination_score_properties():
    g = torch.Generator().manual_seed(0)
    x0s = torch.randn(10, 8, 2, generator=g)
    h = hallucination_score(x0s)
    assert h.shape == (8,) and bool((h >= 0).all())
    assert torch.allclose(h, hallucination_score(x0s + 3.7), atol=1e-6)
    assert torch.allclose(hallucination_score(x0s[:1].expand(5, 8, 2)), torch.zeros(8, dtype=torch.float64))
    expect = x0s.double().var(0, unbiased=False).mean(-1)
    assert torch.allclose(h, expect)
    with pytest.raises(ValueError, match="x0s"):
        hallucination_score(x0s[:1])


def test_between_modes_and_exact_sampler():
    sch = get_schedule("linear", beta_start=0.001, beta_end=0.2)
    gm = GaussianMixture(torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64), 0.05)
    den = gm.denoiser(sch)
    g = torch.Generator().manual_seed(0)
    x, x0s = sample_with_x0(den, torch.randn(400, 1, generator=g, dtype=torch.float64), 200, 10, generator=g)
    assert x0s.shape == (10, 400, 1)
    # the exact score does not interpolate: (almost) no sample lies between the modes
    assert float(between_modes(x, gm.means, 0.05).double().mean()) < 0.02
    pts = torch.tensor([[1.5], [1.0], [2.5]], dtype=torch.float64)
    assert between_modes(pts, gm.means, 0.05).tolist() == [True, False, True]
    # the exact score at a small t is large and points back toward the nearest mode
    s = score_field(den, torch.tensor([[1.1], [0.9]], dtype=torch.float64), 5.0)
    assert float(s[0]) < 0 < float(s[1])


# -------------------------------------------------------------------------------------------------
# Diff-Protect
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tinysd():
    from diffzoo.zoo.latent import load_tinysd

    return load_tinysd()


@pytest.fixture(scope="module")
def scenes():
    from diffzoo.data import shapes

    return shapes.render_batch(shapes.random_scenes(2, 5))


def test_sds_gradient_is_the_true_gradient_without_unet_jacobian(tinysd, scenes):
    cond = tinysd.encode_prompt([""] * 2)
    # the same t and eps for both gradients (same generator state)
    g_sds, _ = sds_direction(tinysd, scenes, cond, torch.Generator().manual_seed(3))
    x = scenes.clone().requires_grad_(True)
    loss = semantic_loss(tinysd, tinysd.encode_image(x), cond, torch.Generator().manual_seed(3))
    (g_true,) = torch.autograd.grad(loss, x)
    cos = torch.nn.functional.cosine_similarity(g_sds.flatten(), g_true.flatten(), dim=0)
    assert float(cos) > 0.1
    # _noisy draws t then eps: the same generator state gives the same pair
    z = torch.zeros(2, 4, 8, 8)
    a, b = _noisy(tinysd, z, torch.Generator().manual_seed(3)), _noisy(tinysd, z, torch.Generator().manual_seed(3))
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_protect_budget_cost_and_encoder(tinysd, scenes):
    sds = protect(tinysd, scenes, "sds-", steps=2, generator=torch.Generator().manual_seed(0))
    adv = protect(tinysd, scenes, "advdm+", steps=2, generator=torch.Generator().manual_seed(0))
    for r in (sds, adv):
        assert r.linf <= 16 / 255 + 1e-6 and float(r.image.abs().max()) <= 1
    assert sds.saved_bytes < adv.saved_bytes  # the UNet's activations are not kept for backward
    ch = latent_change(tinysd, scenes, adv.image)
    assert ch["ratio"] > 1  # the encoder amplifies the perturbation
    with pytest.raises(ValueError, match="eps"):
        protect(tinysd, scenes, "sds-", eps=0.0, steps=1)
    with pytest.raises(ValueError, match="images"):
        protect(tinysd, scenes[:, :, :16, :16], "sds-", steps=1)


def test_simple_shapes_support_and_detector():
    from diffzoo.data import simple_shapes

    x = simple_shapes.sample(60, 0)
    assert x.shape == (60, 1, 32, 32) and set(x.unique().tolist()) <= {-1.0, 1.0}
    assert not bool(simple_shapes.is_hallucination(x).any())  # real images are in the support
    a = simple_shapes.render([True, False, False], [0.0, 0.0, 0.0])
    b = simple_shapes.render([True, False, False], [1.0, 0.0, 0.0])
    assert simple_shapes.is_hallucination(torch.maximum(a, b)[None]).tolist() == [True]  # a repeated shape
    for strips in simple_shapes.read_strips(x[:20]):
        assert all(s == [] or s == [simple_shapes.KINDS[k]] for k, s in enumerate(strips))


def test_patch_unet_is_the_unet_on_pixel_patches():
    from diffzoo.models.registry import build

    torch.manual_seed(0)
    m = build("patch_unet", in_ch=1, size=32, patch=4, ch=8, mults=[1, 2], blocks=1, num_classes=0).eval()
    assert m.sample_shape == (1, 32, 32)
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([10.0, 500.0])
    with torch.no_grad():
        y = m(x, t)
        # the same as folding by hand, running the inner UNet, unfolding
        ref = torch.nn.functional.pixel_shuffle(m.unet(torch.nn.functional.pixel_unshuffle(x, 4), t), 4)
        # images are independent of each other in the batch
        y0 = m(x[:1], t[:1])
    assert y.shape == x.shape and torch.equal(y, ref) and torch.allclose(y0, y[:1], atol=1e-5)
    with pytest.raises(ValueError, match="x"):
        m(torch.randn(1, 1, 30, 30), t[:1])
    with pytest.raises(ValueError, match="x"):
        m(torch.randn(1, 3, 32, 32), t[:1])
    with pytest.raises(ValueError, match="size"):
        build("patch_unet", size=30, patch=4)


def test_shapes_hallucination_ground_truth_on_known_images():
    """``shapes_hallucinations`` labels through the shapes detector: an exact denoiser of *one* fixed
    hallucinated image (a repeated triangle) makes every sample that image, flagged; its x0 predictions
    never move, so the variance score is ~0 (the detector's score is computed from the last 10 steps)."""
    from diffzoo.core.denoiser import Denoiser
    from diffzoo.data import simple_shapes
    from diffzoo.zoo.forensics import shapes_hallucinations

    a = simple_shapes.render([True, False, False], [0.0, 0.0, 0.0])
    b = simple_shapes.render([True, False, False], [1.0, 0.0, 0.0])
    target = torch.maximum(a, b)
    sched = get_schedule("linear", beta_start=1e-4, beta_end=0.02)

    class Point(torch.nn.Module):  # eps of x_t = alpha x* + sigma eps
        def forward(self, x, t, cond=None):
            al, sg = sched.alpha_sigma(t.double())
            return ((x - al.float()[:, None, None, None] * target) / sg.float()[:, None, None, None]).float()

    ev = shapes_hallucinations(Denoiser(Point(), sched, "epsilon"), 3, 20, torch.Generator().manual_seed(0))
    assert ev["samples"].shape == (3, 1, 32, 32) and ev["x0s"].shape == (10, 3, 1, 32, 32)
    assert ev["hallucinated"].tolist() == [True] * 3 and ev["empty"].tolist() == [False] * 3
    assert float(hallucination_score(ev["x0s"]).max()) < 1e-6
    den = Denoiser(Point(), sched, "epsilon")
    with pytest.raises(ValueError, match="^n:"):
        shapes_hallucinations(den, 0, 20, torch.Generator())
    with pytest.raises(ValueError, match="num_steps"):
        shapes_hallucinations(den, 2, 0, torch.Generator())


def test_generated_shapes_specs():
    from diffzoo.zoo.forensics import generated_digits, generated_shapes

    x = generated_digits("slimflow-distill-guided/gen1", 3, 0)  # a distilled student as a test generator
    assert x.shape == (3, 1, 8, 8) and float(x.abs().max()) <= 1
    with pytest.raises(ValueError, match="generator"):
        generated_digits("slimflow-distill-guided/ddim1", 1, 0)

    with pytest.raises(ValueError, match="generator"):
        generated_shapes("tinysd/dpmpp20", 1, 0)
    with pytest.raises(ValueError, match="generator"):
        generated_shapes("digits-unet/ddim10", 1, 0)
    with pytest.raises(ValueError, match="generator"):
        generated_shapes("no such", 1, 0)
