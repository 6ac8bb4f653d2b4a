"""FoolsGold: sybil down-weighting, the pardoning and logit steps by hand, and the history."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedsec.defenses.foolsgold import FoolsGoldHistory, foolsgold_aggregate, foolsgold_weights

# ----------------------------------------------------------------------------- foolsgold_weights


@pytest.mark.parametrize("seed", [0, 1])
def test_identical_sybils_are_down_weighted_and_honest_clients_are_not(seed):
    rng = np.random.default_rng(seed)
    d = 200
    sybil = rng.normal(size=d)
    honest = rng.normal(size=(5, d))  # random high-dimensional vectors are nearly orthogonal
    history = np.vstack([honest[:2], np.tile(sybil, (3, 1)), honest[2:]])

    weights = foolsgold_weights(history)

    sybils = [2, 3, 4]
    np.testing.assert_allclose(weights[sybils], 0.0, atol=1e-9)
    assert np.all(np.delete(weights, sybils) > 0.5)


def test_nearly_identical_sybils_are_down_weighted_too():
    rng = np.random.default_rng(3)
    d = 200
    sybils = rng.normal(size=d) + 1e-3 * rng.normal(size=(3, d))
    history = np.vstack([sybils, rng.normal(size=(5, d))])

    weights = foolsgold_weights(history)

    np.testing.assert_allclose(weights[:3], 0.0, atol=1e-9)
    assert np.all(weights[3:] > 0.5)


def test_two_orthogonal_clients_get_equal_full_weight():
    # cs = 0 everywhere, v = [0, 0]; wv = [1, 1] -> 0.99 each -> ln 99 + 0.5 = 5.09 -> clipped to 1
    weights = foolsgold_weights(np.array([[3.0, 0.0], [0.0, 0.5]]))

    np.testing.assert_array_equal(weights, [1.0, 1.0])


@pytest.mark.parametrize(("kappa", "expected"), [(1.0, [0.0, 0.0, 0.5, 1.0]), (0.5, [0.0, 0.0, 0.25, 1.0])])
def test_pardoning_and_logit_by_hand(kappa, expected):
    # two identical sybils, a client at 45° to them, and one orthogonal to everyone:
    # cs01 = 1, cs02 = cs12 = s = 1/√2, cs·3 = 0; v = [1, 1, s, 0].
    # pardoning row 2 (v2 = s < 1): cs20 = cs21 = s·s/1 = 0.5; row 3 stays 0.
    # wv = 1 - max_j cs = [0, 0, 0.5, 1]; max 1 -> [0, 0, 0.5, 0.99];
    # logit: 0.5 -> κ(ln 1 + 0.5) = κ/2; 0.99 -> κ(ln 99 + 0.5) >= 1 -> 1.
    # (Without pardoning client 2 would get 1 - s = 0.29, a negative logit, weight 0.)
    history = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 4.0]])

    weights = foolsgold_weights(history, kappa=kappa)

    np.testing.assert_allclose(weights, expected, atol=1e-12)


def test_single_client_gets_weight_one():
    np.testing.assert_array_equal(foolsgold_weights(np.array([[1.0, 2.0]])), [1.0])


def test_all_identical_clients_get_zero_without_runtime_warnings():
    with np.errstate(all="raise"):
        weights = foolsgold_weights(np.ones((4, 3)))

    np.testing.assert_array_equal(weights, np.zeros(4))


def test_weights_do_not_mutate_history():
    history = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    before = history.copy()

    foolsgold_weights(history)

    np.testing.assert_array_equal(history, before)


@pytest.mark.parametrize(
    ("history", "kwargs", "message"),
    [
        (np.ones(3), {}, "history must be a 2-D array"),
        (np.zeros((0, 2)), {}, "history must hold at least one update"),
        (np.array([[np.inf, 0.0]]), {}, "history has non-finite values"),
        (np.eye(2), {"kappa": 0.0}, "kappa must be a finite number > 0"),
        (np.eye(2), {"kappa": float("nan")}, "kappa must be a finite number > 0"),
        (np.eye(2), {"eps": 0.0}, r"eps must be a number in \(0, 0.5\)"),
        (np.eye(2), {"eps": 0.7}, r"eps must be a number in \(0, 0.5\)"),
    ],
)
def test_weights_errors_name_the_parameter(history, kwargs, message):
    with pytest.raises(ValueError, match=message):
        foolsgold_weights(history, **kwargs)


# ----------------------------------------------------------------------------- foolsgold_aggregate


def test_aggregate_is_the_weighted_mean_by_hand():
    updates = np.array([[1.0, 2.0], [3.0, 6.0], [100.0, -100.0]])

    result = foolsgold_aggregate(updates, np.array([1.0, 0.5, 0.0]))

    # (1·[1, 2] + 0.5·[3, 6]) / 1.5 = [2.5, 5] / 1.5
    np.testing.assert_allclose(result, [5 / 3, 10 / 3])
    assert result.shape == (2,) and result.dtype == np.float64


def test_aggregate_with_all_zero_weights_is_zero_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="fedsec.defenses.foolsgold"):
        result = foolsgold_aggregate(np.ones((2, 3)), np.zeros(2))

    np.testing.assert_array_equal(result, np.zeros(3))
    assert "zero" in caplog.text


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.ones(3), "weights must hold one weight per update"),
        (np.array([1.0, -0.1]), "weights must be finite and >= 0"),
        (np.array([1.0, np.nan]), "weights must be finite and >= 0"),
    ],
)
def test_aggregate_errors_name_the_parameter(weights, message):
    with pytest.raises(ValueError, match=message):
        foolsgold_aggregate(np.ones((2, 2)), weights)


# ----------------------------------------------------------------------------- FoolsGoldHistory


def test_history_accumulates_across_rounds_and_starts_new_ids_at_zero():
    history = FoolsGoldHistory()
    round1 = np.array([[1.0, 0.0], [0.0, 2.0]])
    round2 = np.array([[0.0, 5.0], [1.0, 1.0], [3.0, 3.0]])

    first = history.update(["a", "b"], round1)
    second = history.update(["c", "a", "b"], round2)

    np.testing.assert_array_equal(first, round1)
    # c is new (0 + [0, 5]); a = [1, 0] + [1, 1]; b = [0, 2] + [3, 3]
    np.testing.assert_array_equal(second, [[0.0, 5.0], [2.0, 1.0], [3.0, 5.0]])
    assert len(history) == 3 and "c" in history
    np.testing.assert_array_equal(history.history["a"], [2.0, 1.0])


def test_history_never_aliases_caller_arrays_and_what_it_returns_cannot_change_it():
    history = FoolsGoldHistory()
    updates = np.array([[1.0, 1.0], [2.0, 2.0]])

    returned = history.update(["a", "b"], updates)  # stored rows in order: a read-only view
    updates[:] = 100.0
    assert not returned.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        returned[:] = -100.0
    history.history["a"][:] = 7.0
    reordered = history.update(["b", "a"], np.zeros((2, 2)))  # another order: a copy
    reordered[:] = -5.0

    np.testing.assert_array_equal(history.update(["a", "b"], np.zeros((2, 2))), [[1.0, 1.0], [2.0, 2.0]])


def test_history_rows_grow_for_new_clients_and_survive_a_checkpoint_round_trip():
    history = FoolsGoldHistory()
    rng = np.random.default_rng(0)
    seen: dict[str, np.ndarray] = {}
    for rnd in range(6):
        ids = [f"c{i}" for i in rng.choice(9, size=4, replace=False)]
        updates = rng.normal(size=(4, 3)).astype(np.float32)
        rows = history.update(ids, updates)
        for cid, update in zip(ids, updates, strict=True):
            seen[cid] = seen.get(cid, np.zeros(3, np.float32)) + update
        np.testing.assert_allclose(rows, np.stack([seen[c] for c in ids]), rtol=1e-6)
        assert rows.dtype == np.float32 and len(history) == len(seen), rnd
    restored = FoolsGoldHistory.from_history(history.history)
    ids = sorted(seen)
    np.testing.assert_array_equal(
        restored.update(ids, np.zeros((len(ids), 3))), np.stack([seen[c] for c in ids])
    )


@pytest.mark.parametrize(
    ("ids", "updates", "message"),
    [
        (["a"], np.ones((2, 2)), r"ids must hold one id per update \(2\), got 1"),
        (["a", "a"], np.ones((2, 2)), "ids must be distinct"),
        ([1, 2], np.ones((2, 2)), "ids must be strings"),
        ("ab", np.ones((2, 2)), "ids must be a sequence of client id strings"),
        (["a"], np.ones((1, 3)), "updates must have 2 coordinates like earlier rounds"),
        (["a"], np.array([[np.nan, 1.0]]), "updates has non-finite values"),
    ],
)
def test_history_errors_name_the_parameter_and_record_nothing(ids, updates, message):
    history = FoolsGoldHistory()
    history.update(["z"], np.ones((1, 2)))

    with pytest.raises(ValueError, match=message):
        history.update(ids, updates)

    assert len(history) == 1
