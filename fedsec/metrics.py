"""Classification and robustness metrics for run records.

Precision, recall and F1 come from scikit-learn (macro averages, as DiPSeN's
paper reports them); robust accuracy is accuracy on adversarial examples made
white-box against the model being judged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support


def classification_scores(predictions: np.ndarray, labels: np.ndarray, *, num_classes: int) -> dict[str, Any]:
    """``accuracy``, macro ``precision``/``recall``/``f1`` and ``support`` (number of examples)."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ValueError(
            f"predictions and labels must be 1-D of one length, got {predictions.shape}, {labels.shape}"
        )
    if len(labels) == 0:
        raise ValueError("no examples to score")
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=list(range(num_classes)), average="macro", zero_division=0
    )
    return {
        "accuracy": float(np.mean(predictions == labels)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "support": len(labels),
    }


def wilson_interval(accuracy: float, n: int, *, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion ``accuracy`` measured on ``n`` examples (95% by default).

    ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` (Wilson, 1927): unlike
    the normal approximation it stays inside [0, 1] and is not empty at p̂ = 0 or 1,
    which is where the small adversarial test sets often are.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z}")
    z2 = z * z
    centre = accuracy + z2 / (2 * n)
    spread = z * float(np.sqrt(accuracy * (1.0 - accuracy) / n + z2 / (4 * n * n)))
    scale = 1.0 + z2 / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)
