"""FLAME: HDBSCAN filtering, median-norm clipping and Gaussian noise.

Implements the aggregation of Nguyen et al., "FLAME: Taming Backdoors in
Federated Learning" (USENIX Security 2022):

1. Filtering: HDBSCAN on the pairwise cosine distances of the updates with
   ``min_cluster_size = n // 2 + 1`` (and ``min_samples = 1``); only the
   majority cluster is admitted (:func:`fedsec.defenses.selection.hdbscan_majority`).
2. Clipping: ``S_t`` is the median of the L2 norms of *all* ``n`` updates
   (the distances of the local models to the global model); every admitted
   update is scaled by ``min(1, S_t / ||u||)``.
3. Aggregation: the plain mean of the admitted, clipped updates.
4. Adaptive noise: Gaussian noise with standard deviation ``λ · S_t`` is added
   to every coordinate.  The paper adds it to the new global model
   ``G_t + Δ``; adding it to the aggregated update ``Δ`` is the same thing.

Pure numpy; the noise comes from the caller's ``numpy.random.Generator``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from fedsec.defenses.selection import hdbscan_majority, median_norm_clip
from fedsec.updates import UpdateMatrix, as_update_matrix

__all__ = ["FlameResult", "flame"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FlameResult:
    """Outcome of one FLAME aggregation.

    Compared by identity (``eq=False``): ``==`` on arrays would be ambiguous.

    Attributes
    ----------
    update
        The aggregated update ``(d,)``: mean of the admitted clipped updates
        plus the Gaussian noise.
    kept
        Sorted indices of the admitted updates.
    dropped
        ``index -> reason`` for every update the filtering step rejected.
    clip_norm
        The clipping bound ``S_t`` (median L2 norm of all updates).
    noise_std
        Standard deviation ``λ · S_t`` of the added noise.
    """

    update: np.ndarray
    kept: tuple[int, ...]
    dropped: dict[int, str]
    clip_norm: float
    noise_std: float


def flame(
    updates: np.ndarray | UpdateMatrix,
    *,
    noise_lambda: float = 0.001,
    rng: np.random.Generator,
    min_cluster_size: int | None = None,
) -> FlameResult:
    """Aggregate one round's updates with FLAME.

    Parameters
    ----------
    updates
        Array ``(n, d)`` of flattened client updates (client minus global
        weights).
    noise_lambda
        Noise level ``λ >= 0``; the noise standard deviation is ``λ · S_t``
        (the paper uses 0.001 for image classification).  0 disables noise.
    rng
        Source of the noise.  It is only drawn from (``d`` normal samples)
        when the noise standard deviation is positive, so the same generator
        state and the same updates always give the same result.
    min_cluster_size
        HDBSCAN's ``min_cluster_size``; ``None`` means ``n // 2 + 1``.  See
        :func:`fedsec.defenses.selection.hdbscan_majority` (which also explains
        why fewer than three updates are all admitted).

    Returns
    -------
    FlameResult
        The noised aggregate, the admitted and rejected indices, ``S_t`` and
        the noise standard deviation.

    Notes
    -----
    With a single benign cluster, HDBSCAN's ``allow_single_cluster`` labelling
    admits only the updates that stay in the cluster until it dissolves (about
    ``min_cluster_size`` of them) and rejects the rest as noise, benign or not,
    as in the authors' implementation.

    Raises
    ------
    ValueError
        If ``updates`` is malformed, ``noise_lambda`` is negative or not
        finite, ``rng`` is not a ``numpy.random.Generator``, or
        ``min_cluster_size`` is out of range (naming it).
    """
    rows = as_update_matrix(updates)
    if not (
        isinstance(noise_lambda, int | float)
        and not isinstance(noise_lambda, bool)
        and math.isfinite(noise_lambda)
        and noise_lambda >= 0
    ):
        raise ValueError(f"noise_lambda must be a finite number >= 0, got {noise_lambda!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n, d = rows.n, rows.d

    kept = hdbscan_majority(rows, min_cluster_size=min_cluster_size, min_samples=1)
    kept_set = set(kept.tolist())
    dropped = {
        i: "outside the HDBSCAN majority cluster (FLAME filtering)" for i in range(n) if i not in kept_set
    }

    clip_norm, all_factors = median_norm_clip(rows)
    factors = all_factors[kept]
    weights = np.zeros(n, dtype=np.float64)
    weights[kept] = factors / kept.size  # the mean of the clipped admitted updates, as one product
    aggregate = rows.combine(weights).astype(np.float64)

    noise_std = float(noise_lambda) * clip_norm
    if noise_std > 0:
        aggregate = aggregate + rng.normal(0.0, noise_std, size=d)
    logger.debug(
        "FLAME: kept %s of %s updates, S_t=%.6g, %s clipped, noise std %.6g",
        kept.size,
        n,
        clip_norm,
        int(np.sum(factors < 1)),
        noise_std,
    )
    return FlameResult(
        update=np.asarray(aggregate, dtype=np.float64),
        kept=tuple(int(i) for i in kept),
        dropped=dropped,
        clip_norm=clip_norm,
        noise_std=noise_std,
    )
