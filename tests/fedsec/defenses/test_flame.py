"""FLAME: filtering of a planted cluster, median-norm clipping and the Gaussian noise."""

from __future__ import annotations

import numpy as np
import pytest

from fedsec.defenses.flame import FlameResult, flame

D = 20


def _benign_and_planted(seed: int) -> np.ndarray:
    """7 benign updates (a common direction + noise), then 3 planted ones in another direction."""
    rng = np.random.default_rng(seed)
    benign = rng.normal(size=D) + 0.3 * rng.normal(size=(7, D))
    planted = rng.normal(size=D) + 0.05 * rng.normal(size=(3, D))
    return np.vstack([benign, planted])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_cluster_is_dropped(seed):
    updates = _benign_and_planted(seed)

    result = flame(updates, noise_lambda=0.0, rng=np.random.default_rng(0))

    assert {7, 8, 9} <= set(result.dropped)
    assert set(result.kept) <= set(range(7)) and len(result.kept) >= 6
    assert all("HDBSCAN majority cluster" in reason for reason in result.dropped.values())
    assert set(result.kept) | set(result.dropped) == set(range(10))


def test_planted_cluster_dropped_and_all_benign_kept_with_smaller_min_cluster_size():
    updates = _benign_and_planted(0)

    result = flame(updates, noise_lambda=0.0, rng=np.random.default_rng(0), min_cluster_size=3)

    assert result.kept == tuple(range(7)) and sorted(result.dropped) == [7, 8, 9]


def test_huge_kept_update_is_clipped_to_the_median_norm():
    # four updates in the same direction: norms 1, 2, 3 and 1000 -> S_t = median = 2.5
    direction = np.array([0.6, 0.8, 0.0])
    updates = np.outer([1.0, 2.0, 3.0, 1000.0], direction)

    result = flame(updates, noise_lambda=0.0, rng=np.random.default_rng(0))

    assert result.kept == (0, 1, 2, 3) and result.dropped == {}
    assert result.clip_norm == pytest.approx(2.5)
    assert result.noise_std == 0.0
    # clipped norms 1, 2, 2.5, 2.5 -> mean norm 8 / 4 = 2 (unclipped it would be 251.5)
    np.testing.assert_allclose(result.update, 2.0 * direction)
    assert np.linalg.norm(result.update) <= result.clip_norm + 1e-12


def test_aggregate_norm_is_bounded_by_the_median_norm():
    rng = np.random.default_rng(5)
    updates = _benign_and_planted(5)
    updates[0] *= 1e4  # a boosted (model-replacement style) benign-direction update

    result = flame(updates, noise_lambda=0.0, rng=rng, min_cluster_size=3)

    assert 0 in result.kept
    norms = np.linalg.norm(updates, axis=1)
    assert result.clip_norm == pytest.approx(np.median(norms))
    assert np.linalg.norm(result.update) <= result.clip_norm * (1 + 1e-12)
    assert np.linalg.norm(result.update) < 0.01 * norms[0] / len(result.kept)


def test_noise_has_the_requested_standard_deviation():
    d = 20_000
    updates = np.zeros((3, d))
    updates[:, 0] = [1.0, 2.0, 4.0]  # same direction, S_t = 2
    noise_lambda = 0.5

    noised = flame(updates, noise_lambda=noise_lambda, rng=np.random.default_rng(7))
    clean = flame(updates, noise_lambda=0.0, rng=np.random.default_rng(7))

    assert noised.noise_std == pytest.approx(noise_lambda * 2.0)
    noise = noised.update - clean.update
    assert np.std(noise) == pytest.approx(1.0, rel=0.1)
    assert abs(np.mean(noise)) < 0.05


def test_same_seed_same_result_and_different_seed_different_noise():
    updates = _benign_and_planted(3)

    a = flame(updates, noise_lambda=0.01, rng=np.random.default_rng(11))
    b = flame(updates, noise_lambda=0.01, rng=np.random.default_rng(11))
    c = flame(updates, noise_lambda=0.01, rng=np.random.default_rng(12))

    np.testing.assert_array_equal(a.update, b.update)
    assert a.kept == b.kept and a.dropped == b.dropped
    assert not np.array_equal(a.update, c.update)


def test_flame_does_not_mutate_updates():
    updates = _benign_and_planted(4)
    before = updates.copy()

    result = flame(updates, rng=np.random.default_rng(0))

    np.testing.assert_array_equal(updates, before)
    assert isinstance(result, FlameResult) and result.update.shape == (D,)


@pytest.mark.parametrize(
    ("updates", "kwargs", "message"),
    [
        (np.ones(3), {}, "updates must be a 2-D array"),
        (np.array([[1.0, np.nan]]), {}, "updates has non-finite values"),
        (np.eye(3), {"noise_lambda": -0.1}, "noise_lambda must be a finite number >= 0"),
        (np.eye(3), {"noise_lambda": float("inf")}, "noise_lambda must be a finite number >= 0"),
        (np.eye(3), {"rng": 0}, "rng must be a numpy.random.Generator"),
        (np.eye(3), {"min_cluster_size": 1}, "min_cluster_size must be an integer >= 2"),
    ],
)
def test_flame_errors_name_the_parameter(updates, kwargs, message):
    arguments = {"rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(ValueError, match=message):
        flame(updates, **arguments)
