"""Malformed-update screening: every kind of bad update is named, good ones pass."""

import numpy as np
import pytest

from fedsec.validation import layout_of, screen_update, screen_updates

GOOD = [np.zeros((2, 3), np.float32), np.ones(3, np.float32), np.array(5, np.int64)]
LAYOUT = layout_of(GOOD)


def test_well_formed_update_passes():
    assert screen_update([a.copy() for a in GOOD], LAYOUT) is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda u: u[:2], "expected 3 arrays, got 2"),
        (lambda u: [*u, np.zeros(1, np.float32)], "expected 3 arrays, got 4"),
        (lambda u: [u[0].reshape(3, 2), u[1], u[2]], r"array 0 has shape \(3, 2\), expected \(2, 3\)"),
        (lambda u: [u[0].astype(np.float64), u[1], u[2]], "array 0 has dtype float64, expected float32"),
        (lambda u: [u[0], u[1].tolist(), u[2]], "array 1 is a list"),
    ],
)
def test_structural_problems_are_named(mutate, reason):
    update = mutate([a.copy() for a in GOOD])
    result = screen_update(update, LAYOUT)
    assert result is not None and __import__("re").search(reason, result)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_and_counted(bad):
    update = [a.copy() for a in GOOD]
    update[1][[0, 2]] = bad
    assert screen_update(update, LAYOUT) == "array 1 has 2 non-finite values (NaN/Inf)"


def test_screen_updates_splits_kept_and_rejected_without_touching_inputs():
    nan = [a.copy() for a in GOOD]
    nan[0][0, 0] = np.nan
    before = nan[0].copy()
    kept, rejected = screen_updates([GOOD, nan, GOOD[:1]], LAYOUT)
    assert kept == [0]
    assert set(rejected) == {1, 2}
    assert "non-finite" in rejected[1] and "expected 3 arrays" in rejected[2]
    np.testing.assert_array_equal(nan[0], before)
