"""Distillation (issue 12): BOOT's Signal-ODE identities and data-free training, MMD-DDM's unbiased
polynomial MMD and differentiable chain, SlimFlow's annealing and losses, cost counters, the generator
zoo kind, and one-line errors on bad input."""

from __future__ import annotations

import argparse
import itertools

import pytest
import torch
from torch import nn

from diffzoo import zoo
from diffzoo.cli import main
from diffzoo.core.analytic import GaussianMixture
from diffzoo.core.parameterization import ddim_step
from diffzoo.core.schedules import get_schedule
from diffzoo.data import digits
from diffzoo.distill.boot import boot_grid, boot_loss, boundary_target, signal_rollout, signal_step
from diffzoo.distill.common import count_macs, count_params, ddim_chain, pseudo_huber
from diffzoo.distill.generate import check_spec, generate
from diffzoo.distill.mmd import mmd2_unbiased, polynomial_kernel
from diffzoo.distill.slimflow import anneal_beta, annealed_noise, distill_loss, one_step, reflow_loss
from diffzoo.models.registry import build
from diffzoo.recipes import get_recipe
from diffzoo.sampling import ddim, get_timesteps

torch.set_num_threads(1)


def mixture_teacher(schedule_name: str = "linear"):
    gm = GaussianMixture([[-1.0, 0.5], [1.0, -0.5], [0.2, 1.2]], [0.2, 0.3, 0.15])
    return gm.denoiser(get_schedule(schedule_name))


# ------------------------------------------------------------------------------------------------- BOOT
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_boot_target_maps_back_to_ddim_step(schedule):
    """alpha_s y_s + sigma_s eps of the Signal-ODE target is exactly DDIM's x_s from x_t."""
    den = mixture_teacher(schedule)
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(64, 2, generator=g, dtype=torch.float64)
    y_t = torch.randn(64, 2, generator=g, dtype=torch.float64)
    ts = get_timesteps(den.schedule, 12)
    for t, s in zip(ts[:-1], ts[1:]):
        a_t, s_t = den.schedule.alpha_sigma(t)
        a_s, s_s = den.schedule.alpha_sigma(s)
        x_t = a_t * y_t + s_t * eps
        x0, e = den.x0_eps(x_t, t)
        want = ddim_step(x0, e, a_s, s_s)
        y_s = signal_step(den, y_t, eps, t, s)
        torch.testing.assert_close(a_s * y_s + s_s * eps, want, rtol=0, atol=1e-12)
        # the closed form of the derivation: y_s = y_t + (1 - exp(-(lambda_t - lambda_s))) (f - y_t)
        delta = 1 - (s_s * a_t) / (a_s * s_t)
        torch.testing.assert_close(y_s, y_t + delta * (x0 - y_t), rtol=0, atol=1e-10)


def test_perfect_boot_student_is_the_ddim_sampler():
    """Rolling the Signal-ODE target from the exact y_T reproduces the DDIM sampler's sample from x_T = eps."""
    den = mixture_teacher()
    eps = torch.randn(128, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ts = boot_grid(den, 20)
    ys = signal_rollout(den, eps, ts)
    torch.testing.assert_close(ys[-1], ddim(den, eps, ts), rtol=0, atol=1e-9)


class LookupStudent(nn.Module):
    """g(eps, t) = the teacher's signal trajectory at grid time t (for the eps it was built on)."""

    def __init__(self, ys: torch.Tensor, ts: torch.Tensor):
        super().__init__()
        self.ys, self.ts = ys, ts
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, eps, t, cond=None):
        idx = (t.to(torch.float64)[:, None] - self.ts[None]).abs().argmin(1)
        return self.ys[idx, torch.arange(eps.shape[0])] + 0 * self.w


@pytest.mark.parametrize("weight,clip", [("delta", None), ("none", None), ("delta", 0.5)])
def test_boot_loss_vanishes_for_the_perfect_student(weight, clip):
    den = mixture_teacher()
    eps = torch.randn(32, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ts = boot_grid(den, 10)
    ys = signal_rollout(den, eps, ts, y_start=boundary_target(den, eps, ts[0], clip=clip), clip=clip)
    if clip is not None:  # every point of the clipped trajectory is a convex mix of clipped x0s
        assert float(ys.abs().max()) <= clip + 1e-12
    kw = {"weight": weight, "clip": clip}
    loss = boot_loss(LookupStudent(ys, ts), den, eps, None, ts, torch.Generator().manual_seed(0), **kw)
    assert float(loss.detach()) < 1e-20
    wrong = LookupStudent(ys + 0.1, ts)
    assert float(boot_loss(wrong, den, eps, None, ts, torch.Generator().manual_seed(0), **kw).detach()) > 1e-4


def _recipe_args(name: str, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    get_recipe(name).add_args(p)
    return p.parse_args(argv)


def test_boot_training_never_touches_the_dataset(monkeypatch, tmp_path):
    def refuse(*a, **k):
        raise AssertionError("BOOT read the dataset")

    monkeypatch.setattr(digits, "load", refuse)
    monkeypatch.setattr(digits.DigitsSplit, "batch", refuse)
    args = _recipe_args(
        "distill-boot",
        ["--steps", "2", "--batch-size", "4", "--grid-steps", "4", "--eval-per-class", "0", "--no-progress"]
        + ["--out-dir", str(tmp_path / "boot"), "--threads", "1"],
    )
    metrics = get_recipe("distill-boot").run(args)
    assert set(metrics) == {"final_loss"} and torch.isfinite(torch.tensor(metrics["final_loss"]))
    assert (tmp_path / "boot" / "checkpoint.safetensors").is_file()  # resumable like any training run


# ------------------------------------------------------------------------------------------------- MMD-DDM
def test_mmd_polynomial_kernel_matches_direct_sum():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 5, generator=g), torch.randn(9, 5, generator=g) + 0.3
    k = lambda a, b: (float(a.double() @ b.double()) / 5 + 1.0) ** 3  # noqa: E731
    kxx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(7), 2)) / (7 * 6)
    kyy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(9), 2)) / (9 * 8)
    kxy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
    got = mmd2_unbiased(x, y)
    assert got.dtype == torch.float64
    assert abs(float(got) - (kxx + kyy - 2 * kxy)) < 1e-10
    assert polynomial_kernel(x, y).shape == (7, 9)


def test_mmd_unbiased_near_zero_for_equal_distributions():
    g = torch.Generator().manual_seed(0)
    same = torch.stack(
        [mmd2_unbiased(torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g)) for _ in range(40)]
    )
    diff = mmd2_unbiased(torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g) + 0.5)
    assert (same < 0).any()  # unbiased: single draws can be negative
    assert abs(float(same.mean())) < 3 * float(same.std()) / 40**0.5 + 1e-12
    assert float(diff) > float(same.mean()) + 5 * float(same.std())


def test_ddim_chain_is_the_sampler_and_differentiable():
    zm = zoo.load("digits-unet")
    den = zm.denoiser()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ts = get_timesteps(den.schedule, 3)
    torch.testing.assert_close(ddim_chain(den, x, ts), ddim(den, x, ts), rtol=1e-5, atol=1e-5)
    net = build(zm.config["arch"], **zm.config["arch_config"])
    net.load_state_dict(zm.model.state_dict())
    out = ddim_chain(den.with_net(net), x, ts, grad_checkpoint=True)
    out.square().sum().backward()
    assert all(p.grad is not None for p in net.inp.parameters()) and float(net.inp.weight.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------------------- SlimFlow
def test_slimflow_annealing_endpoints():
    assert anneal_beta(0, 100) == 1.0 and anneal_beta(50, 100) == 0.5 and anneal_beta(500, 100) == 0.0
    assert anneal_beta(7, 0) == 0.0  # plain reflow
    z0 = torch.randn(16, 3)
    n = torch.randn(16, 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(annealed_noise(z0, 1.0, torch.Generator().manual_seed(5)), n)  # independent of z0
    torch.testing.assert_close(annealed_noise(z0, 0.0, torch.Generator().manual_seed(5)), z0)  # the coupling
    with pytest.raises(ValueError, match="beta"):
        annealed_noise(z0, 1.5, torch.Generator())


class LinearFlow(nn.Module):
    """v(x, t) = (target - x) / (1 - t): the straight flow to a fixed point, exact for the tests."""

    def __init__(self, target):
        super().__init__()
        self.target, self.w = target, nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        return (self.target - x) / (1 - t).reshape(-1, *[1] * (x.ndim - 1)) + 0 * self.w


def test_slimflow_losses_vanish_on_the_exact_coupling():
    z1 = torch.randn(8, 2)
    z0 = torch.randn(8, 2)
    flow = LinearFlow(z1)
    g = torch.Generator().manual_seed(0)
    assert float(reflow_loss(flow, z0, z1, None, g, beta=0.0)) < 1e-10
    torch.testing.assert_close(one_step(flow, z0), z1)
    assert float(distill_loss(flow, z0, z1, None, g, flow=flow, guided=True)) < 1e-3  # pseudo-Huber floor 0
    with pytest.raises(ValueError, match="flow"):
        distill_loss(flow, z0, z1, None, g, guided=True)


def test_pseudo_huber():
    a, b = torch.zeros(3, 4), torch.ones(3, 4)
    torch.testing.assert_close(pseudo_huber(a, b, c=0.0), torch.full((3,), 2.0))
    assert float(pseudo_huber(a, a).max()) == 0.0


# ------------------------------------------------------------------------------------------------- costs, zoo, CLI
def test_count_macs_and_params():
    lin = nn.Linear(10, 5)
    assert count_macs(lin, torch.zeros(3, 10)) == 50 and count_params(lin) == 55
    conv = nn.Conv2d(2, 4, 3, padding=1)
    assert count_macs(conv, torch.zeros(2, 2, 8, 8)) == 4 * 64 * 2 * 9
    unet = zoo.load("digits-unet").model
    macs = count_macs(unet, torch.zeros(1, 1, 8, 8), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    assert macs > count_params(unet)  # convolutions reuse their weights at every pixel


def test_generate_specs():
    net = LinearFlow(torch.ones(2, 2))
    z = torch.zeros(2, 2)
    torch.testing.assert_close(generate(net, z, spec={"type": "flow", "steps": 1}), torch.ones(2, 2))
    with pytest.raises(ValueError, match="generator.type"):
        check_spec({"type": "gan"})
    with pytest.raises(ValueError, match="generator.time"):
        check_spec({"type": "signal"})
    with pytest.raises(ValueError, match="steps"):
        generate(net, z, spec={"type": "signal", "time": -1.0}, steps=4)


def test_judge_is_another_architecture():
    judge = build("digit_mlp_classifier")
    assert not any(isinstance(m, nn.Conv2d) for m in judge.modules())
    assert judge.features(torch.zeros(2, 1, 8, 8)).shape == (2, 64)


@pytest.mark.parametrize(
    "argv, arg",
    [
        (["distill", "mmd", "--teacher", "digits-classifier"], "teacher:"),
        (["distill", "boot", "--teacher", "masked-digits"], "teacher:"),
        (["distill", "mmd", "--tprime", "0"], "tprime:"),
        (["distill", "sign", "--teacher", "digits-classifier"], "teacher:"),
        (["distill", "sign", "--sample-steps", "0"], "sample_steps:"),
        (["distill", "slimflow", "--stage", "distill", "--init", "digits-unet", "--pairs", "1"], "init:"),
    ],
)
def test_distill_cli_bad_input(argv, arg, capsys, tmp_path):
    assert main(argv + ["--steps", "1", "--out-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and arg in err[0], err


def test_mismatched_student_checkpoint(tmp_path, monkeypatch):
    """A generator whose weights do not fit the architecture its JSON names -> an error naming init."""
    from diffzoo.recipes import distill as rd

    small = build("digits_unet", ch=8, blocks=1, mults=[1, 2], num_classes=10, emb_dim=32)
    cfg = {"ch": 16, "blocks": 1, "mults": [1, 2], "num_classes": 10, "emb_dim": 64}
    zoo.save(
        "bad-student", small, "digits_unet", cfg, kind="generator", generator={"type": "flow"}, weights_dir=tmp_path
    )
    real_load = zoo.load
    monkeypatch.setattr(rd.zoo, "load", lambda name, **kw: real_load(name, weights_dir=tmp_path, **kw))
    with pytest.raises(ValueError, match=r"^init: .*do not match"):
        rd.load_student("bad-student", ("generator",), "init")


@pytest.mark.skipif("boot-digits" not in zoo.names(), reason="BOOT student not shipped")
def test_sample_shipped_generator():
    from diffzoo.zoo.sampling import sample_zoo

    res = sample_zoo("boot-digits", n=10, class_label="all", seed=0)
    assert res.samples.shape == (10, 1, 8, 8) and res.nfe == 1
    with pytest.raises(ValueError, match="guidance"):
        sample_zoo("boot-digits", n=2, guidance=2.0)


# ------------------------------------------------------------------------------------------------- SIGN-style / IGN
class Affine(nn.Module):
    def __init__(self, dim=2):
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, x, t=None, cond=None):
        return self.lin(x)


def test_ign_gradient_routing():
    """L_idem differentiates the inner f only; L_tight the outer f only (IGN's frozen copy f')."""
    from diffzoo.distill.sign import ign_losses

    torch.manual_seed(0)
    f = Affine()
    frozen = Affine()
    frozen.load_state_dict(f.state_dict())
    frozen.requires_grad_(False)
    x, z = torch.randn(16, 2), torch.randn(16, 2)
    terms = ign_losses(f, x, z)
    (g_idem,) = torch.autograd.grad(terms["idem"], f.lin.weight, retain_graph=True)
    fz = f(z)
    (want,) = torch.autograd.grad((frozen(fz) - fz).abs().mean(), f.lin.weight)
    torch.testing.assert_close(g_idem, want)
    (g_tight,) = torch.autograd.grad(terms["tight"], f.lin.weight)
    assert float(g_tight.abs().sum()) > 0


def test_sign_style_training_runs_and_needs_a_teacher():
    from diffzoo.distill.sign import iterate, train_idempotent

    den = mixture_teacher()
    gm = GaussianMixture([[-1.0, 0.5], [1.0, -0.5]], 0.2)
    data = lambda n, g: gm.sample(n, g).float()  # noqa: E731
    with pytest.raises(TypeError, match="teacher"):
        train_idempotent(Affine(), data, "sign", steps=1)
    with pytest.raises(ValueError, match="method"):
        train_idempotent(Affine(), data, "gan", steps=1)
    den32 = den.with_net(lambda x, t, c=None: den.net(x.double(), t, c).float())
    res = train_idempotent(Affine(), data, "sign", teacher=den32, steps=3, batch_size=8, bank=16, teacher_steps=3)
    assert len(res.losses) == 3 and all(torch.isfinite(torch.tensor(res.losses)))
    assert iterate(res.model, torch.zeros(4, 2), 2).shape == (4, 2)


def test_class_recall_detects_collapse():
    from diffzoo.bench.distill import class_recall

    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 4, generator=g)
    labels = torch.arange(200) % 10
    assert bool((class_recall(real, real, labels, labels) == 1).all())
    collapsed = real.clone()
    collapsed[labels == 3] = real[labels == 3][0] + 1e-3 * torch.randn(20, 4, generator=g)
    rec = class_recall(real, collapsed, labels, labels)
    assert float(rec[3]) < 0.2 and float(rec[4]) == 1.0


def test_idempotence_ratio_and_sign_claims():
    """An exact projection has idempotence ratio 0; the claim rows read the right direction per domain."""
    from diffzoo.bench.distill import IDEM_RATIO, _idem_checks, _idem_ratio

    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    proj = z * torch.tensor([1.0, 0.0])  # f = projection onto the x-axis: f(f(z)) = f(z)
    assert _idem_ratio({1: proj, 2: proj * torch.tensor([1.0, 0.0])}, z) == 0.0
    assert _idem_ratio({1: 0.5 * z, 2: 0.25 * z}, z) == pytest.approx(0.5)
    means = {("sign", IDEM_RATIO): 0.05, ("sign", "q"): 1.0, ("ign", "q"): 2.0, ("sign", "c"): -3.0}
    holds = [r["holds"] for r in _idem_checks("digits", means, "q", "c", -1)]
    assert holds == ["yes", "yes", "yes"]
    assert _idem_checks("2-D", means, "q", "c", +1)[2]["holds"] == "NO"


def test_sign_recipe_resumes_and_ships_an_idempotent_generator(tmp_path):
    """distill-sign trains with the shared trainer (interrupted -> resumed to the same weights as one run)
    and its generator type (idempotent) samples by iterating the class-conditional f."""
    from diffzoo.distill.generate import generate
    from diffzoo.recipes import distill as rd

    base = ["--bank", "32", "--teacher-steps", "2", "--batch-size", "8", "--eval-per-class", "0"]
    base += ["--no-progress", "--threads", "1", "--ckpt-every", "2"]
    one = rd.sign_recipe(_recipe_args("distill-sign", base + ["--steps", "4", "--out-dir", str(tmp_path / "a")]))
    rd.sign_recipe(_recipe_args("distill-sign", base + ["--steps", "2", "--out-dir", str(tmp_path / "b")]))
    two = rd.sign_recipe(_recipe_args("distill-sign", base + ["--steps", "4", "--out-dir", str(tmp_path / "b")]))
    assert one["final_loss"] == pytest.approx(two["final_loss"], rel=1e-5)
    net = build("digits_unet", ch=16, blocks=1, mults=[1, 2], num_classes=10, emb_dim=64)
    z, c = torch.randn(3, 1, 8, 8), torch.tensor([0, 4, 9])
    x2 = generate(net, z, c, spec={"type": "idempotent", "steps": 1}, steps=2)
    t0 = torch.zeros(3)
    torch.testing.assert_close(x2, net(net(z, t0, c), t0, c))
