"""Integration: every shipped zoo model loads and still reaches its recorded metrics (small re-measurements)."""

from __future__ import annotations

import pytest
import torch

from diffzoo import zoo
from diffzoo.data import digits, toy2d
from diffzoo.metrics import digits_accuracy, sliced_wasserstein
from diffzoo.recipes.foundation import ddim_sample, digits_denoiser

FOUNDATION = {"digits-classifier", "digits-unet", "toy2d-ring8", "toy2d-moons"}


def test_foundation_models_are_shipped():
    assert FOUNDATION <= set(zoo.names())


@pytest.mark.parametrize("name", sorted(zoo.names()))
def test_every_zoo_model_loads_with_complete_json(name):
    zm = zoo.load(name)
    for key in ("arch", "arch_config", "train_command", "seed", "steps", "metrics"):
        assert key in zm.config, key
    assert zm.config["train_command"].startswith("diffzoo train")
    assert not zm.model.training
    if zm.config.get("schedule"):
        assert zm.denoiser().schedule.kind in ("discrete", "continuous")


def test_digit_classifier_accuracy_reproduces():
    zm = zoo.load("digits-classifier")
    d = digits.load("test")
    acc = float((zm.model(d.images).argmax(-1) == d.labels).float().mean())
    assert acc >= 0.97
    assert acc >= zm.metrics["test_accuracy"] - 0.005


def test_digits_unet_guided_samples_are_classified_as_their_label():
    zm = zoo.load("digits-unet")
    assert zm.null_class == 10
    labels = torch.arange(10).repeat(3)
    g = torch.Generator().manual_seed(123)
    x = ddim_sample(
        digits_denoiser(zm.model, zm.metrics["guidance"]), torch.randn(30, 1, 8, 8, generator=g), 50, labels
    )
    assert float(x.abs().max()) < 1.5
    assert digits_accuracy(x.clamp(-1, 1), labels) >= min(0.8, zm.metrics["cond_accuracy"] - 0.15)


@pytest.mark.parametrize("name", ["toy2d-ring8", "toy2d-moons"])
def test_toy2d_models_sample_their_dataset(name):
    zm = zoo.load(name)
    ds = toy2d.get(zm.config["dataset"])
    g = torch.Generator().manual_seed(7)
    x = ddim_sample(zm.denoiser(), torch.randn(1000, 2, generator=g), 50).to(torch.float64)
    swd = float(sliced_wasserstein(x, ds.sample(1000, g), generator=g))
    assert swd < max(2 * zm.metrics["swd"], 0.05)
