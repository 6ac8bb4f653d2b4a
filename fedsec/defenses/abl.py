"""Anti-Backdoor Learning: isolate fast-learned samples, then unlearn them.

Implements the two-stage defense of Li, Lyu, Koren, Lyu, Li and Ma (2021),
"Anti-Backdoor Learning: Training Clean Models on Poisoned Data", NeurIPS, as
the layered defense runs it on an edge client:

1. **Isolation**: train with the local-gradient-ascent loss, then isolate the
   ``round(ρ·N)`` lowest-loss samples (:func:`lga_isolation`).
2. **Unlearning**: descend on the kept samples and ascend on the isolated ones
   (Eq. 9), optionally preceded by plain cross-entropy epochs on the kept samples
   alone (:func:`unlearn`).

The losses and the isolation themselves are in :mod:`fedsec.defenses.abl_losses`;
this module runs them as phases and schedules them over the federated rounds.

**Schedules.**  The ABL paper's Eq. 9 is phased over training: the LGA loss
while ``t < T_te``, then the ``ρ`` lowest-loss samples are isolated, then clean
training with gradient ascent on the isolated set.  In federated training ``t``
is the server round: :func:`abl_phase` says which phase a round is in under
``"phased"`` (rounds ``1..T_te`` are LGA rounds, ``T_te = isolation_rounds``) or
``"every-round"`` (fedsec's default: isolation and unlearning in every round, on
the model the device received).  :func:`lga_isolation` is phases 1-2 and
:func:`unlearn` phases 3-4; :func:`anti_backdoor_learning` runs both.

Every phase runs through :func:`fedsec.training.train` with a custom loss; this
module has no training loop of its own.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsec.defenses.abl_losses import (
    _check_labelled,
    _lowest,
    lga_loss,
    per_sample_losses,
    unlearning_loss,
    unlearning_targets,
)
from fedsec.numbers import is_int, is_real
from fedsec.training import train

__all__ = [
    "ABL_SCHEDULES",
    "PHASE_EVERY_ROUND",
    "PHASE_ISOLATION",
    "PHASE_UNLEARNING",
    "AblResult",
    "abl_phase",
    "anti_backdoor_learning",
    "data_fingerprint",
    "lga_isolation",
    "unlearn",
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
    if not is_int(server_round) or server_round < 0:
        raise ValueError(f"server_round must be an int >= 0, got {server_round!r}")
    if not is_int(isolation_rounds) or isolation_rounds < 0:
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
    if not is_int(unlearning_epochs) or unlearning_epochs < 1:
        raise ValueError(f"unlearning_epochs must be an int >= 1, got {unlearning_epochs!r}")
    if not is_int(clean_epochs) or clean_epochs < 0:
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
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"isolation_epochs must be an int >= 1, got {epochs!r}")
    if not is_real(fraction) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    if not is_int(batch_size) or batch_size < 1:
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
    if not is_int(unlearning_epochs) or unlearning_epochs < 1:
        raise ValueError(f"unlearning_epochs must be an int >= 1, got {unlearning_epochs!r}")
    if not is_int(clean_epochs) or clean_epochs < 0:
        raise ValueError(f"clean_epochs must be an int >= 0, got {clean_epochs!r}")
    if not is_int(batch_size) or batch_size < 1:
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
