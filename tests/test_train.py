"""Trainer: exact resume after a kill, atomic checkpoints, warm-up, EMA, config validation."""

from __future__ import annotations

import os

import pytest
import torch

from diffzoo.train import TrainConfig, ema_update, lr_at, read_safetensors, step_generator, train


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))


def _batch(step: int, gen: torch.Generator, bs: int) -> torch.Tensor:
    return torch.randn(bs, 2, generator=gen) * 0.5 + 1.0


def _loss(model: torch.nn.Module, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(batch.shape, generator=gen)
    return ((model(batch + noise) - noise) ** 2).mean()


def _cfg(tmp, steps, **kw) -> TrainConfig:
    base = dict(
        steps=steps,
        batch_size=16,
        lr=1e-2,
        warmup_steps=3,
        ema_decay=0.9,
        grad_clip=0.5,
        seed=3,
        out_dir=str(tmp) if tmp is not None else None,
        ckpt_every=4,
        log_every=2,
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_after_clean_stop_is_identical(tmp_path):
    straight = train(_net(), _loss, _batch, _cfg(tmp_path / "a", 10))
    train(_net(), _loss, _batch, _cfg(tmp_path / "b", 6))
    resumed = train(_net(), _loss, _batch, _cfg(tmp_path / "b", 10))
    assert resumed.step == 10 and len(resumed.losses) == 10
    assert _same(straight.model, resumed.model)
    assert _same(straight.ema_model, resumed.ema_model)
    assert straight.losses == resumed.losses


class _Killed(RuntimeError):
    pass


def test_resume_after_kill_mid_run_is_identical(tmp_path):
    straight = train(_net(), _loss, _batch, _cfg(None, 13))
    calls = {"n": 0}

    def dying_loss(model, batch, gen):
        calls["n"] += 1
        if calls["n"] == 11:  # killed during step 10, after the checkpoint at step 8
            raise _Killed()
        return _loss(model, batch, gen)

    with pytest.raises(_Killed):
        train(_net(), dying_loss, _batch, _cfg(tmp_path, 13))
    _, meta = read_safetensors(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 8
    resumed = train(_net(), _loss, _batch, _cfg(tmp_path, 13))
    assert _same(straight.model, resumed.model)
    assert _same(straight.ema_model, resumed.ema_model)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_training_reduces_loss_and_checkpoint_is_safetensors(tmp_path):
    res = train(_net(), _loss, _batch, _cfg(tmp_path, 40, lr=5e-3))
    assert sum(res.losses[-5:]) / 5 < sum(res.losses[:5]) / 5
    tensors, meta = read_safetensors(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 40 and meta["config"]["seed"] == 3
    assert any(k.startswith("optim.") and k.endswith("exp_avg") for k in tensors)
    assert (tmp_path / "checkpoint.json").is_file()


def test_param_groups_scale_each_groups_learning_rate():
    """``param_groups`` with ``lr_mult``: a group at 0 never moves, the others train; the default is one group."""
    net = _net()
    first = [p.detach().clone() for p in net[0].parameters()]
    last = [p.detach().clone() for p in net[2].parameters()]
    groups = [
        {"params": list(net[0].parameters()), "lr_mult": 0.0},
        {"params": list(net[2].parameters()), "lr_mult": 2},
    ]
    res = train(net, _loss, _batch, _cfg(None, 6), param_groups=groups)
    assert all(torch.equal(a, b) for a, b in zip(first, res.model[0].parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(last, res.model[2].parameters()))


def test_step_generator_is_pure_function_of_seed_step_process():
    a = torch.randn(4, generator=step_generator(1, 5))
    assert torch.equal(a, torch.randn(4, generator=step_generator(1, 5)))
    assert not torch.equal(a, torch.randn(4, generator=step_generator(1, 6)))
    assert not torch.equal(a, torch.randn(4, generator=step_generator(1, 5, 1)))


def test_lr_warmup_and_ema_update():
    cfg = TrainConfig(lr=1.0, warmup_steps=4)
    assert [lr_at(cfg, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    ema, m = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        ema.weight.fill_(0.0)
        m.weight.fill_(1.0)
    ema_update(ema, m, 0.9)
    assert torch.allclose(ema.weight, torch.tensor([[0.1]]))


def test_bad_config_names_argument():
    with pytest.raises(ValueError, match="steps"):
        train(_net(), _loss, _batch, _cfg(None, 0))
    with pytest.raises(ValueError, match="lr"):
        train(_net(), _loss, _batch, _cfg(None, 2, lr=0.0))


def test_corrupt_checkpoint_is_reported_with_file_name(tmp_path):
    (tmp_path / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="checkpoint.safetensors"):
        train(_net(), _loss, _batch, _cfg(tmp_path, 2))


@pytest.mark.parametrize("ptype", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("sched", ["linear", "vp_cosine"])
def test_diffusion_loss_is_zero_for_the_exact_predictor_of_a_point_mass(ptype, sched):
    """Data = one point c: eps = (x_t - alpha c) / sigma exactly, so the ideal network has zero loss."""
    from diffzoo.core import from_x0_eps, get_schedule
    from diffzoo.train import diffusion_loss

    schedule = get_schedule(sched)
    c = torch.tensor([[0.3, -1.2]], dtype=torch.float64)

    def exact(x_t, t, cond=None):
        a, s = schedule.alpha_sigma(t.to(torch.float64))
        a, s = a[:, None], s[:, None]
        eps = (x_t - a * c) / s
        return from_x0_eps(c.expand_as(x_t), eps, ptype, a, s)

    x0 = c.expand(64, 2).clone()
    loss = diffusion_loss(exact, x0, schedule, torch.Generator().manual_seed(0), prediction_type=ptype)
    assert float(loss) < 1e-12
    wrong = diffusion_loss(
        lambda x, t, cond=None: torch.zeros_like(x),
        x0,
        schedule,
        torch.Generator().manual_seed(0),
        prediction_type=ptype,
    )
    assert float(wrong) > 1e-3


def test_cli_train_recipe_runs_resumes_and_reports(tmp_path, capsys):
    import json as _json

    from diffzoo.cli import main

    argv = [
        "train",
        "toy2d",
        "--dataset",
        "moons",
        "--steps",
        "4",
        "--hidden",
        "8",
        "--depth",
        "1",
        "--eval-samples",
        "20",
        "--no-progress",
        "--out-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = _json.loads(capsys.readouterr().out)
    assert {"swd", "mmd2", "final_loss"} <= set(out)
    _, meta = read_safetensors(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 4 and meta["config"]["extra"]["arch"] == "mlp"
    assert main(argv[:5] + ["6"] + argv[6:]) == 0  # resumes from step 4 to 6
    _, meta = read_safetensors(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 6
    with pytest.raises(SystemExit):
        main(["train", "no-such-recipe"])


_KILL_SCRIPT = r"""
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from test_train import _batch, _cfg, _loss, _net
from diffzoo.train import train

def loss(model, batch, gen, calls=[0]):
    calls[0] += 1
    if calls[0] == 11:
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill, no cleanup
    return _loss(model, batch, gen)

train(_net(), loss, _batch, _cfg({out!r}, 13))
"""


def test_resume_after_real_sigkill_is_identical(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = _KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    _, meta = read_safetensors(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 8
    resumed = train(_net(), _loss, _batch, _cfg(tmp_path, 13))
    straight = train(_net(), _loss, _batch, _cfg(None, 13))
    assert _same(straight.model, resumed.model) and _same(straight.ema_model, resumed.ema_model)


# -------------------------------------------------------------------------------------------------
# Recipes: one argument dialect, and the zoo is written only with --zoo-name
# -------------------------------------------------------------------------------------------------

SHARED = [
    "--steps",
    "7",
    "--batch-size",
    "3",
    "--lr",
    "0.5",
    "--weight-decay",
    "0.25",
    "--warmup-steps",
    "2",
    "--ema-decay",
    "0.75",
    "--grad-clip",
    "0.125",
    "--seed",
    "5",
    "--out-dir",
    "d",
    "--ckpt-every",
    "4",
    "--log-every",
    "2",
    "--no-progress",
    "--keep-checkpoints",
    "--threads",
    "1",
    "--zoo-name",
    "z",
]
OLD_SPELLINGS = [
    (["--out", "d"], ["--out-dir", "d"]),
    (["--zoo", "z"], ["--zoo-name", "z"]),
    (["--name", "z"], ["--zoo-name", "z"]),
    (["--ema", "0.5"], ["--ema-decay", "0.5"]),
    (["--warmup", "7"], ["--warmup-steps", "7"]),
]


def _recipe_names() -> list[str]:
    from diffzoo.recipes import recipes

    return sorted(recipes())


def _parse(argv):
    from diffzoo.cli import build_parser

    return build_parser().parse_args(argv)


@pytest.mark.parametrize("recipe", _recipe_names())
def test_every_recipe_takes_the_shared_options(recipe):
    from diffzoo.recipes import train_config_from_args

    args = _parse(["train", recipe, *SHARED])
    cfg = train_config_from_args(args)
    assert (
        cfg.steps,
        cfg.batch_size,
        cfg.lr,
        cfg.weight_decay,
        cfg.warmup_steps,
        cfg.ema_decay,
        cfg.grad_clip,
        cfg.seed,
        cfg.out_dir,
        cfg.ckpt_every,
        cfg.log_every,
        cfg.progress,
        cfg.keep_checkpoints,
    ) == (7, 3, 0.5, 0.25, 2, 0.75, 0.125, 5, "d", 4, 2, False, True)
    assert args.zoo_name == "z" and args.threads == 1
    assert _parse(["train", recipe]).zoo_name is None  # no recipe ships by default


@pytest.mark.parametrize("recipe", _recipe_names())
def test_old_spellings_parse_to_the_same_namespace(recipe):
    for old, new in OLD_SPELLINGS:
        assert vars(_parse(["train", recipe, *old])) == vars(_parse(["train", recipe, *new])), old
    old = [a for pair in OLD_SPELLINGS if pair[0][0] != "--name" for a in pair[0]]
    new = [a for pair in OLD_SPELLINGS if pair[0][0] != "--name" for a in pair[1]]
    assert vars(_parse(["train", recipe, *old])) == vars(_parse(["train", recipe, *new]))


@pytest.mark.parametrize("recipe", _recipe_names())
def test_help_shows_the_canonical_spellings_only(recipe):
    import argparse
    import re

    from diffzoo.recipes import recipes

    p = argparse.ArgumentParser()
    recipes()[recipe].add_args(p)
    text = p.format_help()
    assert "--zoo-name" in text and "--out-dir" in text and "--ema-decay" in text
    assert not re.search(r"--(out|zoo|name|ema|warmup)\b(?!-)", text)


def test_recorded_train_commands_are_canonical_and_name_their_artifact():
    import shlex

    from diffzoo import zoo
    from diffzoo.recipes.registry import ALIASES

    for name in zoo.names():
        cmd = zoo.read_config(zoo.WEIGHTS_DIR / f"{name}.json")["train_command"]
        segments = [shlex.split(s) for s in cmd.split(" && ")]
        for toks in segments:
            assert toks[:2] == ["diffzoo", "train"], cmd
            assert not set(toks) & set(ALIASES), f"{name}: old spelling in {cmd!r}"
            _parse(toks[1:])
        *stages, last = (_parse(t[1:]) for t in segments)
        assert last.zoo_name == name, f"{name}: the recorded command does not ship {name!r}"
        assert all(s.zoo_name is None for s in stages)


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    """The package's zoo as a folder of symlinks (so a recipe that writes into it replaces a link, never a
    shipped file); ``diffzoo.zoo.WEIGHTS_DIR`` points at it."""
    from diffzoo import zoo

    real = zoo.WEIGHTS_DIR
    before = {p.name: p.stat().st_mtime_ns for p in real.iterdir()}
    d = tmp_path / "weights"
    d.mkdir()
    for p in real.iterdir():
        (d / p.name).symlink_to(p)
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", d)
    yield d
    assert {p.name: p.stat().st_mtime_ns for p in real.iterdir()} == before


def _zoo_untouched(d) -> bool:
    from diffzoo import zoo

    real = sorted(p.name for p in zoo.WEIGHTS_DIR.iterdir()) if zoo.WEIGHTS_DIR != d else None
    return all(p.is_symlink() for p in d.iterdir()) and (real is None or real == sorted(p.name for p in d.iterdir()))


TINY_RUNS = {
    "toy2d": (
        ["--dataset", "moons", "--steps", "2", "--hidden", "8", "--depth", "1", "--eval-samples", "20"],
        "diffusion",
        [2],
    ),
    "masked-digits": (
        ["--steps", "2", "--batch-size", "8", "--d-model", "16", "--n-layers", "1", "--n-heads", "2"],
        "masked",
        [64],
    ),
    "idm-cs": (
        ["--steps", "1", "--batch-size", "2", "--idm-steps", "1", "--ch", "4", "--rev-blocks", "1"],
        "idm",
        [1, 8, 8],
    ),
    "shapes-classifier": (["--steps", "1", "--batch-size", "2", "--width", "8"], "classifier", None),
}


@pytest.mark.parametrize("recipe", sorted(TINY_RUNS))
def test_recipe_writes_into_the_zoo_only_when_asked(recipe, tmp_path, zoo_copy, monkeypatch, capsys):
    """A tiny run without --zoo-name leaves the zoo folder as it was; with it, the model is shipped with
    its kind, sample shape and exact command line."""
    import sys

    from diffzoo import zoo
    from diffzoo.cli import main
    from diffzoo.recipes import tinysd as tinysd_recipes

    # the shapes classifier's evaluation renders 4000 scenes: not what this test is about
    monkeypatch.setattr(tinysd_recipes, "classifier_accuracy", lambda *a, **k: {"scene_acc": 0.0})
    opts, kind, shape = TINY_RUNS[recipe]
    argv = ["train", recipe, *opts, "--no-progress", "--threads", "1", "--out-dir", str(tmp_path / "run")]
    names = zoo.names()
    assert main(argv) == 0
    assert zoo.names() == names and _zoo_untouched(zoo_copy)

    ship = [*argv, "--zoo-name", "tiny-test"]  # resumes the finished run: evaluation and shipping only
    monkeypatch.setattr(sys, "argv", ["diffzoo", *ship])
    assert main(ship) == 0
    assert zoo.names() == sorted([*names, "tiny-test"])
    zm = zoo.load("tiny-test")
    assert zm.kind == kind and zm.config.get("sample_shape") == shape
    assert zm.config["train_command"] == "diffzoo " + " ".join(ship) and zm.config["steps"] == args_steps(opts)
    capsys.readouterr()


def args_steps(opts: list[str]) -> int:
    return int(opts[opts.index("--steps") + 1])
