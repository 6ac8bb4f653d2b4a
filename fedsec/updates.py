"""A round's client updates as one float32 matrix, and the n × n products every defense derives from.

Defenses compare clients: pairwise cosines and distances, norms, cosines to a
reference direction, weighted sums.  At n clients of a d-parameter model all of
them follow from one Gram matrix ``G = X Xᵀ`` (one float32 matrix product,
``O(n² d)``) and a few matrix–vector products, so :class:`UpdateMatrix` computes
``G`` once per round, shares it between every defense that asks, and does the
float64 work on ``n × n``, never on ``n × d``.

A selection of rows (:meth:`UpdateMatrix.take`) is a view: it indexes the
shared Gram matrix and scatters weights back onto the full matrix, so no
defense copies the ``(n, d)`` updates.  Pure numpy; nothing here mutates the
caller's arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "UpdateMatrix",
    "add_to",
    "as_update_matrix",
    "flatten_arrays",
    "flatten_into",
    "flatten_updates",
    "float_positions",
    "gram_checked",
]


def float_positions(arrays: Sequence[np.ndarray]) -> list[int]:
    """Indices of the floating-point arrays: what an update vector is made of (integer counters are not)."""
    return [i for i, a in enumerate(arrays) if np.issubdtype(np.asarray(a).dtype, np.floating)]


def flatten_arrays(arrays: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """One update vector: the float arrays of ``arrays − reference``, flattened, in their own precision."""
    return flatten_updates([arrays], reference)[0]


def add_to(reference: Sequence[np.ndarray], vector: np.ndarray) -> list[np.ndarray]:
    """``reference + vector`` as new arrays: ``vector`` spread over the float arrays, the others copied."""
    out = [np.array(a, copy=True) for a in reference]
    flat = np.asarray(vector)
    start = 0
    for i in float_positions(reference):
        size = out[i].size
        out[i] = (out[i] + flat[start : start + size].reshape(out[i].shape)).astype(out[i].dtype)
        start += size
    if start != flat.size:
        raise ValueError(f"vector has {flat.size} entries, the float arrays {start}")
    return out


def flatten_updates(
    updates: Sequence[Sequence[np.ndarray]], reference: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """``(n, d)`` rows: each client's float arrays minus ``reference``, flattened and concatenated.

    Integer arrays (BatchNorm step counters) are left out, as in every update
    vector fedsec compares.  One ``(n, d)`` allocation in the arrays' own
    precision (float32 for fedsec's models); no float64 copy.
    """
    float_index = float_positions(updates[0]) if updates else []
    sizes = [int(np.asarray(updates[0][i]).size) for i in float_index]
    dtypes = [np.asarray(updates[0][i]).dtype for i in float_index]
    rows = np.empty((len(updates), sum(sizes)), dtype=np.result_type(*dtypes) if dtypes else np.float32)
    for row, arrays in zip(rows, updates, strict=True):
        flatten_into(row, arrays, reference)
    return rows


def flatten_into(
    target: np.ndarray, arrays: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None = None
) -> None:
    """Write the float arrays of ``arrays − reference``, flattened, into the 1-D ``target`` (no temporary)."""
    start = 0
    for i in float_positions(arrays):
        values = np.asarray(arrays[i]).ravel()
        part = target[start : start + values.size]
        if reference is None:
            part[...] = values
        else:
            np.subtract(values, np.asarray(reference[i]).ravel(), out=part, casting="unsafe")
        start += values.size
    if start != target.size:
        raise ValueError(f"the float arrays hold {start} values, the target {target.size}")


@dataclass(frozen=True, eq=False)
class _Shared:
    """The full matrix and its Gram matrix (computed on first use), shared by every view of it.

    The Gram matrix is kept as ``(G', s)`` with ``G = diag(s) G' diag(s)``: ``s`` is 1 unless the
    product overflowed (some row so large that its squared norm does not fit the dtype), in which
    case every row is divided by its largest absolute entry and the product redone (cosines stay
    exact, norms are ``s · sqrt(G'_ii)``).
    """

    rows: np.ndarray
    cache: dict[str, np.ndarray] = field(default_factory=dict)

    def scaled_gram(self) -> tuple[np.ndarray, np.ndarray]:
        if "gram" not in self.cache:
            rows = self.rows
            # Overflow is expected and handled; NaN/Inf rows (gram_checked) stay non-finite.
            with np.errstate(over="ignore", invalid="ignore"):
                product = rows @ rows.T  # one GEMM in the rows' precision
                scales = np.ones(rows.shape[0], dtype=np.float64)
                if not np.all(np.isfinite(product)):  # overflow, or a non-finite row: scale, then redo
                    largest = np.maximum(rows.max(axis=1), -rows.min(axis=1)).astype(np.float64)
                    scales = np.where(largest > 0, largest, 1.0)
                    scaled = rows / scales[:, np.newaxis].astype(rows.dtype)
                    product = scaled @ scaled.T
            self.cache["gram"] = np.asarray(product, dtype=np.float64)
            self.cache["scales"] = scales
        return self.cache["gram"], self.cache["scales"]

    def has_gram(self) -> bool:
        return "gram" in self.cache


class UpdateMatrix:
    """``n`` update vectors of length ``d`` (rows of a float32 matrix), and the products defenses need.

    Parameters
    ----------
    checked
        The caller guarantees a finite 2-D float array (the guard checked every update); skips the check.
    rows
        ``(N, d)`` float array, kept in its precision (float32 in a round, from the clients' float32
        models; other dtypes become float64). Not copied when it is already a float array.
    """

    def __init__(
        self,
        rows: np.ndarray,
        *,
        checked: bool = False,
        _shared: _Shared | None = None,
        _index: np.ndarray | None = None,
    ):
        if _shared is None and checked:  # the caller already checked shape and finiteness (the guard)
            matrix = np.asarray(rows)
            _shared = _Shared(matrix.view() if matrix.flags.writeable else matrix)
            _shared.rows.setflags(write=False)
        if _shared is None:
            array = np.asarray(rows)
            if array.ndim != 2:
                raise ValueError(f"updates must be a 2-D array (n_clients, d), got shape {array.shape}")
            if array.shape[0] < 1 or array.shape[1] < 1:
                raise ValueError(
                    f"updates must hold at least one update of length >= 1, got shape {array.shape}"
                )
            dtype = array.dtype if array.dtype in (np.float32, np.float64) else np.float64
            matrix = np.ascontiguousarray(array, dtype=dtype)
            if matrix is array:
                matrix = matrix.view()
            matrix.setflags(write=False)
            if not np.all(np.isfinite(matrix)):
                bad = sorted({int(i) for i in np.nonzero(~np.isfinite(matrix))[0]})
                raise ValueError(f"updates has non-finite values (NaN/Inf) in rows {bad}")
            _shared = _Shared(matrix)
        self._shared = _shared
        self.index = (
            np.arange(_shared.rows.shape[0]) if _index is None else np.asarray(_index, dtype=np.int64)
        )

    # ------------------------------------------------------------------ shape
    @property
    def n(self) -> int:
        return int(self.index.size)

    @property
    def d(self) -> int:
        return int(self._shared.rows.shape[1])

    def __len__(self) -> int:
        return self.n

    def take(self, positions: Sequence[int] | np.ndarray) -> UpdateMatrix:
        """The rows at ``positions`` (of this selection) as a view sharing the Gram matrix."""
        chosen = self.index[np.asarray(positions, dtype=np.int64)]
        return UpdateMatrix(np.empty((0, 0)), _shared=self._shared, _index=chosen)

    def _full_rows(self) -> np.ndarray:
        """The whole shared matrix (all rows, not only the selected ones)."""
        return self._shared.rows

    def row(self, position: int) -> np.ndarray:
        """Row ``position`` (a read-only view)."""
        return self._shared.rows[self.index[position]]

    def array(self) -> np.ndarray:
        """The selected rows, float32 ``(n, d)``: the matrix itself if all are selected, else a copy."""
        if self.index.size == self._shared.rows.shape[0] and np.array_equal(
            self.index, np.arange(self.index.size)
        ):
            return self._shared.rows
        return self._shared.rows[self.index]

    # ------------------------------------------------------------------ n × n products
    def _scaled(self) -> tuple[np.ndarray, np.ndarray]:
        gram, scales = self._shared.scaled_gram()
        return gram[np.ix_(self.index, self.index)], scales[self.index]

    def gram(self) -> np.ndarray:
        """``X Xᵀ`` of the selected rows, float64 ``(n, n)`` (infinite where it overflows float64)."""
        gram, scales = self._scaled()
        with np.errstate(over="ignore"):
            return gram * np.outer(scales, scales)

    def norms(self) -> np.ndarray:
        """L2 norm of every row, float64 ``(n,)``: from the Gram matrix if computed, else ``O(n d)``."""
        if self._shared.has_gram():
            gram, scales = self._scaled()
            with np.errstate(over="ignore"):
                return scales * np.sqrt(np.maximum(np.diag(gram), 0.0))
        rows = self._shared.rows
        limit = np.sqrt(np.finfo(rows.dtype).max / 16.0 / max(1, rows.shape[1]))
        norms = np.empty(self.n, dtype=np.float64)
        for position, i in enumerate(self.index):
            row = rows[i]
            largest = float(max(row.max(), -row.min()))
            if largest <= limit:
                norms[position] = float(np.sqrt(np.dot(row, row)))
            else:  # scale first so that the sum of squares cannot overflow
                unit = row / row.dtype.type(largest)
                norms[position] = largest * float(np.sqrt(np.dot(unit, unit)))
        return norms

    def cosines(self) -> np.ndarray:
        """Pairwise cosine similarities, float64 ``(n, n)`` in ``[-1, 1]``; 0 with an all-zero row."""
        gram, _ = self._scaled()
        unit_norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
        outer = np.outer(unit_norms, unit_norms)
        cos = np.divide(gram, outer, out=np.zeros_like(outer), where=outer > 0)
        np.clip(cos, -1.0, 1.0, out=cos)
        np.fill_diagonal(cos, np.where(unit_norms > 0, 1.0, 0.0))
        return cos

    def cosine_distances(self) -> np.ndarray:
        """``1 − cos`` pairwise, float64 ``(n, n)`` in ``[0, 2]`` with a zero diagonal."""
        distances = 1.0 - self.cosines()
        np.clip(distances, 0.0, 2.0, out=distances)
        np.fill_diagonal(distances, 0.0)
        return distances

    def squared_distances(self) -> np.ndarray:
        """``‖x_i − x_j‖²`` pairwise, float64 ``(n, n)`` (from the Gram matrix; clipped at 0)."""
        gram = self.gram()
        diagonal = np.diag(gram)
        squared = diagonal[:, np.newaxis] + diagonal[np.newaxis, :] - 2.0 * gram
        np.maximum(squared, 0.0, out=squared)
        np.fill_diagonal(squared, 0.0)
        return squared

    # ------------------------------------------------------------------ n × d products
    def dot(self, vector: np.ndarray) -> np.ndarray:
        """``X v`` for the selected rows, float64 ``(n,)`` (one float32 matrix–vector product)."""
        values = self._shared.rows @ np.asarray(vector, dtype=self._shared.rows.dtype)
        return np.asarray(values[self.index], dtype=np.float64)

    def combine(self, weights: np.ndarray) -> np.ndarray:
        """``Σ_i w_i x_i`` over the selected rows, ``(d,)`` in the rows' precision."""
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.n,):
            raise ValueError(f"weights must hold one weight per row ({self.n}), got shape {w.shape}")
        dtype = self._shared.rows.dtype
        full = np.zeros(self._shared.rows.shape[0], dtype=dtype)
        np.add.at(full, self.index, w.astype(dtype))
        return np.asarray(full @ self._shared.rows)


def as_update_matrix(
    updates: np.ndarray | UpdateMatrix | Sequence[np.ndarray], *, name: str = "updates"
) -> UpdateMatrix:
    """``updates`` as an :class:`UpdateMatrix` (an ``(n, d)`` array is checked and converted to float32).

    Raises
    ------
    ValueError
        Naming ``name`` if the array is not 2-D with at least one row and column, or holds NaN/Inf.
    """
    if isinstance(updates, UpdateMatrix):
        return updates
    try:
        array = np.asarray(updates, dtype=np.float64 if not isinstance(updates, np.ndarray) else None)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a 2-D float array (n_clients, d), got {error}") from error
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a 2-D float array (n_clients, d), got dtype {array.dtype}")
    try:
        return UpdateMatrix(array)
    except ValueError as error:
        raise ValueError(str(error).replace("updates", name, 1)) from None


def gram_checked(
    array: np.ndarray | UpdateMatrix | Sequence[np.ndarray], *, name: str = "updates"
) -> UpdateMatrix:
    """``array`` as an :class:`UpdateMatrix` whose finiteness is read off its Gram matrix (computed here).

    For defenses that need ``X Xᵀ`` anyway: a row holds NaN or Inf exactly when its diagonal entry
    of the Gram matrix is not finite (the product is redone on rows scaled by their largest absolute
    value when it overflows, which keeps finite rows finite and leaves NaN in the others), so the
    separate O(n·d) ``isfinite`` pass of :func:`as_update_matrix` is skipped.  Arrays that are not
    2-D, C-ordered float32/float64 with a row and a column go through :func:`as_update_matrix`.

    Raises
    ------
    ValueError
        Naming ``name`` and the rows if some row holds NaN or Inf (or as :func:`as_update_matrix`).
    """
    if not (
        isinstance(array, np.ndarray)
        and array.ndim == 2
        and array.dtype in (np.float32, np.float64)
        and array.flags.c_contiguous
        and min(array.shape) >= 1
    ):
        return as_update_matrix(array, name=name)
    matrix = UpdateMatrix(array, checked=True)
    gram, _ = matrix._shared.scaled_gram()
    bad = np.flatnonzero(~np.isfinite(np.diag(gram)))
    if bad.size:
        raise ValueError(f"{name} has non-finite values (NaN/Inf) in rows {bad.tolist()}")
    return matrix
