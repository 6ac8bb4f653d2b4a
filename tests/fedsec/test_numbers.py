"""fedsec.numbers: the int/real predicates every config check uses."""

from __future__ import annotations

import numpy as np
import pytest

from fedsec.numbers import is_int, is_real


@pytest.mark.parametrize("value", [0, -3, np.int64(7), np.uint8(2)])
def test_integers_are_int_and_real(value: object) -> None:
    assert is_int(value)
    assert is_real(value)


@pytest.mark.parametrize("value", [0.5, np.float32(1.0), float("nan")])
def test_floats_are_real_not_int(value: object) -> None:
    assert is_real(value)
    assert not is_int(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), "3", None, [1], 1j])
def test_bools_strings_and_others_are_neither(value: object) -> None:
    assert not is_int(value)
    assert not is_real(value)
