"""Screening of client updates before any aggregation touches them.

A federated server must not crash on, or average in, an update that is not a
well-formed copy of the model: the wrong number of arrays, a wrong shape or
dtype, or NaN/Inf values.  :func:`screen_update` checks one update against the
global model's layout and returns the reason it is malformed (or ``None``);
:func:`screen_updates` splits a round's updates into kept indices and
``{index: reason}`` for the rejected ones.  Pure numpy; the Flower wrapper in
``strategies.guard`` logs and records the decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one model array."""

    shape: tuple[int, ...]
    dtype: np.dtype


def layout_of(arrays: Sequence[np.ndarray]) -> tuple[ArraySpec, ...]:
    """The layout (shape and dtype of each array) that updates must match."""
    return tuple(ArraySpec(tuple(a.shape), np.dtype(a.dtype)) for a in arrays)


def screen_update(arrays: Sequence[object], layout: Sequence[ArraySpec]) -> str | None:
    """Return why ``arrays`` is not a well-formed update for ``layout``, or ``None``.

    Checks, in order: the number of arrays, that each is a numpy array, its
    dtype, its shape, and that every floating value is finite.
    """
    if len(arrays) != len(layout):
        return f"expected {len(layout)} arrays, got {len(arrays)}"
    for index, (array, spec) in enumerate(zip(arrays, layout, strict=True)):
        if not isinstance(array, np.ndarray):
            return f"array {index} is a {type(array).__name__}, not a numpy array"
        if array.dtype != spec.dtype:
            return f"array {index} has dtype {array.dtype}, expected {spec.dtype}"
        if tuple(array.shape) != spec.shape:
            return f"array {index} has shape {tuple(array.shape)}, expected {spec.shape}"
        if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            return f"array {index} has {bad} non-finite values (NaN/Inf)"
    return None


def screen_updates(
    updates: Sequence[Sequence[object]], layout: Sequence[ArraySpec]
) -> tuple[list[int], dict[int, str]]:
    """Split a round's updates into kept indices and ``{index: reason}`` rejections."""
    kept: list[int] = []
    rejected: dict[int, str] = {}
    for index, arrays in enumerate(updates):
        reason = screen_update(arrays, layout)
        if reason is None:
            kept.append(index)
        else:
            rejected[index] = reason
    return kept, rejected
