"""Server-side update selection of the layered backdoor defense.

Implements the server layer of "A layered defense framework for edge-computing
intelligent services" (the layered backdoor-defense paper): before averaging,
the server

1. drops every client update whose cosine similarity to the previous global
   update is negative (the paper's "ReLU" step: an update pulling against the
   direction the federation is moving in is discarded), and
2. clusters the remaining updates with HDBSCAN on pairwise cosine distances
   and keeps only the largest (majority) cluster.

:func:`hdbscan_majority` is also the filtering step of FLAME (see
:mod:`fedsec.defenses.flame`).  Updates are 2-D float arrays ``(n_clients, d)``
of flattened update vectors (client weights minus global weights).  Every
function copies its inputs and never mutates them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import HDBSCAN

from fedsec.updates import UpdateMatrix, as_update_matrix

__all__ = [
    "STEP1_STATUSES",
    "Selection",
    "cosine_to_reference",
    "hdbscan_majority",
    "layered_selection",
    "median_norm_clip",
    "pairwise_cosine_distances",
]

logger = logging.getLogger(__name__)


def _check_updates(name: str, updates: np.ndarray) -> np.ndarray:
    """Return ``updates`` as a read-only float64 ``(n, d)`` array, validating shape and values.

    A float64 array is not copied (at 200 clients of the CNN a copy is 2.7 GB):
    the result is a read-only view of it, so no function here can write to the
    caller's updates.

    Raises
    ------
    ValueError
        Naming ``name`` if the array is not 2-D, has no rows or no columns, or
        holds NaN/Inf.
    """
    try:
        array = np.asarray(updates, dtype=np.float64).view()
        array.setflags(write=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a 2-D float array (n_clients, d), got {error}") from error
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_clients, d), got shape {array.shape}")
    if array.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one update, got shape {array.shape}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} must have at least one coordinate per update, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = sorted({int(i) for i in np.nonzero(~np.isfinite(array))[0]})
        raise ValueError(f"{name} has non-finite values (NaN/Inf) in rows {bad}")
    return array


def _check_vector(name: str, vector: np.ndarray, d: int) -> np.ndarray:
    """Return ``vector`` as a new float64 1-D array of length ``d`` with finite values."""
    try:
        array = np.array(vector, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a 1-D float array of length {d}, got {error}") from error
    if array.shape != (d,):
        raise ValueError(f"{name} must be a 1-D array of length {d}, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has non-finite values (NaN/Inf)")
    return array


def _unit_rows(array: np.ndarray) -> np.ndarray:
    """Rows of ``array`` scaled to unit L2 norm, as a new array; all-zero rows stay zero.

    Each row is first divided by its largest absolute entry so that the norm
    cannot overflow for very large (but finite) values.  One ``(n, d)``
    temporary at most: the result is computed in place.
    """
    scale = np.maximum(array.max(axis=1), -array.min(axis=1))[:, np.newaxis]
    unit = array / np.where(scale > 0, scale, 1.0)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit /= np.where(norms > 0, norms, 1.0)
    return unit


def cosine_to_reference(updates: np.ndarray | UpdateMatrix, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of every update with a reference vector.

    Parameters
    ----------
    updates
        Array ``(n, d)`` of flattened update vectors.
    reference
        Vector ``(d,)``, e.g. the previous global update.

    Returns
    -------
    numpy.ndarray
        Float64 array ``(n,)`` with ``cos(updates[i], reference)`` in
        ``[-1, 1]``; 0 where the update's or the reference's norm is 0.

    Raises
    ------
    ValueError
        If ``updates`` is not a finite 2-D array with at least one row, or
        ``reference`` is not a finite vector of length ``d`` (naming it).
    """
    matrix = as_update_matrix(updates)
    ref = _check_vector("reference", reference, matrix.d)
    scale = float(np.max(np.abs(ref)))
    unit_ref = ref / scale if scale > 0 else ref
    ref_norm = float(np.linalg.norm(unit_ref))
    if ref_norm == 0:
        return np.zeros(matrix.n, dtype=np.float64)
    norms = matrix.norms()
    dots = matrix.dot(unit_ref / ref_norm)
    cosines = np.divide(dots, norms, out=np.zeros(matrix.n, dtype=np.float64), where=norms > 0)
    return np.clip(cosines, -1.0, 1.0)


def pairwise_cosine_distances(updates: np.ndarray | UpdateMatrix) -> np.ndarray:
    """Cosine distances ``1 - cos(u_i, u_j)`` between all pairs of updates.

    Parameters
    ----------
    updates
        Array ``(n, d)`` of flattened update vectors.

    Returns
    -------
    numpy.ndarray
        Float64 array ``(n, n)``: symmetric, zero on the diagonal and clipped
        to ``[0, 2]`` (orthogonal updates are at distance 1, opposite ones at
        2).  An all-zero update has cosine 0, hence distance 1, to every other
        update.

    Raises
    ------
    ValueError
        If ``updates`` is not a finite 2-D array with at least one row.
    """
    distances = as_update_matrix(updates).cosine_distances()
    return 0.5 * (distances + distances.T)


def median_norm_clip(updates: np.ndarray | UpdateMatrix) -> tuple[float, np.ndarray]:
    """FLAME's adaptive clipping bound and the factor that clips each update to it.

    Parameters
    ----------
    updates
        Array ``(n, d)`` of flattened update vectors.

    Returns
    -------
    tuple of (float, numpy.ndarray)
        ``S``, the median L2 norm of all ``n`` updates, and the float64 factors
        ``min(1, S / ||u_i||)`` (1 for updates within the bound, including
        all-zero ones): ``factors[i] * updates[i]`` has norm at most ``S``.

    Raises
    ------
    ValueError
        If ``updates`` is not a finite 2-D array with at least one row.
    """
    norms = as_update_matrix(updates).norms()
    bound = float(np.median(norms))
    factors = np.ones_like(norms)
    np.divide(bound, norms, out=factors, where=norms > bound)
    return bound, factors


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` naming ``name`` if it is not an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def hdbscan_majority(
    updates: np.ndarray | UpdateMatrix, *, min_cluster_size: int | None = None, min_samples: int | None = 1
) -> np.ndarray:
    """Indices of the updates in the largest HDBSCAN cluster on cosine distances.

    Runs ``sklearn.cluster.HDBSCAN(metric="precomputed",
    min_cluster_size=min_cluster_size or n // 2 + 1, min_samples=min_samples,
    allow_single_cluster=True)`` on :func:`pairwise_cosine_distances` and keeps
    the largest cluster; noise points (label -1) and smaller clusters are
    dropped.  With the default ``min_cluster_size`` a cluster must hold a
    strict majority of the updates, as in FLAME and the layered defense.

    Parameters
    ----------
    updates
        Array ``(n, d)`` of flattened update vectors.
    min_cluster_size
        Smallest group HDBSCAN calls a cluster, an integer in ``[2, n]``;
        ``None`` means ``n // 2 + 1``.  The upper bound is only checked when
        clustering runs (``n >= 3``).
    min_samples
        HDBSCAN's ``min_samples`` (the ``k`` of the core distance), an integer
        in ``[1, n]`` (upper bound checked when clustering runs); ``None``
        means ``min_cluster_size`` (scikit-learn's default).  With 1 (FLAME's
        setting) the clustering is single linkage: an update is admitted
        through its one nearest neighbour.  With ``min_cluster_size`` each
        update's distance counts as at least its distance to its
        ``min_cluster_size``-th nearest neighbour.

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices of the kept updates.  Ties between equally large
        clusters go to the cluster containing the lowest index.  If HDBSCAN
        labels every update as noise, all indices are kept and a warning is
        logged (there is no majority to trust, so nothing is filtered).

    Notes
    -----
    Fewer than three updates are all kept without clustering: one update is
    trivially its own majority, and with two updates neither can outvote the
    other, so there is no basis for calling one of them an outlier.

    The result is deterministic: HDBSCAN has no random component and the
    distance matrix is a pure function of ``updates``, so the same updates
    (in the same order) always give the same indices.  Reordering the clients
    can only matter for exact ties in distances.

    Raises
    ------
    ValueError
        If ``updates`` is not a finite 2-D array with at least one row, or
        ``min_cluster_size`` / ``min_samples`` is out of range (naming it).
    """
    rows = as_update_matrix(updates)
    n = rows.n
    if min_cluster_size is not None:
        _check_int("min_cluster_size", min_cluster_size, 2)
    if min_samples is not None:
        _check_int("min_samples", min_samples, 1)
    if n < 3:
        return np.arange(n, dtype=np.int64)

    size = n // 2 + 1 if min_cluster_size is None else int(min_cluster_size)
    if size > n:
        raise ValueError(f"min_cluster_size must be at most the number of updates ({n}), got {size}")
    if min_samples is None:
        min_samples = size
    if min_samples > n:
        raise ValueError(f"min_samples must be at most the number of updates ({n}), got {min_samples}")

    distances = pairwise_cosine_distances(rows)
    clusterer = HDBSCAN(
        metric="precomputed",
        min_cluster_size=size,
        min_samples=int(min_samples),
        allow_single_cluster=True,
        copy=True,
    )
    labels = np.asarray(clusterer.fit_predict(distances))
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        logger.warning(
            "HDBSCAN labelled all %s updates as noise (min_cluster_size=%s); keeping all of them", n, size
        )
        return np.arange(n, dtype=np.int64)

    cluster_ids, counts = np.unique(clustered, return_counts=True)
    first_index = np.array([int(np.argmax(labels == c)) for c in cluster_ids])
    # largest count first, then the cluster whose first member has the lowest index
    best = min(range(len(cluster_ids)), key=lambda k: (-int(counts[k]), int(first_index[k])))
    kept = np.flatnonzero(labels == cluster_ids[best]).astype(np.int64)
    logger.debug("HDBSCAN majority: kept %s of %s updates (clusters %s)", kept.size, n, counts.tolist())
    return kept


#: What step 1 of :func:`layered_selection` did in a round (see :attr:`Selection.step1`).
STEP1_STATUSES = ("applied", "skipped-stale", "no-reference", "off")


@dataclass(frozen=True)
class Selection:
    """Outcome of a selection step: kept indices and the reason each dropped one was dropped.

    Attributes
    ----------
    kept
        Sorted indices (into the round's updates) of the kept updates.
    dropped
        ``index -> reason`` for every dropped update, e.g. ``"cosine -0.31 to
        the previous global update"`` or ``"outside the HDBSCAN majority
        cluster"``.
    cosines
        Cosine of every update to the previous global update, or ``None`` when
        no non-zero reference was given (not compared by ``==``).
    step1
        What step 1 (the negative-cosine drop) did this round: one of
        :data:`STEP1_STATUSES` — ``"applied"`` (it ran and dropped the negative
        updates, possibly none), ``"skipped-stale"`` (more than half of the
        updates were negative, so the reference was taken as stale and nothing
        was dropped), ``"no-reference"`` (no non-zero previous global update,
        e.g. round 1) or ``"off"`` (``drop_negative=False``).
    negative
        How many updates had a negative cosine to the previous global update
        (``None`` when there was no reference to compare with).
    """

    kept: tuple[int, ...]
    dropped: dict[int, str]
    cosines: np.ndarray | None = field(default=None, compare=False)
    step1: str = "off"
    negative: int | None = None

    def __post_init__(self) -> None:
        kept = tuple(int(i) for i in self.kept)
        if list(kept) != sorted(set(kept)):
            raise ValueError(f"kept must hold sorted, distinct indices, got {kept}")
        dropped = {int(i): str(reason) for i, reason in self.dropped.items()}
        overlap = sorted(set(kept) & set(dropped))
        if overlap:
            raise ValueError(f"dropped must not contain kept indices, both hold {overlap}")
        if self.step1 not in STEP1_STATUSES:
            raise ValueError(f"step1 must be one of {STEP1_STATUSES}, got {self.step1!r}")
        if self.negative is not None and (isinstance(self.negative, bool) or int(self.negative) < 0):
            raise ValueError(f"negative must be None or a count >= 0, got {self.negative!r}")
        object.__setattr__(self, "kept", kept)
        object.__setattr__(self, "dropped", dropped)


def layered_selection(
    updates: np.ndarray | UpdateMatrix,
    *,
    previous_global_update: np.ndarray | None,
    drop_negative: bool = True,
    cluster: bool = True,
    min_cluster_size: int | None = None,
    min_samples: int | None = None,
) -> Selection:
    """The layered defense's server selection: negative-cosine drop, then HDBSCAN majority.

    Step 1 ("ReLU" step; runs if ``drop_negative`` and ``previous_global_update``
    is given and not all zero): updates whose cosine similarity to the previous
    global update is below 0 are dropped — unless they are the majority, in which
    case the reference is stale and the step is skipped for the round (dropping
    them all would keep the model, and so the reference, unchanged for good).
    :attr:`Selection.step1` and :attr:`Selection.negative` say which of these
    happened and how many updates were negative, so the records show it.  Step 2
    (runs if ``cluster``): :func:`hdbscan_majority` over the updates that
    survived step 1; its indices are mapped back to positions in ``updates``.

    Parameters
    ----------
    updates
        Array ``(n, d)`` of this round's flattened client updates.
    previous_global_update
        The previous round's global update ``(d,)`` (new minus old global
        weights), or ``None`` in the first round (step 1 is then skipped).
    drop_negative
        Whether to run step 1.
    cluster
        Whether to run step 2.
    min_cluster_size
        Passed to :func:`hdbscan_majority`; ``None`` means a strict majority
        of the updates that survived step 1.  A value larger than the number
        of survivors is lowered to that number (and logged), so that a fixed
        setting cannot fail a round in which step 1 dropped many updates.
    min_samples
        Passed to :func:`hdbscan_majority`; ``None`` (default) means the
        cluster size, scikit-learn's default.  A value larger than the number
        of survivors is lowered to that number.

    Returns
    -------
    Selection
        Kept indices and, for each dropped update, a reason naming the step;
        what step 1 did (``step1``) and the number of negative cosines.
        If step 1 drops every update, nothing is kept (and a warning is
        logged).

    Raises
    ------
    ValueError
        If ``updates`` or ``previous_global_update`` is malformed, a flag is
        not a bool, or ``min_cluster_size`` is not an integer >= 2 (naming it).
    """
    rows = as_update_matrix(updates)
    n, d = rows.n, rows.d
    for name, flag in (("drop_negative", drop_negative), ("cluster", cluster)):
        if not isinstance(flag, bool | np.bool_):
            raise ValueError(f"{name} must be a bool, got {flag!r}")
    if min_cluster_size is not None:
        _check_int("min_cluster_size", min_cluster_size, 2)
    if min_samples is not None:
        _check_int("min_samples", min_samples, 1)
    reference = (
        None
        if previous_global_update is None
        else _check_vector("previous_global_update", previous_global_update, d)
    )

    dropped: dict[int, str] = {}
    remaining = np.arange(n, dtype=np.int64)

    cosines = None
    if reference is not None and np.any(reference != 0):
        cosines = cosine_to_reference(rows, reference)
    negative_count = None if cosines is None else int(np.sum(cosines < 0))
    step1 = "off" if not drop_negative else ("no-reference" if cosines is None else "applied")
    if drop_negative and reference is not None:
        if cosines is not None:
            negative = cosines < 0
            if negative.sum() * 2 > n:
                step1 = "skipped-stale"
                # The step assumes the benign majority follows the last global update; when most
                # updates oppose it the reference is stale (late, noisy rounds), and dropping them
                # all would freeze the model for good (the reference then never changes).
                logger.warning(
                    "%s of %s updates have a negative cosine to the previous global update; "
                    "the reference is stale, skipping step 1 this round",
                    int(negative.sum()),
                    n,
                )
                negative = np.zeros(n, dtype=bool)
            for index in np.flatnonzero(negative):
                dropped[int(index)] = (
                    f"cosine {cosines[index]:.2f} to the previous global update is negative "
                    "(layered defense, step 1: ReLU)"
                )
            remaining = np.flatnonzero(~negative).astype(np.int64)
        else:
            logger.debug("previous_global_update is all zeros; skipping the negative-cosine step")

    if remaining.size == 0:
        logger.warning("all %s updates have a negative cosine to the previous global update", n)
        return Selection(kept=(), dropped=dropped, cosines=cosines, step1=step1, negative=negative_count)

    if cluster:
        size = min_cluster_size
        if size is not None and remaining.size >= 3 and size > remaining.size:
            logger.info(
                "min_cluster_size %s exceeds the %s updates left after step 1; using %s",
                size,
                remaining.size,
                remaining.size,
            )
            size = int(remaining.size)
        k = min_samples if min_samples is None else min(int(min_samples), int(remaining.size))
        local = hdbscan_majority(rows.take(remaining), min_cluster_size=size, min_samples=k)
        majority = set(remaining[local].tolist())
        for position in remaining.tolist():
            if position not in majority:
                dropped[int(position)] = "outside the HDBSCAN majority cluster (layered defense, step 2)"
        remaining = np.array(sorted(majority), dtype=np.int64)

    return Selection(
        kept=tuple(int(i) for i in remaining),
        dropped=dropped,
        cosines=cosines,
        step1=step1,
        negative=negative_count,
    )
