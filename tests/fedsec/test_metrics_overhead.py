"""Classification scores (hand-computed) and the overhead ratio arithmetic (stubbed timer)."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from fedsec.metrics import classification_scores
from fedsec.overhead import ratios, step_overhead


def test_macro_scores_match_a_hand_computation():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 1, 0])
    scores = classification_scores(predictions, labels, num_classes=3)
    # class 0: tp 2, fp 1, fn 1 -> p 2/3, r 2/3; class 1: tp 2, fp 1, fn 0 -> p 2/3, r 1; class 2: p 0, r 0
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["precision"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert scores["recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert scores["f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert scores["support"] == 6
    with pytest.raises(ValueError, match="1-D of one length"):
        classification_scores(predictions[:3], labels, num_classes=3)


def test_ratios_are_relative_to_the_reference():
    result = ratios({"Basic CNN": 2.0, "DiPSeN": 2.5}, reference="Basic CNN")
    assert result == {
        "Basic CNN": {"ms_per_step": 2.0, "ratio": 1.0},
        "DiPSeN": {"ms_per_step": 2.5, "ratio": 1.25},
    }
    with pytest.raises(ValueError, match="> 0"):
        ratios({"a": 0.0}, reference="a")


def test_step_overhead_interleaves_models_and_takes_medians_from_one_run():
    # A fake clock: model "a" repetitions take 1 s per 10 steps, "b" 2 s, except one slow outlier of "a".
    durations = itertools.chain([1.0, 2.0], [9.0, 2.0], [1.0, 2.0], [1.0, 2.0])
    clock = {"now": 0.0, "pending": None}

    def timer() -> float:
        if clock["pending"] is None:
            clock["pending"] = next(durations)
            return clock["now"]
        clock["now"] += clock["pending"]
        clock["pending"] = None
        return clock["now"]

    models = {"a": nn.Linear(4, 2), "b": nn.Linear(4, 2)}
    x, y = torch.rand(8, 4), torch.randint(0, 2, (8,))
    result = step_overhead(models, x, y, reference="a", steps=10, repetitions=4, timer=timer)
    assert result["a"]["ms_per_step"] == pytest.approx(100.0)  # median ignores the 9 s outlier
    assert result["b"]["ms_per_step"] == pytest.approx(200.0)
    assert result["b"]["ratio"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="reference 'c'"):
        step_overhead(models, x, y, reference="c")
