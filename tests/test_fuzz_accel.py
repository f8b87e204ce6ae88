"""Fuzz the accel registry CACHE_METHODS: valid names build a caching net, anything else is a one-line error."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffzoo import zoo
from diffzoo.accel.cache import CACHE_METHODS, cached_net, key_steps
from diffzoo.sampling import get_timesteps

MODEL = zoo.load("digits-unet")
TS = get_timesteps(MODEL.denoiser().schedule, 6)


@settings(max_examples=20, deadline=None)
@given(method=st.sampled_from(CACHE_METHODS), keys=st.lists(st.integers(1, 5), max_size=4))
def test_valid_methods_and_key_sets(method, keys):
    net = cached_net(MODEL.model, TS, method, [0, *keys])
    assert net.key_steps[0] == 0 and set(net.key_steps) == {0, *keys}
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 8, 8), torch.tensor([float(TS[0])]), None)
    assert out.shape == (1, 1, 8, 8)


@settings(max_examples=30, deadline=None)
@given(name=st.text(max_size=12).filter(lambda s: s not in CACHE_METHODS))
def test_unknown_method_names(name):
    with pytest.raises(ValueError, match="method"):
        cached_net(MODEL.model, TS, name)


@settings(max_examples=30, deadline=None)
@given(
    keys=st.lists(st.integers(-3, 9), min_size=1, max_size=5).filter(lambda k: 0 not in k or max(k) >= 6 or min(k) < 0)
)
def test_bad_key_sets(keys):
    with pytest.raises(ValueError, match="key_steps"):
        key_steps(6, keys)
