"""The countdown task (:mod:`diffzoo.data.countdown`) and its ``masked-countdown`` recipe, at toy size."""

import pytest
import torch

from diffzoo.data import countdown


def test_generated_sequences_follow_the_rule():
    x = countdown.generate(50, generator=torch.Generator().manual_seed(0))
    assert x.shape == (50, 256) and x.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) <= 31
    assert countdown.error_rate(x) == 0.0 and countdown.sequence_error_rate(x) == 0.0
    nz = x[:, :-1] > 0
    assert torch.equal(x[:, 1:][nz], x[:, :-1][nz] - 1)
    assert (x[:, 1:][~nz] > 0).any()  # restarts happen after a 0


def test_error_rate_is_exact_on_known_sequences():
    x = torch.tensor([[3, 2, 1, 0, 5, 4], [3, 3, 0, 0, 7, 1]])
    v = countdown.violations(x)
    assert v.tolist() == [[False] * 5, [True, True, False, False, True]]
    assert countdown.error_rate(x) == pytest.approx(3 / 10)
    assert countdown.sequence_error_rate(x) == 0.5
    u = torch.randint(32, (400, 256), generator=torch.Generator().manual_seed(0))
    assert countdown.error_rate(u) == pytest.approx((31 / 32) ** 2, abs=0.01)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="^n:"):
        countdown.generate(0)
    with pytest.raises(ValueError, match="^split:"):
        countdown.load("val")
    with pytest.raises(ValueError, match="^x:"):
        countdown.violations(torch.zeros(3, 1, dtype=torch.long))


def test_masked_countdown_recipe_runs(tmp_path):
    from diffzoo.cli import build_parser

    args = build_parser().parse_args(
        "train masked-countdown --steps 2 --batch-size 4 --train-seqs 16 --test-seqs 4 --eval-samples 2 "
        f"--d-model 16 --n-layers 1 --n-heads 2 --out-dir {tmp_path / 'run'} --no-progress".split()
    )
    assert args.zoo_name is None
    metrics = args.recipe_fn(args)
    assert 0.0 <= metrics["fhs_error_rate"] <= 1.0 and metrics["test_nelbo_bits_per_token"] > 0
