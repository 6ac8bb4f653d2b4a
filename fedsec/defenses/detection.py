"""Server-side detectors of poisoned updates: accuracy, L2-norm and cosine checks.

Implements the three checks Chen et al. ("Towards multi-party targeted model
poisoning attacks against federated learning systems", High-Confidence
Computing 2021) evaluate their stealthy colluders against, following Bhagoji
et al. ("Analyzing federated learning through an adversarial lens", ICML 2019):

accuracy checking
    the validation accuracy of ``w + δ_i`` against that of ``w + δ_{all but i}``
    (the FedAvg of the others); flag client ``i`` when it is lower by more than γ;
L2-norm checking
    ``‖δ_i‖`` against the round's median update norm (a scale-free ratio, so a
    threshold calibrated in early rounds still means something later, when all
    updates are smaller); flag when the ratio exceeds a threshold;
cosine-similarity checking
    ``cos(δ_i, Σ_{j≠i} δ_j)`` against the round's median of that cosine; flag
    when it falls short of the median by more than a threshold (benign
    cosines shrink as training converges, so an absolute threshold calibrated
    early would flag every benign client later, while the gap stays put).

Thresholds come from the run config or are calibrated on the statistics of
the first (attack-free) rounds: the largest benign ratio, accuracy drop and
cosine gap seen, widened by a margin.  Everything here is numpy on
flattened update vectors ``(n_clients, d)``; the Flower wrapper is
:mod:`strategies.detection`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedsec.updates import UpdateMatrix, as_update_matrix

logger = logging.getLogger(__name__)

DETECTORS = ("accuracy", "l2", "cosine")


def as_matrix(
    updates: Sequence[np.ndarray] | np.ndarray | UpdateMatrix, *, name: str = "updates"
) -> UpdateMatrix:
    """``updates`` as an :class:`~fedsec.updates.UpdateMatrix`; ValueError unless 2-D, non-empty, finite."""
    if isinstance(updates, UpdateMatrix):
        return updates
    array = np.asarray(updates, dtype=None if isinstance(updates, np.ndarray) else np.float64)
    if array.ndim != 2 or array.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty (n_clients, d) array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return as_update_matrix(array, name=name)


def cosine_to_others(updates: Sequence[np.ndarray] | np.ndarray | UpdateMatrix) -> np.ndarray:
    """``cos(δ_i, Σ_{j≠i} δ_j)`` for every client (0 when either vector is zero or ``n == 1``).

    From the Gram matrix alone: ``δ_i · Σ_{j≠i} δ_j = Σ_j G_ij − G_ii`` and
    ``‖Σ_{j≠i} δ_j‖² = Σ_jk G_jk − 2 Σ_j G_ij + G_ii``.
    """
    gram = as_matrix(updates).gram()
    row_sums = gram.sum(axis=1)
    diagonal = np.diag(gram)
    dots = row_sums - diagonal
    others = np.sqrt(np.maximum(gram.sum() - 2.0 * row_sums + diagonal, 0.0))
    norms = np.sqrt(np.maximum(diagonal, 0.0)) * others
    cosines = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return np.clip(cosines, -1.0, 1.0)


def norm_ratios(updates: Sequence[np.ndarray] | np.ndarray | UpdateMatrix) -> np.ndarray:
    """``‖δ_i‖ / median_j ‖δ_j‖`` (all ones when the median norm is zero)."""
    norms = as_matrix(updates).norms()
    median = float(np.median(norms))
    if median == 0.0:
        return np.ones_like(norms)
    return norms / median


def max_l2_to(
    updates: Sequence[np.ndarray] | np.ndarray | UpdateMatrix, reference: Collection[int]
) -> np.ndarray:
    """For every row, its largest L2 distance to the rows in ``reference`` other than itself (0 if none)."""
    matrix = as_matrix(updates)
    ref = sorted(set(reference))
    if any(not 0 <= i < matrix.n for i in ref):
        raise ValueError(f"reference indices must be in [0, {matrix.n}), got {ref}")
    out = np.zeros(matrix.n)
    if not ref:
        return out
    # ‖a − b‖² from the Gram matrix: no (n, d) temporaries
    distances = matrix.squared_distances()[:, ref]
    distances[ref, np.arange(len(ref))] = -np.inf  # a row is not compared with itself
    best = distances.max(axis=1)
    np.sqrt(best, out=out, where=np.isfinite(best))
    return out


@dataclass(frozen=True)
class Thresholds:
    """Detector thresholds; ``None`` means the detector is not ready (not yet calibrated).

    Attributes
    ----------
    accuracy_gamma
        Flag when ``acc(w+δ_others) − acc(w+δ_i) > accuracy_gamma``.
    l2_ratio
        Flag when ``‖δ_i‖ / median ‖δ‖ > l2_ratio``.
    cosine_gap
        Flag when ``median_j cos_j − cos_i > cosine_gap`` (``cos_i = cos(δ_i, Σ others)``).
    """

    accuracy_gamma: float | None = None
    l2_ratio: float | None = None
    cosine_gap: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {"accuracy": self.accuracy_gamma, "l2": self.l2_ratio, "cosine": self.cosine_gap}


@dataclass(frozen=True)
class RoundStatistics:
    """One round's per-client statistics (arrays aligned with the round's clients)."""

    cosine: np.ndarray
    l2_ratio: np.ndarray
    accuracy_drop: np.ndarray | None = None

    @property
    def cosine_gap(self) -> np.ndarray:
        """``median(cos) − cos_i``: how far each client falls below the round's typical cosine."""
        return float(np.median(self.cosine)) - self.cosine


def parse_detectors(text: str) -> tuple[str, ...]:
    """``"accuracy,l2"`` → ``("accuracy", "l2")``; ValueError naming the unknown detector."""
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector {unknown[0]!r}; choose from: {', '.join(DETECTORS)}")
    return names


def calibrate(
    history: Iterable[RoundStatistics], *, margin: float, fixed: Thresholds | None = None
) -> Thresholds:
    """Thresholds from benign rounds: the largest L2 ratio, accuracy drop and cosine gap, widened.

    ``margin`` widens each by that fraction of its magnitude (at least by
    ``margin`` × 0.01 for a zero value); thresholds already set in ``fixed`` are kept.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    rounds = list(history)
    fixed = fixed or Thresholds()
    if not rounds:
        return fixed

    def widen(value: float) -> float:
        return value + margin * max(abs(value), 0.01)

    gaps = np.concatenate([r.cosine_gap for r in rounds])
    ratio = np.concatenate([r.l2_ratio for r in rounds])
    drops = [r.accuracy_drop for r in rounds if r.accuracy_drop is not None]
    return Thresholds(
        accuracy_gamma=fixed.accuracy_gamma
        if fixed.accuracy_gamma is not None
        else (widen(max(0.0, float(np.max(np.concatenate(drops))))) if drops else None),
        l2_ratio=fixed.l2_ratio if fixed.l2_ratio is not None else widen(float(np.max(ratio))),
        cosine_gap=fixed.cosine_gap if fixed.cosine_gap is not None else widen(max(0.0, float(np.max(gaps)))),
    )


def flag(
    stats: RoundStatistics, thresholds: Thresholds, detectors: Sequence[str]
) -> dict[int, dict[str, str]]:
    """``{client index: {detector: reason}}`` for every client at least one enabled detector flags."""
    flagged: dict[int, dict[str, str]] = {}
    gaps = stats.cosine_gap
    for i in range(len(stats.cosine)):
        reasons: dict[str, str] = {}
        if "cosine" in detectors and thresholds.cosine_gap is not None and gaps[i] > thresholds.cosine_gap:
            reasons["cosine"] = (
                f"cosine {stats.cosine[i]:.3f} to the others is {gaps[i]:.3f} below the round's median "
                f"(> {thresholds.cosine_gap:.3f})"
            )
        if "l2" in detectors and thresholds.l2_ratio is not None and stats.l2_ratio[i] > thresholds.l2_ratio:
            reasons["l2"] = f"L2 norm {stats.l2_ratio[i]:.2f}× the median > {thresholds.l2_ratio:.2f}×"
        if (
            "accuracy" in detectors
            and thresholds.accuracy_gamma is not None
            and stats.accuracy_drop is not None
            and stats.accuracy_drop[i] > thresholds.accuracy_gamma
        ):
            reasons["accuracy"] = (
                f"validation accuracy {stats.accuracy_drop[i]:.3f} below the others' "
                f"> γ={thresholds.accuracy_gamma:.3f}"
            )
        if reasons:
            flagged[i] = reasons
    return flagged


def confusion(flagged: Collection[str], malicious: Collection[str], clients: Iterable[str]) -> dict[str, int]:
    """Detection counts ``tp``/``fp``/``fn``/``tn`` of ``flagged`` against the ground truth ``malicious``."""
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    flagged_set, malicious_set = set(flagged), set(malicious)
    for client in clients:
        is_flagged, is_malicious = client in flagged_set, client in malicious_set
        key = ("tp" if is_malicious else "fp") if is_flagged else ("fn" if is_malicious else "tn")
        counts[key] += 1
    return counts


def detection_rates(counts: Mapping[str, int]) -> dict[str, float | None]:
    """Recall (TP / (TP + FN)) and false-positive rate (FP / (FP + TN)); ``None`` when undefined."""
    positives = counts.get("tp", 0) + counts.get("fn", 0)
    negatives = counts.get("fp", 0) + counts.get("tn", 0)
    return {
        "recall": counts.get("tp", 0) / positives if positives else None,
        "false_positive_rate": counts.get("fp", 0) / negatives if negatives else None,
    }
