"""Learning-rate policies against hand-computed values, and their validation."""

import pytest

from tradeoff.errors import TradeoffError
from tradeoff.config import load_spec
from tradeoff.training import piecewise_lr, triangular_lr


def test_piecewise_schedule_in_steps_and_epochs():
    spec = load_spec(None, ["train.lr=0.1", "train.lr_schedule=[[10, 0.01], [20, 0.001]]"]).train
    assert [piecewise_lr(t, 100, spec) for t in (0, 9, 10, 19, 20, 99)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    # in epochs of 5 steps: the boundaries move to steps 50 and 100
    assert [piecewise_lr(t, 200, spec, 5) for t in (49, 50, 99, 100)] == [0.1, 0.01, 0.01, 0.001]


def test_triangular_schedule_rises_to_the_peak_then_falls_to_zero():
    spec = load_spec(None, ["train.lr_policy=triangular", "train.lr=0.01", "train.lr_peak=0.4"]).train
    values = [triangular_lr(t, 100, spec) for t in (0, 20, 40, 70, 100)]
    assert values == pytest.approx([0.0, 0.005, 0.01, 0.005, 0.0])


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(TradeoffError, match="unknown learning-rate policy 'cosine'"):
        load_spec(None, ["train.lr_policy=cosine"])
    with pytest.raises(TradeoffError, match="train.lr_peak must be in"):
        load_spec(None, ["train.lr_peak=1.5"])
