"""fedsec.updates.gram_checked: finiteness read off the Gram matrix, same answers as the O(n·d) check."""

from __future__ import annotations

import numpy as np
import pytest

from fedsec.updates import as_update_matrix, gram_checked


def _rows(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((6, 50)).astype(np.float32)


def test_finite_rows_give_the_same_cosines_and_norms_as_the_full_check():
    rows = _rows()
    fast, full = gram_checked(rows), as_update_matrix(rows)
    np.testing.assert_array_equal(fast.cosines(), full.cosines())
    np.testing.assert_array_equal(fast.norms(), full.norms())


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_row_with_nan_or_inf_is_named(value):
    rows = _rows()
    rows[2, 7] = value
    rows[4, 0] = value
    with pytest.raises(ValueError, match=r"history has non-finite values \(NaN/Inf\) in rows \[2, 4\]"):
        gram_checked(rows, name="history")


def test_finite_rows_whose_product_overflows_are_accepted_and_a_bad_row_beside_them_is_found():
    rows = _rows()
    rows[1] *= np.float32(1e30)  # its squared norm overflows float32: the Gram is redone on scaled rows
    matrix = gram_checked(rows)
    assert np.all(np.isfinite(matrix.cosines()))
    np.testing.assert_allclose(
        matrix.cosines(), as_update_matrix(rows.astype(np.float64)).cosines(), atol=1e-6
    )
    rows[3, 3] = np.nan
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        gram_checked(rows)


def test_other_arrays_take_the_full_check():
    with pytest.raises(ValueError, match="updates has non-finite values"):
        gram_checked(np.asfortranarray(np.array([[1.0, np.inf], [0.0, 1.0]])))
    assert gram_checked(np.eye(3, dtype=np.int64)).n == 3  # converted like as_update_matrix
