"""fedsec's aggregators on the update matrix compute what Flower's compute, on the same replies."""

import numpy as np
import pytest
from flwr.app import ArrayRecord

from fedsec.config import RunConfig
from fedsec.robust import BLOCK, bulyan, coordinate_median, krum_scores, nearest_median_mean, trimmed_mean
from fedsec.updates import UpdateMatrix
from strategies import build_strategy
from tests.flower_fakes import configure, train_reply

GLOBAL = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), np.zeros(5, np.float32)]


def replies(seed: int, n: int = 11):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        spread = 5.0 if i >= n - 2 else 0.3  # two outliers
        arrays = [(g + rng.normal(0, spread, g.shape)).astype(np.float32) for g in GLOBAL]
        out.append(train_reply(i, arrays, num_examples=int(rng.integers(10, 50))))
    return out


def aggregate(name: str, seed: int) -> list[np.ndarray]:
    config = RunConfig.from_run_config(
        {"strategy": name, "num-clients": 11, "num-malicious-clients": 2, "update-norm-bound": 0,
         "num-examples-bound": 0, "trim-beta": 0.2}
    )  # fmt: skip
    strategy = build_strategy(config, initial_arrays=GLOBAL)
    configure(strategy, 1, GLOBAL, nodes=11)
    arrays, _ = strategy.aggregate_train(1, replies(seed))
    assert arrays is not None
    return arrays.to_numpy_ndarrays()


@pytest.mark.parametrize("name", ["fedavg", "krum", "multikrum", "fedmedian", "fedtrimmedavg", "bulyan"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fedsecs_aggregator_equals_flowers_on_the_same_replies(name, seed):
    ours, flowers = aggregate(name, seed), aggregate(f"flower-{name}", seed)
    for mine, theirs in zip(ours, flowers, strict=True):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_krum_scores_sum_the_nearest_squared_distances():
    rows = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 10.0]])
    # n - f - 2 = 1 nearest other: distances² from row 0: 1, 4, 200
    np.testing.assert_allclose(krum_scores(UpdateMatrix(rows), 1), [1.0, 1.0, 4.0, 164.0])


def test_trimmed_mean_and_bulyan_on_hand_made_columns():
    rows = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    assert trimmed_mean(UpdateMatrix(rows), 0.2)[0] == pytest.approx(3.0)  # 1 and 100 cut
    seven = np.array([[1.0], [1.1], [0.9], [1.05], [0.95], [1.0], [50.0]])
    assert bulyan(UpdateMatrix(seven), 1)[0] == pytest.approx(1.0, abs=0.06)
    with pytest.raises(ValueError, match="4f \\+ 3"):
        bulyan(UpdateMatrix(seven[:6]), 1)


def test_bulyan_keeps_the_values_nearest_the_median_when_windows_tie():
    # Multi-Krum drops the two far rows; in column 1 the median of the five kept is 1 and its three
    # nearest values are 1, 1.5 and one 0 (mean 5/6).  The windows {0, 0, 1} and {0, 1, 1.5} reach
    # equally far from the median; only the second holds the nearest three.
    rows = np.array([[0, 0], [0, 0], [0, 1], [0, 1.5], [0, 9], [1000, 0], [-1000, 0]], dtype=np.float32)
    assert bulyan(UpdateMatrix(rows), 1)[1] == pytest.approx(2.5 / 3)


@pytest.mark.parametrize(("theta", "beta"), [(5, 3), (6, 2), (7, 7), (12, 4), (13, 5), (60, 20), (9, 1)])
def test_nearest_median_mean_is_the_mean_of_the_beta_nearest_values(theta, beta):
    rng = np.random.default_rng(theta * 100 + beta)
    block = rng.integers(0, 6, size=(500, theta)).astype(np.float32)  # small integers: many ties
    expected = []
    for row in block:
        median = np.median(row)
        # the β nearest, an equally near lower value first (the rule's choice on ties)
        nearest = row[np.lexsort((row, np.abs(row - median)))[:beta]]
        expected.append(nearest.mean())
    np.testing.assert_allclose(nearest_median_mean(block.copy(), beta), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="beta must be an integer"):
        nearest_median_mean(block.copy(), theta + 1)


def test_the_matrix_strategies_work_without_the_guard_too():
    from strategies.robust import MatrixKrum

    krum = MatrixKrum(num_malicious_nodes=2, min_train_nodes=1, min_available_nodes=1)
    configure(krum, 1, GLOBAL, nodes=11)
    arrays, _ = krum.aggregate_train(1, replies(0))
    assert isinstance(arrays, ArrayRecord)
    np.testing.assert_allclose(arrays.to_numpy_ndarrays()[0], aggregate("flower-krum", 0)[0], rtol=1e-6)


@pytest.mark.parametrize(
    "rule",
    [
        lambda u, t: coordinate_median(u, threads=t),
        lambda u, t: trimmed_mean(u, 0.2, threads=t),
        lambda u, t: bulyan(u, 2, threads=t),
    ],
    ids=["median", "trimmed-mean", "bulyan"],
)
def test_the_coordinate_wise_rules_give_the_same_bits_in_threads(rule):
    rng = np.random.default_rng(5)
    updates = UpdateMatrix(rng.standard_normal((13, 3 * BLOCK + 17)).astype(np.float32))
    alone = rule(updates, 1)
    for threads in (2, 3):
        np.testing.assert_array_equal(rule(updates, threads), alone)
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        rule(updates, 0)
