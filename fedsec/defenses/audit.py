"""PDGAN auditing: GAN-generated audit data, majority-vote labels and the accuracy threshold.

Implements Algorithm 1 of Zhao, Chen, Chen, Xiang and Chen, "Detecting and
mitigating poisoning attacks in federated learning using generative adversarial
networks" (PDGAN).  The server

1. trains a generator against a ``K + 1``-class discriminator initialised from the
   global model (:func:`train_gan`, a semi-supervised GAN: the discriminator
   classifies real auxiliary samples into their ``K`` classes and generated ones
   as "fake", index ``K``; the generator pushes its samples towards the real
   classes); the audit starts once the GAN has trained ``d_iter`` iterations
   (:func:`first_audit_round`);
2. generates an unlabelled audit set (:func:`audit_set`);
3. runs every participant's model on it (:func:`predict_all`), labels each audit
   sample by majority vote over the participants (:func:`majority_vote`), scores
   each participant's accuracy against those labels (:func:`audit_accuracies`),
   and drops participants whose accuracy is below ``θ`` (:func:`audit`).
   Three options, our additions and off by default: only the samples whose
   majority is clear are scored (:func:`consensus_mask`); at most so many of each
   majority class are scored (:func:`cap_per_class`), so a class the generator
   rarely draws is not drowned by the ones it favours; and the score can be the
   client's agreement on its worst class instead of overall
   (:func:`worst_class_agreement`), which a targeted flip cannot hide.

Steps 1–2 (the GAN) live in :mod:`fedsec.defenses.gan_training` and are
re-exported here.  No Flower imports; the strategy adapter calls these.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsec.defenses.gan_training import (
    GanStats,
    audit_set,
    class_balance_loss,
    first_audit_round,
    train_gan,
)
from fedsec.numbers import is_int, is_real
from fedsec.training import predict_logits

__all__ = [
    "SCORES",
    "AuditResult",
    "GanStats",
    "audit",
    "audit_accuracies",
    "audit_set",
    "cap_per_class",
    "class_balance_loss",
    "consensus_mask",
    "first_audit_round",
    "majority_vote",
    "predict_all",
    "train_gan",
    "worst_class_agreement",
]

logger = logging.getLogger(__name__)

#: How :func:`audit` scores a client: overall agreement with the vote (the paper) or on its worst class.
SCORES = ("accuracy", "worst-class")


# ---------------------------------------------------------------------------- auditing


def _check_predictions(predictions: np.ndarray) -> np.ndarray:
    array = np.asarray(predictions)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(
            f"predictions must have shape (k_clients, n) with k, n >= 1, got {tuple(array.shape)}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"predictions must hold integer labels, got dtype {array.dtype}")
    return array


def _check_labels(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``labels`` as an array, if it has one entry per column of ``predictions``."""
    reference = np.asarray(labels)
    if reference.shape != (predictions.shape[1],):
        raise ValueError(f"labels must have shape ({predictions.shape[1]},), got {tuple(reference.shape)}")
    return reference


def majority_vote(predictions: np.ndarray) -> np.ndarray:
    """Label each audit sample by the most frequent prediction over the clients.

    Parameters
    ----------
    predictions
        Integer labels ``(k_clients, n)``; not modified.

    Returns
    -------
    numpy.ndarray
        ``int64 (n,)``; a tie goes to the smallest of the tied labels.

    Raises
    ------
    ValueError
        If ``predictions`` is not a non-empty 2-D integer array.
    """
    array = _check_predictions(predictions)
    values = np.unique(array)  # sorted, so argmax's first maximum is the smallest tied label
    counts = (array[None, :, :] == values[:, None, None]).sum(axis=1)  # (u, n)
    return values[np.argmax(counts, axis=0)].astype(np.int64)


def audit_accuracies(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each client's accuracy against ``labels``.

    Parameters
    ----------
    predictions
        Integer labels ``(k_clients, n)``; not modified.
    labels
        Reference labels ``(n,)`` (the majority vote); not modified.

    Returns
    -------
    numpy.ndarray
        ``float64 (k_clients,)``: fraction of samples on which the client agrees with ``labels``.

    Raises
    ------
    ValueError
        If the shapes disagree or ``predictions`` is not a non-empty 2-D integer array.
    """
    array = _check_predictions(predictions)
    reference = _check_labels(array, labels)
    return (array == reference[None, :]).mean(axis=1).astype(np.float64)


def consensus_mask(predictions: np.ndarray, labels: np.ndarray, min_agreement: float) -> np.ndarray:
    """Audit samples whose majority label is shared by at least ``min_agreement`` of the clients.

    A generated image that the clients' models label every which way says little
    about any one of them: an honest model that disagrees with a split vote is not
    suspect.  Scoring only the samples with a clear majority keeps the honest
    models' agreement near 1 while a poisoned model still disagrees wherever its
    poisoning shows.

    Parameters
    ----------
    predictions
        Integer labels ``(k_clients, n)``; not modified.
    labels
        The majority-vote labels ``(n,)``; not modified.
    min_agreement
        Fraction of the ``k`` clients, in ``[0, 1]``, that must predict a sample's
        label; ``0`` keeps every sample.

    Returns
    -------
    numpy.ndarray
        ``bool (n,)``.

    Raises
    ------
    ValueError
        If ``min_agreement`` is outside ``[0, 1]`` or the shapes disagree.
    """
    if not is_real(min_agreement) or not 0.0 <= float(min_agreement) <= 1.0:
        raise ValueError(f"min_agreement must be a number in [0, 1], got {min_agreement!r}")
    array = _check_predictions(predictions)
    reference = _check_labels(array, labels)
    agreement = (array == reference[None, :]).mean(axis=0)
    return np.asarray(agreement >= float(min_agreement) - 1e-12)


def cap_per_class(labels: np.ndarray, mask: np.ndarray, per_class: int) -> np.ndarray:
    """Restrict ``mask`` to the first ``per_class`` selected samples of each label.

    The audit samples are i.i.d. draws of the generator, so the first ones of a
    class are a uniform subset of it; the choice needs no random numbers.

    Parameters
    ----------
    labels
        Majority-vote labels ``(n,)``; not modified.
    mask
        ``bool (n,)``: the samples eligible (e.g. :func:`consensus_mask`); not modified.
    per_class
        At most this many samples of each label stay selected; ``0`` means no cap.

    Returns
    -------
    numpy.ndarray
        A new ``bool (n,)`` mask.

    Raises
    ------
    ValueError
        If ``per_class`` is not an int >= 0 or the shapes disagree.
    """
    if not is_int(per_class) or per_class < 0:
        raise ValueError(f"per_class must be an int >= 0, got {per_class!r}")
    reference = np.asarray(labels)
    chosen = np.asarray(mask, dtype=bool).copy()
    if reference.ndim != 1 or chosen.shape != reference.shape:
        raise ValueError(
            f"labels and mask must both have shape (n,), got {reference.shape} and {chosen.shape}"
        )
    if per_class == 0:
        return chosen
    for label in np.unique(reference[chosen]):
        members = np.flatnonzero(chosen & (reference == label))
        chosen[members[int(per_class) :]] = False
    return chosen


def worst_class_agreement(predictions: np.ndarray, labels: np.ndarray, *, min_count: int) -> np.ndarray:
    """Each client's lowest per-class agreement with ``labels``.

    For every label with at least ``min_count`` samples, the fraction of them on
    which the client predicts that label; the minimum over those labels.  A model
    that flips one class (1 → 7) agrees on the other classes and on almost no 1,
    so its overall accuracy hides the flip when 1s are rare and this does not.

    Parameters
    ----------
    predictions
        Integer labels ``(k_clients, n)``; not modified.
    labels
        Reference labels ``(n,)``; not modified.
    min_count
        Labels with fewer samples are not scored (too few to judge a client by), >= 1.
        If no label has that many, the overall agreement is returned.

    Returns
    -------
    numpy.ndarray
        ``float64 (k_clients,)``.

    Raises
    ------
    ValueError
        If ``min_count < 1`` or the shapes disagree.
    """
    if not is_int(min_count) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    array = _check_predictions(predictions)
    reference = _check_labels(array, labels)
    values, counts = np.unique(reference, return_counts=True)
    scored = values[counts >= int(min_count)]
    if scored.size == 0:
        return audit_accuracies(array, reference)
    per_class = np.stack([(array[:, reference == c] == c).mean(axis=1) for c in scored])  # (classes, k)
    return per_class.min(axis=0).astype(np.float64)


@dataclass(frozen=True, eq=False)
class AuditResult:
    """Outcome of :func:`audit`.

    Attributes
    ----------
    labels
        ``int64 (n,)``: majority-vote labels of the audit samples (read-only).
    accuracies
        ``float64 (k,)``: each client's audit accuracy against ``labels`` (read-only).
    kept
        Indices (rows of ``predictions``) of clients with accuracy ``>= θ``, ascending.
    dropped
        Index -> reason, e.g. ``"audit accuracy 0.12 < θ=0.50"``, for the others.
    scored
        Number of audit samples the accuracies were computed on (all ``n`` unless a
        consensus filter left fewer).
    """

    labels: np.ndarray
    accuracies: np.ndarray
    kept: tuple[int, ...]
    dropped: dict[int, str]
    scored: int = 0


def audit(
    predictions: np.ndarray,
    *,
    theta: float,
    relative: bool = False,
    consensus: float = 0.0,
    per_class: int = 0,
    score: str = "accuracy",
    min_class_samples: int = 5,
) -> AuditResult:
    """Majority-vote the audit labels and keep the clients whose accuracy is at least ``theta``.

    Parameters
    ----------
    predictions
        Integer labels ``(k_clients, n)`` of every client's model on the audit set; not modified.
    theta
        Accuracy threshold ``θ`` in ``[0, 1]``; ``0`` keeps every client.
    relative
        If True the threshold is ``θ × median accuracy`` of the round (a departure
        from the paper's fixed θ: when the generated images are poor every
        client's agreement falls together, and a fixed θ then drops honest ones).
    consensus
        In ``[0, 1]``: score only the samples whose majority label at least this
        fraction of the clients predicts (:func:`consensus_mask`; our addition, 0 is
        the paper's audit over every sample).  If no sample qualifies, every sample
        is scored and a warning is logged.  Keep it at or below the honest share of
        the round's clients: above it a sample counts only if poisoned models agree
        too, and a model that labels everything one way then passes on exactly the
        samples of that label.
    per_class
        Score at most this many samples of each majority label (:func:`cap_per_class`,
        after the consensus filter); 0 scores them all.
    score
        ``"accuracy"`` (the paper: agreement over the scored samples) or
        ``"worst-class"`` (:func:`worst_class_agreement` over labels with at least
        ``min_class_samples`` scored samples).
    min_class_samples
        See ``score``; an int >= 1.

    Returns
    -------
    AuditResult

    Raises
    ------
    ValueError
        If ``theta`` or ``consensus`` is outside ``[0, 1]``, ``score`` is unknown,
        or ``predictions`` is invalid.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if not is_real(theta) or not 0.0 <= float(theta) <= 1.0:
        raise ValueError(f"theta must be a number in [0, 1], got {theta!r}")
    if not is_real(consensus) or not 0.0 <= float(consensus) <= 1.0:
        raise ValueError(f"consensus must be a number in [0, 1], got {consensus!r}")
    array = _check_predictions(predictions)
    labels = majority_vote(array)
    mask = consensus_mask(array, labels, consensus)
    if not mask.any():
        logger.warning(
            "PDGAN audit: no audit sample has a majority of >= %s of the clients; scoring all %s",
            consensus,
            mask.size,
        )
        mask[:] = True
    mask = cap_per_class(labels, mask, per_class)
    if score == "worst-class":
        accuracies = worst_class_agreement(array[:, mask], labels[mask], min_count=min_class_samples)
    else:
        accuracies = audit_accuracies(array[:, mask], labels[mask])
    bar = float(theta) * float(np.median(accuracies)) if relative else float(theta)
    kept = tuple(i for i, acc in enumerate(accuracies) if acc >= bar)
    dropped = {
        i: f"audit {'accuracy' if score == 'accuracy' else 'worst-class agreement'} {acc:.2f} "
        f"< {'θ×median' if relative else 'θ'}={bar:.2f}"
        for i, acc in enumerate(accuracies)
        if acc < bar
    }
    labels.setflags(write=False)
    accuracies.setflags(write=False)
    scored = int(mask.sum())
    logger.info(
        "PDGAN audit at θ=%s on %s of %s samples: kept %s, dropped %s",
        theta,
        scored,
        mask.size,
        kept,
        dropped,
    )
    return AuditResult(labels=labels, accuracies=accuracies, kept=kept, dropped=dropped, scored=scored)


def predict_all(models: Sequence[nn.Module], x: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
    """Arg-max predictions of every model on ``x``.

    Parameters
    ----------
    models
        The clients' networks (``(B, K)`` logits each); their modes are restored.
    x
        Audit inputs ``(n, C, H, W)``; not modified.
    batch_size
        Forward-pass batch size, >= 1.

    Returns
    -------
    numpy.ndarray
        ``int64 (k_clients, n)``.

    Raises
    ------
    ValueError
        If ``models`` is empty, ``x`` is empty or ``batch_size < 1``.
    """
    if len(models) == 0:
        raise ValueError("models is empty: need at least one client model")
    rows = [predict_logits(m, x, batch_size=batch_size).argmax(dim=1).cpu().numpy() for m in models]
    return np.stack(rows).astype(np.int64)
