"""Anti-Backdoor Learning: isolate fast-learned samples, then unlearn them.

Implements the two-stage defense of Li, Lyu, Koren, Lyu, Li and Ma (2021),
"Anti-Backdoor Learning: Training Clean Models on Poisoned Data", NeurIPS, as
the layered defense runs it on an edge client:

1. **Isolation** with local gradient ascent (LGA, the paper's Eq. 5): train on
   ``sign(L - γ)·L`` where ``L`` is the batch-mean cross-entropy.  Above ``γ``
   this is plain descent; once a batch's loss falls below ``γ`` the step ascends,
   so the fast-learned (backdoor) samples hover near ``γ`` while clean samples stay
   above it.  The ``round(ρ·N)`` lowest-loss samples are then isolated.
2. **Unlearning** with global gradient ascent (Eq. 9):
   ``min_θ E_{D̂_c}[ℓ] − E_{D̂_b}[ℓ]`` — descend on the kept samples ``D̂_c`` and
   ascend on the isolated ones ``D̂_b`` — optionally preceded by plain
   cross-entropy epochs on ``D̂_c`` alone.

**Schedules.**  The ABL paper's Eq. 9 is phased over training: the LGA loss
while ``t < T_te``, then the ``ρ`` lowest-loss samples are isolated, then clean
training with gradient ascent on the isolated set.  In federated training ``t``
is the server round: :func:`abl_phase` says which phase a round is in under
``"phased"`` (rounds ``1..T_te`` are LGA rounds, ``T_te = isolation_rounds``) or
``"every-round"`` (fedsec's default: isolation and unlearning in every round, on
the model the device received).  :func:`lga_isolation` is phases 1-2 and
:func:`unlearn` phases 3-4; :func:`anti_backdoor_learning` runs both.

Every phase runs through :func:`fedsec.training.train` with a custom loss; this
module has no training loop of its own.  The Eq. 9 loss needs to know which
samples of a mini-batch are isolated, so it takes two-column targets
``[label, isolated_flag]`` built by :func:`unlearning_targets`;
:func:`fedsec.training.train` shuffles and batches them together with ``x``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedsec.training import LossFn, predict_logits, train

__all__ = [
    "ABL_SCHEDULES",
    "PHASE_EVERY_ROUND",
    "PHASE_ISOLATION",
    "PHASE_UNLEARNING",
    "AblResult",
    "abl_phase",
    "anti_backdoor_learning",
    "data_fingerprint",
    "isolate_lowest_loss",
    "lga_isolation",
    "lga_loss",
    "per_sample_losses",
    "unlearn",
    "unlearning_loss",
    "unlearning_targets",
]

logger = logging.getLogger(__name__)

#: ``abl-schedule`` values: isolation and unlearning in every round, or Eq. 9's phases over the rounds.
ABL_SCHEDULES = ("every-round", "phased")
#: A round of the ``every-round`` schedule: LGA, isolation, clean training and unlearning.
PHASE_EVERY_ROUND = "every-round"
#: A phased round ``t <= T_te``: LGA training only (the isolation is computed, not yet used).
PHASE_ISOLATION = "isolation"
#: A phased round ``t > T_te``: clean training on the kept samples, then Eq. 9's unlearning.
PHASE_UNLEARNING = "unlearning"


def abl_phase(server_round: int, *, schedule: str, isolation_rounds: int) -> str:
    """The ABL phase of federated round ``server_round`` under ``schedule``.

    Eq. 9 of Li et al. (2021) uses the LGA loss for ``0 <= t < T_te`` and the
    unlearning loss for ``T_te <= t < T``.  With rounds counted from 1
    (``t = server_round − 1``), the LGA rounds are ``1..T_te``.

    Parameters
    ----------
    server_round
        The federated round (>= 0; the round in the train message's config).
    schedule
        One of :data:`ABL_SCHEDULES`.
    isolation_rounds
        ``T_te``, the number of LGA rounds (>= 0; only read by ``"phased"``).

    Returns
    -------
    str
        :data:`PHASE_EVERY_ROUND`, :data:`PHASE_ISOLATION` or :data:`PHASE_UNLEARNING`.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    if schedule not in ABL_SCHEDULES:
        raise ValueError(f"schedule must be one of {ABL_SCHEDULES}, got {schedule!r}")
    if not _is_int(server_round) or server_round < 0:
        raise ValueError(f"server_round must be an int >= 0, got {server_round!r}")
    if not _is_int(isolation_rounds) or isolation_rounds < 0:
        raise ValueError(f"isolation_rounds must be an int >= 0, got {isolation_rounds!r}")
    if schedule == "every-round":
        return PHASE_EVERY_ROUND
    return PHASE_ISOLATION if server_round <= isolation_rounds else PHASE_UNLEARNING


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A hex digest of ``(x, y)``: shapes, dtypes and bytes.

    Isolated indices are only meaningful for the data they were computed on; a
    device compares fingerprints before reusing a stored isolation (its data
    may change, e.g. a poisoned copy from the attack's start round on).
    """
    _check_labelled(x, y)
    digest = hashlib.blake2b(digest_size=16)
    for tensor in (x, y):
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def lga_loss(gamma: float) -> LossFn:
    """The local-gradient-ascent loss ``sign(L − γ)·L`` of the isolation phase.

    Parameters
    ----------
    gamma
        Loss threshold ``γ``, finite and >= 0.

    Returns
    -------
    LossFn
        ``loss_fn(model, xb, yb)`` with ``L = mean CE(model(xb), yb)``; returns
        ``L`` if ``L > γ``, ``−L`` if ``L < γ`` and ``0·L`` if ``L == γ``.  The sign is
        a constant (no gradient flows through it), so below ``γ`` the gradient is the
        negated cross-entropy gradient.

    Raises
    ------
    ValueError
        If ``gamma`` is negative, not finite or not a number.
    """
    if not _is_real(gamma) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    threshold = float(gamma)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = functional.cross_entropy(model(x), y)
        return torch.sign(loss.detach() - threshold) * loss

    return loss_fn


def per_sample_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int) -> torch.Tensor:
    """Cross-entropy of every example, in eval mode without gradients.

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits; its training mode is restored afterwards.
    x, y
        Inputs ``(N, ...)`` and integer labels ``(N,)``, ``N >= 1``.
    batch_size
        Forward-pass batch size, >= 1.

    Returns
    -------
    torch.Tensor
        ``float (N,)`` losses, detached, in input order.

    Raises
    ------
    ValueError
        If the data is empty or mismatched, or ``batch_size`` is invalid.
    """
    _check_labelled(x, y)
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    logits = predict_logits(model, x, batch_size=int(batch_size))
    return functional.cross_entropy(logits.float(), y.to(logits.device).long(), reduction="none")


def isolate_lowest_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, fraction: float, batch_size: int
) -> np.ndarray:
    """Indices of the ``round(fraction·N)`` examples with the lowest loss.

    Parameters
    ----------
    model
        The (isolation-trained) network; evaluated in eval mode, mode restored.
    x, y
        Inputs ``(N, ...)`` and integer labels ``(N,)``, ``N >= 1``.
    fraction
        Isolation ratio ``ρ`` in ``[0, 1)``; the count is Python's ``round(ρ·N)``.
    batch_size
        Forward-pass batch size, >= 1.

    Returns
    -------
    numpy.ndarray
        ``int64`` indices in increasing order (empty if the count is 0).  Equal
        losses are ranked by index (stable sort), so the lower index is isolated first.

    Raises
    ------
    ValueError
        If ``fraction`` is outside ``[0, 1)`` or the data / ``batch_size`` is invalid.
    """
    if not _is_real(fraction) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    return _lowest(per_sample_losses(model, x, y, batch_size=batch_size), float(fraction))


def unlearning_targets(y: torch.Tensor, isolated: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Two-column targets ``[label, isolated_flag]`` for :func:`unlearning_loss`.

    Parameters
    ----------
    y
        Integer labels ``(N,)``; not modified.
    isolated
        Indices (into ``y``) of the isolated examples; duplicates are harmless.

    Returns
    -------
    torch.Tensor
        ``int64 (N, 2)``: column 0 the label, column 1 ``1`` for isolated examples and
        ``0`` otherwise.  A new tensor.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D or an index is outside ``[0, N)``.
    """
    if not isinstance(y, torch.Tensor) or y.ndim != 1:
        raise ValueError(f"y must be a 1-D label tensor, got {getattr(y, 'shape', type(y).__name__)}")
    index = torch.as_tensor(np.asarray(isolated, dtype=np.int64).reshape(-1))
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(y)):
        raise ValueError(f"isolated holds indices outside [0, {len(y)})")
    flags = torch.zeros(len(y), dtype=torch.int64, device=y.device)
    flags[index.to(y.device)] = 1
    return torch.stack([y.detach().to(torch.int64), flags], dim=1)


def unlearning_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Eq. 9 global-gradient-ascent loss on one mini-batch (a :data:`LossFn`).

    ``mean_{i kept} CE_i − mean_{i isolated} CE_i``, each mean taken over the rows of
    this batch in that group and counted as 0 when the group is absent from the batch
    (a batch without isolated rows is plain cross-entropy; one with only isolated rows
    is pure ascent).

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits.
    x
        Input batch ``(B, ...)``.
    y
        ``(B, 2)`` targets from :func:`unlearning_targets`: ``[label, isolated_flag]``.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Raises
    ------
    ValueError
        If ``y`` is not ``(B, 2)``.
    """
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"y must be (B, 2) [label, isolated_flag] targets, got shape {tuple(y.shape)}")
    losses = functional.cross_entropy(model(x), y[:, 0].long(), reduction="none")
    isolated = y[:, 1].bool()
    kept = ~isolated
    zero = losses.sum() * 0.0
    kept_term = losses[kept].mean() if bool(kept.any()) else zero
    isolated_term = losses[isolated].mean() if bool(isolated.any()) else zero
    return kept_term - isolated_term


@dataclass(frozen=True)
class AblResult:
    """Outcome of :func:`anti_backdoor_learning`.

    Attributes
    ----------
    isolated
        ``int64`` indices (increasing) into the client's training data of the
        isolated (suspected backdoor) examples.
    isolation_loss
        Mean per-example cross-entropy over all ``N`` examples right after the
        isolation phase (eval mode), i.e. where LGA left the data relative to ``γ``.
    final_loss
        Training loss of the last unlearning epoch (the mean Eq. 9 objective over its
        batches, see :attr:`fedsec.training.TrainResult.loss`).
    """

    isolated: np.ndarray
    isolation_loss: float
    final_loss: float


def anti_backdoor_learning(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    isolation_epochs: int,
    gamma: float,
    fraction: float,
    unlearning_epochs: int,
    clean_epochs: int,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    unlearning_optimizer: torch.optim.Optimizer | None = None,
) -> AblResult:
    """Run ABL on ``(x, y)``, training ``model`` in place.

    Phases, each a call of :func:`fedsec.training.train` with the same
    ``optimizer``, ``batch_size`` and ``generator``:

    1. ``isolation_epochs`` with :func:`lga_loss` ``(gamma)`` on all data;
    2. isolate the ``round(fraction·N)`` lowest-loss examples
       (:func:`isolate_lowest_loss`);
    3. ``clean_epochs`` of plain cross-entropy on the kept examples (skipped when 0,
       or when nothing is kept);
    4. ``unlearning_epochs`` of :func:`unlearning_loss` on all data with
       :func:`unlearning_targets`.

    Phases 1-2 are :func:`lga_isolation`, phases 3-4 :func:`unlearn` (the
    ``"phased"`` schedule runs them in different rounds).

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits (updated in place).
    x, y
        Inputs ``(N, ...)`` and integer labels ``(N,)``; not modified.
    isolation_epochs
        LGA epochs, >= 1.
    gamma
        LGA loss threshold ``γ``, finite and >= 0.
    fraction
        Isolation ratio ``ρ`` in ``[0, 1)``.
    unlearning_epochs
        Eq. 9 epochs, >= 1.
    clean_epochs
        Cross-entropy epochs on the kept examples before unlearning, >= 0.
    optimizer
        An optimizer over ``model``'s parameters.
    batch_size
        Mini-batch size, >= 1.
    generator
        Source of every shuffling order.
    unlearning_optimizer
        The optimizer of phase 4 (None: ``optimizer``).  Eq. 9's ascent term is
        unbounded, so ABL unlearns with a far smaller learning rate than it trains
        with (5e-4 in the paper); with the clients' training rate it diverges.

    Returns
    -------
    AblResult

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    FloatingPointError
        If a loss becomes non-finite (from :func:`fedsec.training.train`).
    """
    _check_labelled(x, y)
    # checked before any training (lga_isolation checks the rest)
    if not _is_int(unlearning_epochs) or unlearning_epochs < 1:
        raise ValueError(f"unlearning_epochs must be an int >= 1, got {unlearning_epochs!r}")
    if not _is_int(clean_epochs) or clean_epochs < 0:
        raise ValueError(f"clean_epochs must be an int >= 0, got {clean_epochs!r}")
    isolated, isolation_loss = lga_isolation(
        model,
        x,
        y,
        epochs=isolation_epochs,
        gamma=gamma,
        fraction=fraction,
        optimizer=optimizer,
        batch_size=batch_size,
        generator=generator,
    )
    final_loss = unlearn(
        model,
        x,
        y,
        isolated,
        clean_epochs=clean_epochs,
        unlearning_epochs=unlearning_epochs,
        optimizer=optimizer,
        batch_size=batch_size,
        generator=generator,
        unlearning_optimizer=unlearning_optimizer,
    )
    return AblResult(isolated=isolated, isolation_loss=isolation_loss, final_loss=final_loss)


def lga_isolation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    gamma: float,
    fraction: float,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[np.ndarray, float]:
    """ABL phases 1-2: ``epochs`` of :func:`lga_loss` on all data, then isolate the lowest-loss ``ρ``.

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits (updated in place).
    x, y
        Inputs ``(N, ...)`` and integer labels ``(N,)``; not modified.
    epochs
        LGA epochs, >= 1.
    gamma
        LGA loss threshold ``γ``, finite and >= 0.
    fraction
        Isolation ratio ``ρ`` in ``[0, 1)``.
    optimizer, batch_size, generator
        As for :func:`fedsec.training.train`.

    Returns
    -------
    tuple of numpy.ndarray and float
        The isolated indices (``int64``, increasing; see :func:`isolate_lowest_loss`)
        and the mean per-example loss after the LGA epochs.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    _check_labelled(x, y)
    if not _is_int(epochs) or epochs < 1:
        raise ValueError(f"isolation_epochs must be an int >= 1, got {epochs!r}")
    if not _is_real(fraction) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    isolation = lga_loss(gamma)  # validates gamma
    train(
        model,
        x,
        y,
        epochs=epochs,
        loss_fn=isolation,
        batch_size=batch_size,
        optimizer=optimizer,
        generator=generator,
    )
    losses = per_sample_losses(model, x, y, batch_size=batch_size)
    isolation_loss = float(losses.mean())
    isolated = _lowest(losses, float(fraction))
    logger.info(
        "ABL isolation: %s of %s examples isolated, mean loss %.4f (gamma %s)",
        len(isolated),
        len(x),
        isolation_loss,
        gamma,
    )
    return isolated, isolation_loss


def unlearn(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    isolated: np.ndarray,
    *,
    clean_epochs: int,
    unlearning_epochs: int,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    unlearning_optimizer: torch.optim.Optimizer | None = None,
) -> float:
    """ABL phases 3-4: ``clean_epochs`` of cross-entropy on the kept examples, then Eq. 9.

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits (updated in place).
    x, y
        Inputs ``(N, ...)`` and integer labels ``(N,)``; not modified.
    isolated
        Indices (into ``x``) of the isolated examples ``D̂_b``.
    clean_epochs
        Cross-entropy epochs on the kept examples, >= 0 (skipped when 0 or
        nothing is kept).
    unlearning_epochs
        Epochs of :func:`unlearning_loss` on all data, >= 1.
    optimizer, batch_size, generator
        As for :func:`fedsec.training.train`.
    unlearning_optimizer
        The optimizer of the unlearning epochs (None: ``optimizer``).

    Returns
    -------
    float
        The last unlearning epoch's mean loss.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    _check_labelled(x, y)
    if not _is_int(unlearning_epochs) or unlearning_epochs < 1:
        raise ValueError(f"unlearning_epochs must be an int >= 1, got {unlearning_epochs!r}")
    if not _is_int(clean_epochs) or clean_epochs < 0:
        raise ValueError(f"clean_epochs must be an int >= 0, got {clean_epochs!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    common: dict[str, Any] = {"batch_size": batch_size, "optimizer": optimizer, "generator": generator}
    targets = unlearning_targets(y, isolated)  # validates the indices
    keep = np.setdiff1d(np.arange(len(x)), np.asarray(isolated, dtype=np.int64))
    if clean_epochs > 0 and len(keep) > 0:
        keep_index = torch.as_tensor(keep, device=x.device)
        clean = train(model, x[keep_index], y[keep_index], epochs=clean_epochs, **common)
        logger.debug("ABL clean phase: loss %.4f over %s examples", clean.loss, len(keep))
    result = train(
        model,
        x,
        targets,
        epochs=unlearning_epochs,
        loss_fn=unlearning_loss,
        **{**common, "optimizer": unlearning_optimizer or optimizer},
    )
    logger.info("ABL unlearning: final loss %.4f after %s epochs", result.loss, unlearning_epochs)
    return result.loss


# ---------------------------------------------------------------------------- helpers


def _lowest(losses: torch.Tensor, fraction: float) -> np.ndarray:
    values = losses.detach().cpu().numpy()
    count = round(fraction * len(values))
    return np.sort(np.argsort(values, kind="stable")[:count]).astype(np.int64)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_labelled(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x and y must be torch tensors")
    if x.ndim < 1 or len(x) == 0:
        raise ValueError("x is empty: need at least one example")
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per example), got shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: len(x)={len(x)}, len(y)={len(y)}")
