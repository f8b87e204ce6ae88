"""The float32 Gumbel precision effect (Zheng et al., arXiv 2409.02908, Sec. 5) on the Zipf oracle."""

from __future__ import annotations

import math

import pytest
import torch

from diffzoo.core.random import generators_from_seeds
from diffzoo.discrete.precision import ZipfOracle, iid_ancestral_sample, precision_experiment
from diffzoo.discrete.samplers import ancestral_sample


def test_zipf_oracle_exact():
    o = ZipfOracle(5, 3, exponent=1.0)
    w = [1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5]
    z = sum(w)
    assert torch.allclose(o.probs, torch.tensor(w, dtype=torch.float64) / z, rtol=0, atol=1e-15)
    assert o.entropy == pytest.approx(-sum(v / z * math.log(v / z) for v in w), abs=1e-12)
    assert o.tail_mass(0.12) == pytest.approx((1 / 4 + 1 / 5) / z, abs=1e-12)
    logits = o(torch.full((2, 3), 5))
    assert logits.shape == (2, 3, 5) and torch.allclose(torch.softmax(logits, -1)[1, 2], o.probs)
    assert ZipfOracle(4, 1, exponent=0.0).entropy == pytest.approx(math.log(4))


@pytest.mark.parametrize(
    "vocab,length,n,steps,precision",
    [
        (50, 3, 6, 20, "float64"),
        (50, 3, 6, 20, "float32"),
        (7, 4, 5, 3, "float32"),
        (400, 1, 12, 300, "float32"),
        (400, 2, 6, 300, "float64"),
        (5, 2, 4, 1, "float64"),
    ],
)
def test_fast_sampler_gives_the_draws_of_ancestral_sample(vocab, length, n, steps, precision):
    o = ZipfOracle(vocab, length)
    ref = ancestral_sample(o, n, steps, generator=generators_from_seeds(range(10, 10 + n)), precision=precision)
    fast = iid_ancestral_sample(o, steps, generators_from_seeds(range(10, 10 + n)), precision)
    assert torch.equal(ref, fast)


def test_float64_matches_the_oracle():
    (row,) = precision_experiment(4096, 4, 96, steps=(32,), precisions=("float64",), seed=1)
    # NLL of exact draws: mean -log p has expectation = the true entropy
    assert abs(row["NLL float64"] - row["true entropy"]) < 3.5 * row["NLL se float64"]
    assert abs(row["tail mass drawn float64"] - row["true tail mass"]) < 0.07
    assert abs(row["unigram entropy float64"] - row["exact-draw unigram entropy"]) < 0.25


def test_float32_undersamples_the_tail_at_many_steps():
    # 4096 ancestral steps at a Zipf(1) vocabulary of 8192. A float32 race cannot pick a token whose step
    # probability is below ~6e-8 x that of "stay masked" (p < ~6e-8 * steps * t): tail tokens (p < 1e-4,
    # 21.5% of the mass) are drawn late or not at all. An exact sampler (float64, checked above) draws
    # them at their true rate, so float32 is compared with the truth (no float64 run: every step costs
    # K + 1 uniforms per token, and resolving the 2^-24 grid needs ~2^24 of them per affected draw).
    # Seeds 0..5 with these sizes gave tail 0.047..0.125 (truth 0.215) and NLL 5.24..5.60 (entropy 6.49).
    (row,) = precision_experiment(8192, 1, 64, steps=(4096,), precisions=("float32",), seed=0)
    assert row["true tail mass"] == pytest.approx(0.215, abs=1e-3)
    assert row["tail mass drawn float32"] < 0.75 * row["true tail mass"]
    assert row["NLL float32"] < row["true entropy"] - 0.4  # lower generative perplexity: temperature < 1


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="vocab_size"):
        ZipfOracle(1, 4)
    with pytest.raises(ValueError, match="seq_len"):
        ZipfOracle(8, 0)
    with pytest.raises(ValueError, match="exponent"):
        ZipfOracle(8, 2, exponent=-1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        precision_experiment(1, 1, 4, steps=(2,))
    with pytest.raises(ValueError, match="steps"):
        precision_experiment(8, 1, 4, steps=(0,))
    with pytest.raises(ValueError, match="steps"):
        precision_experiment(8, 1, 4, steps=())
    with pytest.raises(ValueError, match="n"):
        precision_experiment(8, 1, 0, steps=(2,))
    with pytest.raises(ValueError, match="precision"):
        precision_experiment(8, 1, 4, steps=(2,), precisions=("float16",))
    with pytest.raises(ValueError, match="steps"):
        iid_ancestral_sample(ZipfOracle(8, 1), 0, generators_from_seeds([0]))
