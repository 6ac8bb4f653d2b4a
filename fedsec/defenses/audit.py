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

No Flower imports; the strategy adapter calls these.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsec.data.datasets import TensorSplit
from fedsec.device import model_device
from fedsec.models.gan import ImageGenerator
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


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


# ---------------------------------------------------------------------------- GAN training


@dataclass(frozen=True)
class GanStats:
    """Outcome of :func:`train_gan`.

    Attributes
    ----------
    d_loss
        Discriminator loss of the last step: ``CE(D(x_real), y_real) + CE(D(G(z)), fake)``.
    g_loss
        Generator loss of the last step: mean ``-log(1 - p_fake(G(z)))``, plus the
        weighted :func:`class_balance_loss` when it is on.
    steps
        Number of alternating (discriminator, generator) steps taken.
    class_entropy
        Entropy (nats) of the discriminator's mean real-class distribution over
        the last generated batch; ``log K`` when the batch covers the ``K``
        classes evenly, 0 when it is all one class.
    """

    d_loss: float
    g_loss: float
    steps: int
    class_entropy: float = math.nan


def _not_fake_loss(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean ``-log(1 - p_fake)`` = ``logsumexp(all logits) - logsumexp(real-class logits)``."""
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits[:, :num_classes], dim=1)).mean()


def class_balance_loss(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CatGAN's information-maximisation term on the real-class logits of a generated batch.

    With ``p_i = softmax(logits_i[:K])`` and ``p̄`` their batch mean, returns
    ``mean_i H(p_i) − H(p̄) + log K``: zero exactly when every sample is
    classified with certainty and the batch covers the ``K`` classes evenly,
    positive otherwise (Springenberg, "Unsupervised and semi-supervised learning
    with categorical generative adversarial networks", 2016; the same term
    drives DAFL's data-free generator).  Minimising it makes the generator
    produce confident samples of *every* class the discriminator knows, not
    only of the classes in the auxiliary set.
    """
    log_p = torch.log_softmax(logits[:, :num_classes], dim=1)
    per_sample = -(log_p.exp() * log_p).sum(dim=1).mean()
    return per_sample - _marginal_entropy(logits, num_classes) + math.log(num_classes)


def _marginal_entropy(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Entropy of the batch-mean softmax over the ``num_classes`` real-class logits."""
    marginal = torch.softmax(logits[:, :num_classes], dim=1).mean(dim=0)
    return -(marginal * torch.log(marginal.clamp_min(1e-12))).sum()


def train_gan(
    generator: ImageGenerator,
    discriminator: nn.Module,
    auxiliary: TensorSplit,
    *,
    num_classes: int,
    steps: int,
    batch_size: int,
    lr: float = 2e-4,
    class_balance: float = 0.0,
    rng: torch.Generator,
    device: torch.device | None = None,
) -> GanStats:
    """Train ``generator`` and ``discriminator`` in place as a semi-supervised GAN.

    Each step draws a batch of ``min(batch_size, N)`` distinct auxiliary samples and
    latent vectors from ``rng``, then

    * discriminator step: minimise ``CE(D(x), y) + CE(D(G(z).detach()), K)``;
    * generator step (fresh ``z``): minimise ``-log(1 - p_fake(G(z)))``, i.e.
      ``logsumexp`` over all ``K + 1`` logits minus ``logsumexp`` over the ``K``
      real-class logits, which pushes generated samples into the real classes;
      plus ``class_balance`` × :func:`class_balance_loss`, which spreads them
      over all ``K`` classes (the auxiliary set may hold only a few of them).

    Both networks use Adam with betas ``(0.5, 0.999)``.  Their training modes are
    restored afterwards and no gradients are left on their parameters.

    Parameters
    ----------
    generator
        The generator; its ``output_shape`` must equal the auxiliary images' shape.
    discriminator
        A ``K + 1``-output network (see :func:`fedsec.models.gan.discriminator_from`).
    auxiliary
        The server's small labelled set (labels in ``[0, num_classes)``, ``N >= 1``); not modified.
    num_classes
        Number of real classes ``K >= 2``; ``K`` is the fake index.
    steps
        Number of alternating steps, >= 1.
    batch_size
        Real (and generated) samples per step, >= 1.
    lr
        Adam learning rate of both networks, finite and > 0.
    class_balance
        Weight of :func:`class_balance_loss` in the generator loss, finite and
        >= 0; 0 is the plain semi-supervised GAN.
    rng
        Source of batch order and latent vectors (a CPU generator: the draws are the
        same on every device); same state, same run.
    device
        Where both networks train (None: where the generator's parameters are);
        the batches and latent vectors are moved there, the networks are not.

    Returns
    -------
    GanStats

    Raises
    ------
    ValueError
        If a parameter is invalid or the shapes disagree (the message names it).
    TypeError
        If ``rng`` is not a :class:`torch.Generator`.
    FloatingPointError
        If a loss becomes NaN or infinite (the message gives the step).
    """
    if not _is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not _is_real(lr) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not _is_real(class_balance) or not math.isfinite(class_balance) or class_balance < 0:
        raise ValueError(f"class_balance must be a finite number >= 0, got {class_balance!r}")
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")
    n = len(auxiliary)
    if n < 1:
        raise ValueError("auxiliary is empty: need at least one labelled sample")
    if tuple(auxiliary.x.shape[1:]) != generator.output_shape:
        raise ValueError(
            f"auxiliary images have shape {tuple(auxiliary.x.shape[1:])}, "
            f"generator output_shape is {generator.output_shape}"
        )
    if int(auxiliary.y.min()) < 0 or int(auxiliary.y.max()) >= num_classes:
        raise ValueError(f"auxiliary labels must lie in [0, num_classes={num_classes})")

    target = model_device(generator) if device is None else torch.device(device)
    b = min(int(batch_size), n)
    fake_index = torch.full((b,), num_classes, dtype=torch.int64, device=target)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=float(lr), betas=(0.5, 0.999))
    g_opt = torch.optim.Adam(generator.parameters(), lr=float(lr), betas=(0.5, 0.999))
    modes = (generator.training, discriminator.training)
    generator.train()
    discriminator.train()
    d_value = g_value = entropy = math.nan
    try:
        for step in range(1, steps + 1):
            idx = torch.randperm(n, generator=rng)[:b]
            x_real, y_real = auxiliary.x[idx].to(target), auxiliary.y[idx].to(target)
            z = torch.randn(b, generator.latent_dim, generator=rng).to(target)
            z_gen = torch.randn(b, generator.latent_dim, generator=rng).to(target)

            d_opt.zero_grad(set_to_none=True)
            real_logits = discriminator(x_real)
            if real_logits.ndim != 2 or real_logits.shape[1] != num_classes + 1:
                raise ValueError(
                    f"discriminator output has shape {tuple(real_logits.shape)}, "
                    f"expected (B, num_classes + 1 = {num_classes + 1})"
                )
            fake_logits = discriminator(generator(z).detach())
            d_loss = nn.functional.cross_entropy(real_logits, y_real) + nn.functional.cross_entropy(
                fake_logits, fake_index
            )
            d_value = float(d_loss.detach())
            if not math.isfinite(d_value):
                raise FloatingPointError(f"discriminator loss became {d_value} at step {step}/{steps}")
            d_loss.backward()
            d_opt.step()

            g_opt.zero_grad(set_to_none=True)
            gen_logits = discriminator(generator(z_gen))
            g_loss = _not_fake_loss(gen_logits, num_classes)
            if class_balance > 0:
                g_loss = g_loss + float(class_balance) * class_balance_loss(gen_logits, num_classes)
            entropy = float(_marginal_entropy(gen_logits.detach(), num_classes))
            g_value = float(g_loss.detach())
            if not math.isfinite(g_value):
                raise FloatingPointError(f"generator loss became {g_value} at step {step}/{steps}")
            g_loss.backward()
            g_opt.step()
            logger.debug("GAN step %s/%s: d_loss %s, g_loss %s", step, steps, d_value, g_value)
    finally:
        d_opt.zero_grad(set_to_none=True)
        g_opt.zero_grad(set_to_none=True)
        generator.train(modes[0])
        discriminator.train(modes[1])
    return GanStats(d_loss=d_value, g_loss=g_value, steps=steps, class_entropy=entropy)


def first_audit_round(d_iter: int, steps_per_round: int) -> int:
    """The first round whose audit runs after at least ``d_iter`` GAN iterations.

    The server trains the GAN ``steps_per_round`` iterations every round, before
    that round's audit, so after round ``r`` it has trained ``r · steps_per_round``;
    the paper's "audit after ``d_iter`` iterations" is round
    ``max(1, ceil(d_iter / steps_per_round))`` (e.g. ``d_iter = 600`` at 100 steps a
    round: round 6).

    Raises
    ------
    ValueError
        If ``d_iter`` is not an int >= 0 or ``steps_per_round`` not an int >= 1.
    """
    if not _is_int(d_iter) or d_iter < 0:
        raise ValueError(f"d_iter must be an int >= 0, got {d_iter!r}")
    if not _is_int(steps_per_round) or steps_per_round < 1:
        raise ValueError(f"steps_per_round must be an int >= 1, got {steps_per_round!r}")
    return max(1, -(-int(d_iter) // int(steps_per_round)))


def audit_set(generator: ImageGenerator, n: int, *, rng: torch.Generator) -> torch.Tensor:
    """Generate ``n`` unlabelled audit images ``(n, C, H, W)`` in ``[0, 1]``.

    See :meth:`~fedsec.models.gan.ImageGenerator.sample`.
    """
    return generator.sample(n, generator=rng)


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
    if not _is_real(min_agreement) or not 0.0 <= float(min_agreement) <= 1.0:
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
    if not _is_int(per_class) or per_class < 0:
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
    if not _is_int(min_count) or min_count < 1:
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
    if not _is_real(theta) or not 0.0 <= float(theta) <= 1.0:
        raise ValueError(f"theta must be a number in [0, 1], got {theta!r}")
    if not _is_real(consensus) or not 0.0 <= float(consensus) <= 1.0:
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
