"""Layered defense selection: cosine checks, HDBSCAN majority and the two-step selection."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedsec.defenses import selection as selection_module
from fedsec.defenses.selection import (
    Selection,
    cosine_to_reference,
    hdbscan_majority,
    layered_selection,
    median_norm_clip,
    pairwise_cosine_distances,
)

D = 20


def _benign_and_planted(seed: int, outliers: str) -> np.ndarray:
    """7 benign updates (a common direction + noise) followed by 3 planted outliers."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=D)
    benign = base + 0.3 * rng.normal(size=(7, D))
    if outliers == "cluster":  # a tight group in another direction
        planted = rng.normal(size=D) + 0.05 * rng.normal(size=(3, D))
    elif outliers == "opposite":
        planted = -base + 0.3 * rng.normal(size=(3, D))
    elif outliers == "scattered":  # mutually dissimilar and much larger
        planted = 50.0 * rng.normal(size=(3, D))
    else:
        raise AssertionError(outliers)
    return np.vstack([benign, planted])


# ----------------------------------------------------------------------------- cosine


def test_cosine_to_reference_by_hand():
    updates = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    reference = np.array([2.0, 0.0])

    result = cosine_to_reference(updates, reference)

    # same direction 1, orthogonal 0, opposite -1, 45° 1/√2, zero update 0
    np.testing.assert_allclose(result, [1.0, 0.0, -1.0, 1 / np.sqrt(2), 0.0], atol=1e-12)
    assert result.dtype == np.float64


def test_cosine_to_zero_reference_is_zero():
    np.testing.assert_array_equal(cosine_to_reference(np.array([[1.0, 2.0]]), np.zeros(2)), [0.0])


def test_pairwise_cosine_distances_by_hand():
    updates = np.array([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [1.0, 1.0]], dtype=np.float32)

    distances = pairwise_cosine_distances(updates)

    s = 1 - 1 / np.sqrt(2)  # 45°
    expected = np.array(
        [
            [0.0, 1.0, 2.0, s],
            [1.0, 0.0, 1.0, s],
            [2.0, 1.0, 0.0, 2 - s],
            [s, s, 2 - s, 0.0],
        ]
    )
    np.testing.assert_allclose(distances, expected, atol=1e-7)
    assert distances.dtype == np.float64
    np.testing.assert_array_equal(distances, distances.T)
    np.testing.assert_array_equal(np.diag(distances), 0.0)


def test_pairwise_distances_of_huge_values_stay_finite_and_in_range():
    updates = np.array([[1e300, 1e300], [1e300, -1e300], [5e299, 5e299]])

    distances = pairwise_cosine_distances(updates)

    np.testing.assert_allclose(distances, [[0, 1, 0], [1, 0, 1], [0, 1, 0]], atol=1e-12)


def test_inputs_are_not_mutated():
    updates = np.array([[1.0, 2.0], [3.0, -4.0], [0.5, 0.5]])
    before = updates.copy()

    pairwise_cosine_distances(updates)
    cosine_to_reference(updates, np.array([1.0, 0.0]))
    hdbscan_majority(updates)
    layered_selection(updates, previous_global_update=np.array([1.0, 1.0]))

    np.testing.assert_array_equal(updates, before)


# ----------------------------------------------------------------------------- hdbscan_majority


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("outliers", ["cluster", "opposite", "scattered"])
def test_hdbscan_majority_drops_planted_outliers(seed, outliers):
    updates = _benign_and_planted(seed, outliers)

    kept = hdbscan_majority(updates)

    # all 3 planted are dropped; the kept set is a strict majority of benign updates.
    # (With a single cluster HDBSCAN's allow_single_cluster labelling may also drop
    # a benign fringe update: it keeps those that persist until the cluster dissolves.)
    assert set(kept.tolist()) <= set(range(7))
    assert len(kept) >= 10 // 2 + 1
    assert kept.dtype == np.int64 and np.all(np.diff(kept) > 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hdbscan_majority_keeps_every_benign_update_when_outliers_form_a_cluster(seed):
    updates = _benign_and_planted(seed, "cluster")

    kept = hdbscan_majority(updates, min_cluster_size=3)

    # two clusters (7 benign, 3 planted): the larger one is kept whole
    np.testing.assert_array_equal(kept, np.arange(7))


def test_hdbscan_majority_is_deterministic():
    updates = _benign_and_planted(4, "scattered")

    np.testing.assert_array_equal(hdbscan_majority(updates), hdbscan_majority(updates.copy()))


@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_updates_are_all_kept(n):
    updates = np.array([[1.0, 0.0], [-1.0, 0.0]])[:n]

    np.testing.assert_array_equal(hdbscan_majority(updates), np.arange(n))


class _FakeHDBSCAN:
    labels: np.ndarray = np.array([])

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def fit_predict(self, distances):
        return self.labels


def test_all_noise_keeps_everything_and_warns(monkeypatch, caplog):
    _FakeHDBSCAN.labels = np.array([-1, -1, -1, -1])
    monkeypatch.setattr(selection_module, "HDBSCAN", _FakeHDBSCAN)

    with caplog.at_level(logging.WARNING, logger="fedsec.defenses.selection"):
        kept = hdbscan_majority(np.eye(4))

    np.testing.assert_array_equal(kept, np.arange(4))
    assert "noise" in caplog.text


def test_equal_sized_clusters_tie_goes_to_the_one_with_the_lowest_index(monkeypatch):
    _FakeHDBSCAN.labels = np.array([-1, 1, 0, 1, 0])
    monkeypatch.setattr(selection_module, "HDBSCAN", _FakeHDBSCAN)

    kept = hdbscan_majority(np.eye(5))

    np.testing.assert_array_equal(kept, [1, 3])


def test_hdbscan_is_called_with_the_documented_parameters(monkeypatch):
    _FakeHDBSCAN.labels = np.array([0, 0, 0, 0, 0, -1, -1])
    calls = []

    class Recording(_FakeHDBSCAN):
        def __init__(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr(selection_module, "HDBSCAN", Recording)

    kept = hdbscan_majority(np.eye(7))

    np.testing.assert_array_equal(kept, np.arange(5))
    assert calls[0]["metric"] == "precomputed"
    assert calls[0]["min_cluster_size"] == 7 // 2 + 1
    assert calls[0]["min_samples"] == 1
    assert calls[0]["allow_single_cluster"] is True


@pytest.mark.parametrize(
    ("updates", "kwargs", "message"),
    [
        (np.zeros(3), {}, "updates must be a 2-D array"),
        (np.zeros((0, 3)), {}, "updates must hold at least one update"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), {}, r"updates has non-finite values .* rows \[0\]"),
        (np.eye(4), {"min_cluster_size": 1}, "min_cluster_size must be an integer >= 2"),
        (np.eye(4), {"min_cluster_size": 5}, "min_cluster_size must be at most the number of updates"),
        (np.eye(4), {"min_samples": 0}, "min_samples must be an integer >= 1"),
        (np.eye(4), {"min_samples": 2.0}, "min_samples must be an integer >= 1"),
    ],
)
def test_hdbscan_majority_errors_name_the_parameter(updates, kwargs, message):
    with pytest.raises(ValueError, match=message):
        hdbscan_majority(updates, **kwargs)


def test_cosine_reference_shape_is_checked():
    with pytest.raises(ValueError, match="reference must be a 1-D array of length 2"):
        cosine_to_reference(np.eye(2), np.ones(3))


# ----------------------------------------------------------------------------- layered_selection


def test_negative_cosine_updates_are_dropped_with_the_step_in_the_reason():
    previous = np.array([1.0, 0.0])
    updates = np.array([[1.0, 0.2], [-0.31, 0.95], [0.0, 1.0], [-1.0, 0.0], [0.5, -0.5]])

    result = layered_selection(updates, previous_global_update=previous, cluster=False)

    assert result.kept == (0, 2, 4)  # cosine exactly 0 (index 2) is kept
    assert sorted(result.dropped) == [1, 3]
    assert result.dropped[3].startswith("cosine -1.00 to the previous global update")
    assert "-0.31" in result.dropped[1]
    assert all("step 1" in reason for reason in result.dropped.values())


@pytest.mark.parametrize("previous", [None, np.zeros(2)])
def test_negative_step_is_skipped_without_a_usable_previous_update(previous):
    updates = np.array([[1.0, 0.0], [-1.0, 0.0]])

    result = layered_selection(updates, previous_global_update=previous, cluster=False)

    assert result.kept == (0, 1) and result.dropped == {}


def test_switching_the_negative_step_off_keeps_opposite_updates():
    updates = np.array([[1.0, 0.0], [-1.0, 0.0]])

    result = layered_selection(
        updates, previous_global_update=np.array([1.0, 0.0]), drop_negative=False, cluster=False
    )

    assert result.kept == (0, 1) and result.dropped == {}


def test_both_steps_drop_opposite_and_off_cluster_updates_with_original_indices():
    updates = _benign_and_planted(0, "scattered")
    # two updates opposite to the benign direction go first, shifting every index by 2
    base = updates[:7].mean(axis=0)
    updates = np.vstack([-base, -2.0 * base, updates])

    result = layered_selection(updates, previous_global_update=base, min_cluster_size=3)

    assert result.dropped[0].startswith("cosine -1.00") and result.dropped[1].startswith("cosine -1.00")
    # the scattered planted updates are off-cluster (or negative); benign ones are kept
    assert set(result.kept) <= set(range(2, 9))
    assert {9, 10, 11} <= set(result.dropped)
    for index in {9, 10, 11}:
        assert "HDBSCAN majority cluster" in result.dropped[index] or "step 1" in result.dropped[index]
    assert set(result.kept) | set(result.dropped) == set(range(12))


def test_cluster_step_alone_drops_the_planted_cluster():
    updates = _benign_and_planted(1, "cluster")

    result = layered_selection(updates, previous_global_update=None, min_cluster_size=3)

    assert result.kept == tuple(range(7))
    assert result.dropped == {
        i: "outside the HDBSCAN majority cluster (layered defense, step 2)" for i in (7, 8, 9)
    }


def test_switching_both_steps_off_keeps_everything():
    updates = _benign_and_planted(2, "opposite")

    result = layered_selection(updates, previous_global_update=updates[0], drop_negative=False, cluster=False)

    assert result.kept == tuple(range(10)) and result.dropped == {}


def test_a_negative_majority_means_a_stale_reference_and_skips_the_step(caplog):
    with caplog.at_level(logging.WARNING, logger="fedsec.defenses.selection"):
        result = layered_selection(-np.eye(3), previous_global_update=np.ones(3), cluster=False)

    assert result.kept == (0, 1, 2) and result.dropped == {}
    assert "stale" in caplog.text


def test_a_negative_minority_is_still_dropped():
    updates = np.array([[1.0, 1.0, 0.0], [1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [-1.0, -1.0, 0.0]])

    result = layered_selection(updates, previous_global_update=np.ones(3), cluster=False)

    assert result.kept == (0, 1, 2) and list(result.dropped) == [3]


def test_too_large_min_cluster_size_is_lowered_to_the_survivors(monkeypatch):
    calls = []

    class Recording(_FakeHDBSCAN):
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit_predict(self, distances):
            return np.zeros(len(distances), dtype=np.int64)

    monkeypatch.setattr(selection_module, "HDBSCAN", Recording)
    updates = np.vstack([np.eye(5) + 1.0, -np.ones((3, 5))])  # 5 positive, 3 negative to `previous`

    result = layered_selection(updates, previous_global_update=np.ones(5), min_cluster_size=8)

    assert calls[0]["min_cluster_size"] == 5  # 8 > 5 survivors of step 1
    assert calls[0]["min_samples"] == 5  # default: the cluster size, lowered with it
    assert result.kept == (0, 1, 2, 3, 4) and sorted(result.dropped) == [5, 6, 7]

    layered_selection(updates, previous_global_update=np.ones(5), min_cluster_size=8, min_samples=7)
    assert calls[1]["min_samples"] == 5  # lowered to the survivors too


def _on_a_circle(degrees):
    radians = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians), np.zeros_like(radians)], axis=1)


def test_min_samples_changes_the_majority_single_linkage_versus_the_cluster_size():
    # eight updates 3 degrees apart, then a tight group of four 5 degrees past the last:
    # single linkage (min_samples=1) keeps the evenly spaced eight; with min_samples equal
    # to the cluster size (7 of 12) each update's reach is its 7th-neighbour distance,
    # and the densest 7 are the end of the line plus the tight group.
    updates = _on_a_circle([0, 3, 6, 9, 12, 15, 18, 21, 26, 26.2, 26.4, 26.6])

    single = hdbscan_majority(updates, min_samples=1)
    sized = hdbscan_majority(updates, min_samples=None)

    np.testing.assert_array_equal(single, np.arange(8))
    np.testing.assert_array_equal(sized, hdbscan_majority(updates, min_samples=12 // 2 + 1))
    assert set(sized.tolist()) != set(single.tolist()) and {8, 9} <= set(sized.tolist())
    assert layered_selection(updates, previous_global_update=None).kept == tuple(sized.tolist())
    assert layered_selection(updates, previous_global_update=None, min_samples=1).kept == tuple(
        single.tolist()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"previous_global_update": np.ones(3)}, "previous_global_update must be a 1-D array of length 2"),
        ({"previous_global_update": np.array([1.0, np.inf])}, "previous_global_update has non-finite"),
        ({"previous_global_update": None, "cluster": 1}, "cluster must be a bool"),
        ({"previous_global_update": None, "drop_negative": "yes"}, "drop_negative must be a bool"),
        ({"previous_global_update": None, "min_cluster_size": 0}, "min_cluster_size must be an integer"),
        ({"previous_global_update": None, "min_samples": 0}, "min_samples must be an integer"),
    ],
)
def test_layered_selection_errors_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layered_selection(np.eye(2), **kwargs)


def test_selection_validates_its_fields():
    with pytest.raises(ValueError, match="kept must hold sorted, distinct indices"):
        Selection(kept=(2, 1), dropped={})
    with pytest.raises(ValueError, match="dropped must not contain kept indices"):
        Selection(kept=(0, 1), dropped={1: "x"})


def test_median_norm_clip_by_hand():
    updates = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 0.0]])  # norms 5, 1, 10, 0

    bound, factors = median_norm_clip(updates)

    assert bound == pytest.approx(3.0)  # median of 0, 1, 5, 10
    np.testing.assert_allclose(factors, [3.0 / 5.0, 1.0, 0.3, 1.0])
    clipped = updates * factors[:, None]
    assert np.linalg.norm(clipped, axis=1).max() == pytest.approx(3.0)


def test_step1_record_applied_skipped_no_reference_and_off_on_hand_made_updates():
    minority = np.array([[1.0, 1.0, 0.0], [1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [-1.0, -1.0, 0.0]])
    applied = layered_selection(minority, previous_global_update=np.ones(3), cluster=False)
    assert (applied.step1, applied.negative) == ("applied", 1)
    assert list(applied.dropped) == [3]

    no_negative = layered_selection(minority[:3], previous_global_update=np.ones(3), cluster=False)
    assert (no_negative.step1, no_negative.negative) == ("applied", 0)  # ran, found nothing to drop

    majority = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [1.0, 1.0, 0.0]])
    skipped = layered_selection(majority, previous_global_update=np.ones(3), cluster=False)
    assert (skipped.step1, skipped.negative) == ("skipped-stale", 2)
    assert skipped.kept == (0, 1, 2) and skipped.dropped == {}

    half = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    exactly_half = layered_selection(half, previous_global_update=np.ones(3), cluster=False)
    assert (exactly_half.step1, exactly_half.negative) == ("applied", 2)  # half is not "more than half"
    assert exactly_half.kept == (2, 3)

    for previous in (None, np.zeros(3)):
        first = layered_selection(minority, previous_global_update=previous, cluster=False)
        assert (first.step1, first.negative) == ("no-reference", None)

    off = layered_selection(minority, previous_global_update=np.ones(3), drop_negative=False, cluster=False)
    assert (off.step1, off.negative) == ("off", 1)  # still counted, nothing dropped
    assert off.kept == (0, 1, 2, 3)


def test_selection_refuses_an_unknown_step1_status():
    with pytest.raises(ValueError, match="step1"):
        Selection(kept=(0,), dropped={}, step1="maybe")
