"""Screening of client updates before any aggregation touches them.

A federated server must not crash on, or average in, an update that is not a
well-formed copy of the model: the wrong number of arrays, a wrong shape or
dtype, or NaN/Inf values.  :func:`screen_update` checks one update against the
global model's layout and returns the reason it is malformed (or ``None``)
(:func:`screen_layout` and :func:`nonfinite_problem` are its two halves);
:func:`screen_updates` splits a round's updates into kept indices and
``{index: reason}`` for the rejected ones.  Pure numpy; the Flower wrapper in
``strategies.guard`` logs and records the decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from fedsec.updates import UpdateMatrix


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
    dtype, its shape (:func:`screen_layout`), and that every floating value is
    finite (:func:`nonfinite_problem`).
    """
    problem = screen_layout(arrays, layout)
    if problem is not None:
        return problem
    return nonfinite_problem(cast(Sequence[np.ndarray], arrays))


def screen_layout(arrays: Sequence[object], layout: Sequence[ArraySpec]) -> str | None:
    """Why ``arrays`` does not have ``layout`` (number of arrays, type, dtype, shape), or ``None``.

    Reads no values: the finiteness check is :func:`nonfinite_problem` (or, for an
    update already written into a row, one dot product of the row with itself).
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
    return None


def nonfinite_problem(arrays: Sequence[np.ndarray]) -> str | None:
    """``"array i has k non-finite values (NaN/Inf)"`` for the first floating array with any; else None."""
    for index, array in enumerate(arrays):
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


def update_norm(arrays: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None = None) -> float:
    """L2 norm of the float arrays of ``arrays − reference`` (of ``arrays`` alone without a reference).

    Integer arrays (e.g. BatchNorm's step counters) are left out; sums run in float64.
    """
    total = 0.0
    for index, array in enumerate(arrays):
        if not np.issubdtype(array.dtype, np.floating):
            continue
        values = array if reference is None else array - reference[index]
        total += float(np.dot(values.ravel().astype(np.float64), values.ravel().astype(np.float64)))
    return float(np.sqrt(total))


def norm_outliers(norms: Sequence[float], *, bound: float, model_norm: float) -> dict[int, str]:
    """``{index: reason}`` of the updates whose norm no genuine update can have.

    An update is out of bounds when its norm exceeds ``bound`` × the global
    model's norm (+ 1), or, in a round of at least three updates, ``bound`` ×
    the round's median update norm.  Pure function; ``bound`` must be > 0.
    """
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound!r}")
    values = np.asarray(norms, dtype=np.float64)
    limits = {"the global model's norm + 1": bound * (model_norm + 1.0)}
    if len(values) >= 3:
        limits["the round's median update norm"] = bound * float(np.median(values))
    out: dict[int, str] = {}
    for index, norm in enumerate(values):
        for what, limit in limits.items():
            if norm > limit:
                out[index] = f"update norm {norm:.4g} exceeds {bound:g}× {what} (limit {limit:.4g})"
                break
    return out


def bounded_counts(
    counts: Sequence[int], *, bound: float | None, cap: int | None
) -> tuple[list[int], dict[int, str], dict[int, tuple[int, int]]]:
    """Sample counts no client can use to dominate: ``(counts to use, rejected, clamped)``.

    A count above ``cap`` (the most examples any client can hold) is rejected
    (``{index: reason}``); with ``bound`` and at least three counts, a count
    above ``bound`` × the round's median count is clamped to it (``{index:
    (reported, used)}``).  Rejected indices keep their count in the returned list.
    """
    used = [int(c) for c in counts]
    rejected: dict[int, str] = {}
    if cap is not None:
        for index, count in enumerate(used):
            if count > cap:
                rejected[index] = (
                    f"num-examples {count} exceeds the {cap} training examples of the whole federation"
                )
    clamped: dict[int, tuple[int, int]] = {}
    honest = [c for i, c in enumerate(used) if i not in rejected]
    if bound is not None and len(honest) >= 3:
        limit = max(1, int(bound * float(np.median(honest))))
        for index, count in enumerate(used):
            if index not in rejected and count > limit:
                clamped[index] = (count, limit)
                used[index] = limit
    return used, rejected, clamped


def finite_row(row: np.ndarray, arrays: list[np.ndarray]) -> str | np.floating[Any]:
    """The squared norm of an update written into ``row`` (from ``arrays``), or why it is not finite.

    One dot product of the row with itself checks every value (a NaN or Inf anywhere makes it
    non-finite) and is the squared norm the norm bound needs.  Only when it is not finite are the
    arrays searched for the reason; a finite update whose squared norm overflows is kept (its
    squared norm is inf), one whose difference to the global model overflows is not.
    """
    square: np.floating[Any] = np.dot(row, row)
    if np.isfinite(square):
        return square
    problem = nonfinite_problem(arrays)
    if problem is not None:
        return problem
    if not np.all(np.isfinite(row)):
        return f"the update minus the global model overflows {row.dtype}"
    return square


def row_norms(rows: np.ndarray, squares: list[np.floating[Any]]) -> np.ndarray:
    """Each row's L2 norm from its squared norm (:func:`finite_row`); where that overflowed, scaled."""
    norms = np.sqrt(np.asarray(squares, dtype=rows.dtype)).astype(np.float64)
    for i in np.flatnonzero(~np.isfinite(norms)):
        norms[i] = UpdateMatrix(rows[i : i + 1], checked=True).norms()[0]
    return norms
