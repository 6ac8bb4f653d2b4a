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
