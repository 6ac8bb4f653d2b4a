"""Chen et al.'s detector statistics, calibration and detection counts, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsec.defenses.detection import (
    RoundStatistics,
    Thresholds,
    calibrate,
    confusion,
    cosine_to_others,
    detection_rates,
    flag,
    max_l2_to,
    norm_ratios,
    parse_detectors,
)


def test_cosine_to_the_sum_of_the_others_by_hand():
    updates = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    cos = cosine_to_others(updates)

    # row 0 vs (0,1)+(1,1)=(1,2): 1/sqrt(5); row 1 vs (2,1): 1/sqrt(5); row 2 vs (1,1): 1
    np.testing.assert_allclose(cos, [1 / math.sqrt(5), 1 / math.sqrt(5), 1.0])


def test_an_opposite_update_has_negative_cosine_and_a_zero_update_zero():
    updates = np.array([[1.0, 1.0], [1.0, 0.9], [0.9, 1.0], [-1.0, -1.0], [0.0, 0.0]])

    cos = cosine_to_others(updates)

    assert cos[3] < 0 < cos[0]
    assert cos[4] == 0.0


def test_norm_ratios_are_relative_to_the_median_norm():
    updates = np.array([[3.0, 4.0], [0.0, 5.0], [0.0, 50.0]])  # norms 5, 5, 50

    np.testing.assert_allclose(norm_ratios(updates), [1.0, 1.0, 10.0])


def test_max_l2_to_reference_rows_excludes_the_row_itself():
    updates = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])

    distances = max_l2_to(updates, reference=[0, 1])

    # row 0: only row 1 (5); row 1: only row 0 (5); row 2: max(10, 5)
    np.testing.assert_allclose(distances, [5.0, 5.0, 10.0])


def test_calibration_takes_the_benign_extremes_and_widens_them():
    history = [
        RoundStatistics(
            cosine=np.array([0.5, 0.8]), l2_ratio=np.array([1.0, 1.2]), accuracy_drop=np.array([0.0, 0.02])
        ),
        RoundStatistics(
            cosine=np.array([0.6, 0.4]), l2_ratio=np.array([0.9, 1.5]), accuracy_drop=np.array([0.01, 0.0])
        ),
    ]

    thresholds = calibrate(history, margin=0.1)

    # gaps below the median: round 1 median 0.65 → 0.15, -0.15; round 2 median 0.5 → -0.1, 0.1
    assert thresholds.cosine_gap == pytest.approx(0.15 * 1.1)
    assert thresholds.l2_ratio == pytest.approx(1.5 * 1.1)
    assert thresholds.accuracy_gamma == pytest.approx(0.022)


def test_calibration_keeps_fixed_thresholds():
    history = [RoundStatistics(cosine=np.array([0.5]), l2_ratio=np.array([1.0]))]

    thresholds = calibrate(history, margin=0.0, fixed=Thresholds(l2_ratio=3.0))

    assert (
        thresholds.l2_ratio == 3.0
        and thresholds.cosine_gap == pytest.approx(0.0)
        and thresholds.accuracy_gamma is None
    )


def test_flag_names_each_detector_that_fires_and_only_enabled_ones():
    stats = RoundStatistics(
        cosine=np.array([0.9, -0.5, 0.8]),  # median 0.8: gaps -0.1, 1.3, 0
        l2_ratio=np.array([1.0, 1.1, 9.0]),
        accuracy_drop=np.array([0.0, 0.3, 0.0]),
    )
    thresholds = Thresholds(accuracy_gamma=0.1, l2_ratio=2.0, cosine_gap=0.5)

    everything = flag(stats, thresholds, ("accuracy", "l2", "cosine"))
    only_l2 = flag(stats, thresholds, ("l2",))

    assert set(everything) == {1, 2}
    assert set(everything[1]) == {"accuracy", "cosine"} and set(everything[2]) == {"l2"}
    assert set(only_l2) == {2}


def test_confusion_counts_and_rates():
    counts = confusion(flagged={"1", "3"}, malicious={"1", "2"}, clients=["0", "1", "2", "3", "4"])

    assert counts == {"tp": 1, "fp": 1, "fn": 1, "tn": 2}
    assert detection_rates(counts) == {"recall": 0.5, "false_positive_rate": pytest.approx(1 / 3)}
    assert detection_rates({"tp": 0, "fp": 0, "fn": 0, "tn": 0}) == {
        "recall": None,
        "false_positive_rate": None,
    }


def test_unknown_detector_is_refused_by_name():
    assert parse_detectors("l2, cosine,l2") == ("l2", "cosine")
    with pytest.raises(ValueError, match="unknown detector 'norm'"):
        parse_detectors("l2,norm")
