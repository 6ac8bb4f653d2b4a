"""FoolsGold client weights against sybil poisoning.

Implements Algorithm 1 of Fung, Yoon and Beschastnikh, "The Limitations of
Federated Learning in Sybil Settings" (RAID 2020).  Sybils that pursue the same
poisoning goal send updates that point the same way round after round, so their
*accumulated* (historical) updates are far more similar to each other than
those of honest clients with diverse data.  FoolsGold gives every client a
learning-rate weight that shrinks with its maximum cosine similarity to any
other client's history:

1. ``cs`` = pairwise cosine similarity of the histories, with the diagonal
   set to 0 (``cos - I``); ``v_i = max_j cs_ij``.
2. Pardoning: if ``v_i < v_j`` then ``cs_ij *= v_i / v_j`` (an honest client
   that merely resembles a sybil is not punished as hard as the sybil).
3. ``wv_i = 1 - max_j cs_ij``, clipped to ``[0, 1]`` and rescaled so that the
   largest weight is 1; weights equal to 1 become 0.99.
4. Logit: ``wv_i = κ (ln(wv_i / (1 - wv_i)) + 0.5)``, clipped to ``[0, 1]``.

Details that follow the authors' reference implementation rather than the text
of Algorithm 1: the diagonal is removed by subtracting the identity (so the
row maximum in steps 1 and 3 is taken including that 0, i.e. ``v_i >= 0``),
the ``1 → 0.99`` replacement before the logit, the ``+ 0.5`` shift inside the
logit, and mapping non-finite logits (``wv = 0``, i.e. ``ln 0``) to weight 0.

:func:`foolsgold_aggregate` averages the round's updates with these weights and
:class:`FoolsGoldHistory` keeps the per-client accumulated updates between
rounds.  Pure numpy; inputs are copied, never mutated.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from fedsec.updates import UpdateMatrix, as_update_matrix, gram_checked

__all__ = ["FoolsGoldHistory", "foolsgold_aggregate", "foolsgold_weights"]

logger = logging.getLogger(__name__)


def foolsgold_weights(
    history: np.ndarray | UpdateMatrix, *, kappa: float = 1.0, eps: float = 1e-5
) -> np.ndarray:
    """FoolsGold weight of every client from its accumulated historical update.

    Parameters
    ----------
    history
        Array ``(n, d)``; ``history[i]`` is client ``i``'s summed updates over
        all rounds it took part in (see :class:`FoolsGoldHistory`).
    kappa
        Confidence parameter ``κ > 0`` of the logit (the paper uses 1).
    eps
        Floor in ``(0, 0.5)`` applied to the rescaled weights before the logit
        so that ``ln 0`` is never evaluated.  Any weight below
        ``1 / (1 + e^0.5) ≈ 0.38`` has a negative logit and ends at 0 anyway,
        so the floor does not change the result.

    Returns
    -------
    numpy.ndarray
        Float64 weights ``(n,)`` in ``[0, 1]``.  A single client gets
        ``[1.0]``.  An all-zero history has cosine 0 to everyone.

    Raises
    ------
    ValueError
        If ``history`` is not a finite 2-D array with at least one row, or
        ``kappa`` / ``eps`` is out of range (naming it).
    """
    rows = gram_checked(history, name="history")  # the cosines below need the Gram matrix anyway
    if not (isinstance(kappa, int | float) and not isinstance(kappa, bool) and math.isfinite(kappa)):
        raise ValueError(f"kappa must be a finite number > 0, got {kappa!r}")
    if kappa <= 0:
        raise ValueError(f"kappa must be a finite number > 0, got {kappa!r}")
    if not (isinstance(eps, int | float) and not isinstance(eps, bool) and 0 < eps < 0.5):
        raise ValueError(f"eps must be a number in (0, 0.5), got {eps!r}")
    n = rows.n
    if n == 1:
        return np.ones(1, dtype=np.float64)

    cs = rows.cosines()
    np.fill_diagonal(cs, 0.0)  # cosine similarity minus the identity
    v = cs.max(axis=1)  # >= 0: the diagonal's 0 takes part

    # pardoning: scale row i's similarity to a more sybil-like client j by v_i / v_j
    pardon = v[:, np.newaxis] < v[np.newaxis, :]
    ratio = np.divide(
        v[:, np.newaxis], v[np.newaxis, :], out=np.ones_like(cs), where=pardon
    )  # v_j > v_i >= 0 wherever pardon holds, so no division by zero
    cs = np.where(pardon, cs * ratio, cs)

    wv = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    top = float(wv.max())
    if top > 0:
        wv = wv / top
    wv[wv == 1.0] = 0.99

    floored = np.maximum(wv, eps)
    logits = float(kappa) * (np.log(floored / (1.0 - floored)) + 0.5)
    logits[wv == 0.0] = 0.0  # ln 0: a weight of exactly 0 stays 0
    logits[~np.isfinite(logits)] = 0.0
    weights = np.clip(logits, 0.0, 1.0)
    logger.debug("FoolsGold weights %s", np.round(weights, 4).tolist())
    return weights


def foolsgold_aggregate(updates: np.ndarray | UpdateMatrix, weights: np.ndarray) -> np.ndarray:
    """Weighted mean ``Σ_i w_i u_i / Σ_i w_i`` of the round's updates.

    Parameters
    ----------
    updates
        Array ``(n, d)`` of this round's flattened client updates.
    weights
        One finite weight ``>= 0`` per update, e.g. from
        :func:`foolsgold_weights`.

    Returns
    -------
    numpy.ndarray
        Float64 vector ``(d,)``.  If the weights sum to 0 (every client looks
        like a sybil) the zero vector is returned and a warning is logged.

    Raises
    ------
    ValueError
        If ``updates`` is malformed or ``weights`` does not hold one finite,
        non-negative weight per update (naming it).
    """
    rows = as_update_matrix(updates)
    try:
        w = np.array(weights, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"weights must be a 1-D float array, got {error}") from error
    if w.shape != (rows.n,):
        raise ValueError(f"weights must hold one weight per update ({rows.n}), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and >= 0, got {w.tolist()}")
    total = float(w.sum())
    if total <= 0:
        logger.warning("FoolsGold weights of all %s updates are zero; returning a zero update", rows.n)
        return np.zeros(rows.d, dtype=np.float64)
    return np.asarray(rows.combine(w / total), dtype=np.float64)


class FoolsGoldHistory:
    """Per-client accumulated updates, keyed by client id.

    Each call to :meth:`update` adds the round's update to the history of the
    client that sent it; a client seen for the first time starts from zero.
    The histories are the rows of one private ``(clients, d)`` matrix in the
    updates' precision, accumulated in place (one pass over the round's updates,
    no per-round copy of every history).
    """

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._rows: np.ndarray | None = None  # (capacity, d); rows [0, len(self)) are in use
        self._dim: int | None = None

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._index

    @property
    def history(self) -> dict[str, np.ndarray]:
        """A copy of ``{client id: accumulated update}``."""
        if self._rows is None:
            return {}
        return {cid: self._rows[i].copy() for cid, i in self._index.items()}

    @classmethod
    def from_history(cls, history: dict[str, np.ndarray]) -> FoolsGoldHistory:
        """A history holding copies of ``{client id: accumulated update}`` (e.g. from a checkpoint)."""
        restored = cls()
        rows = [np.asarray(row).reshape(-1) for row in history.values()]
        if rows:
            restored._rows = np.array(np.stack(rows), copy=True)
            restored._dim = int(restored._rows.shape[1])
            restored._index = {str(cid): i for i, cid in enumerate(history)}
        return restored

    def _grow(self, new: int, dim: int, dtype: np.dtype) -> None:
        """Room for ``new`` more clients (capacity doubles, so growth is amortised)."""
        used = len(self._index)
        capacity = 0 if self._rows is None else self._rows.shape[0]
        if used + new <= capacity:
            return
        grown = np.zeros(
            (max(used + new, 2 * capacity), dim), dtype=dtype if self._rows is None else self._rows.dtype
        )
        if self._rows is not None and used:
            grown[:used] = self._rows[:used]
        self._rows = grown

    def update(self, ids: Sequence[str], updates: np.ndarray | UpdateMatrix) -> np.ndarray:
        """Add this round's updates to the clients' histories and return their history rows.

        Parameters
        ----------
        ids
            One distinct client id (a string) per row of ``updates``.
        updates
            Array ``(n, d)`` of this round's flattened updates; ``d`` must match
            the earlier rounds.

        Returns
        -------
        numpy.ndarray
            Array ``(n, d)`` in the history's precision (the first updates'): the
            accumulated history of ``ids[i]`` (this round included) in row ``i``.
            A read-only view of the history when ``ids`` are stored rows in
            order (every round of a fixed federation), else a new array; valid
            until the next :meth:`update`.

        Raises
        ------
        ValueError
            If an id is not a string or is repeated, the number of ids differs
            from the number of updates, or ``updates`` is malformed or its
            dimension differs from earlier rounds (naming the parameter).
            Nothing is recorded when an error is raised.
        """
        matrix = as_update_matrix(updates)
        rows = matrix.array()
        if isinstance(ids, str):
            raise ValueError(f"ids must be a sequence of client id strings, got the string {ids!r}")
        id_list = list(ids)
        if len(id_list) != rows.shape[0]:
            raise ValueError(f"ids must hold one id per update ({rows.shape[0]}), got {len(id_list)}")
        for cid in id_list:
            if not isinstance(cid, str):
                raise ValueError(f"ids must be strings, got {cid!r}")
        if len(set(id_list)) != len(id_list):
            duplicates = sorted({cid for cid in id_list if id_list.count(cid) > 1})
            raise ValueError(f"ids must be distinct, repeated: {duplicates}")
        if self._dim is not None and rows.shape[1] != self._dim:
            raise ValueError(
                f"updates must have {self._dim} coordinates like earlier rounds, got {rows.shape[1]}"
            )

        self._dim = rows.shape[1]
        new = [cid for cid in id_list if cid not in self._index]
        self._grow(len(new), rows.shape[1], rows.dtype)
        assert self._rows is not None
        for cid in new:
            self._index[cid] = len(self._index)  # a new client's history starts at zero
        positions = [self._index[cid] for cid in id_list]
        for row, position in zip(rows, positions, strict=True):
            self._rows[position] += row  # in place, no temporary
        first = positions[0]
        if positions == list(range(first, first + len(positions))):
            view = self._rows[
                first : first + len(positions)
            ].view()  # the usual case: same clients, same order
            view.flags.writeable = False
            return view
        return self._rows[positions]  # a copy, in the caller's order
