"""The edge side of the layered backdoor defense: ABL, then self-attention distillation.

Implements the device-side defense of "A layered defense framework for
edge-computing intelligent services" (the layered backdoor-defense paper): every
honest edge device that controls its own training replaces plain local SGD with

1. **Anti-Backdoor Learning** (Li, Lyu, Koren, Lyu, Li and Ma, 2021, "Anti-Backdoor
   Learning: Training Clean Models on Poisoned Data", NeurIPS) — isolate the
   fast-learned (suspected backdoor) samples with local gradient ascent, train on
   the rest, then unlearn the isolated ones (:func:`fedsec.defenses.abl.anti_backdoor_learning`);
2. optionally **self-attention distillation** (Hou, Ma, Liu and Loy, 2019, "Learning
   Lightweight Lane Detection CNNs by Self Attention Distillation", ICCV) on the
   samples ABL kept, to recover the clean accuracy unlearning costs
   (:func:`fedsec.defenses.attention.distill`),

before the update is sent.  :class:`EdgeDefense` is a
:class:`clients.benign.LocalDefense`; :func:`edge_defense` builds it from the run
configuration (``edge-defense``, ``abl-*`` and ``distill-*`` keys).

**ABL schedule.**  ``abl-schedule = "every-round"`` (fedsec's default) runs LGA,
isolation, clean training and unlearning in every round on the model the device
received.  ``"phased"`` follows Eq. 9 of the ABL paper over the federated rounds
(:func:`fedsec.defenses.abl.abl_phase`): in rounds ``1..T_te``
(``abl-isolation-rounds``) the device trains its local epochs with the LGA loss
only and computes the isolation (its ``ρ`` lowest-loss samples under the model it
just trained); after ``T_te`` it trains on the kept samples and unlearns the
isolated ones, then distils.

The round number comes from the train message's config (``server-round``, which
the server puts in every train message).  The isolated set comes from the
node's Flower ``context.state`` (a ``RecordDict`` that the SuperNode, or the
simulation engine, keeps for the node across rounds): every LGA round stores
its isolation there, with a fingerprint of the data it was computed on.  It is
stored rather than recomputed from the received global model because ABL's
isolation only works on a model that has just been trained with LGA on the
device's own data: the global model has been filtered by the server and, after
``T_te``, unlearned, so the backdoor samples no longer have the lowest loss under
it and a recomputed set would miss them.  A node with no stored isolation for its
current data (it was not sampled in any LGA round, its data changed, e.g. a
poisoned copy from the attack's start round, or its state was lost) runs
``abl-isolation-epochs`` of LGA once, isolates, and stores that.

**Distillation** uses its own plain SGD optimizer (no momentum) at
``distill-learning-rate``, as the server's distillation does, not the client's
training optimizer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from torch import nn

from fedsec.config import RunConfig
from fedsec.data import TensorSplit
from fedsec.defenses.abl import (
    ABL_SCHEDULES,
    PHASE_EVERY_ROUND,
    PHASE_ISOLATION,
    abl_phase,
    anti_backdoor_learning,
    data_fingerprint,
    lga_isolation,
    unlearn,
)
from fedsec.defenses.attention import attention_layers
from fedsec.defenses.attention import distill as attention_distill
from fedsec.numbers import is_int, is_real

__all__ = [
    "EDGE_DEFENSES",
    "ISOLATION_KEY",
    "ISOLATION_META_KEY",
    "EdgeDefense",
    "EdgeReport",
    "edge_defense",
]

logger = logging.getLogger(__name__)

#: ``edge-defense`` config value -> whether attention distillation follows ABL.
EDGE_DEFENSES: dict[str, bool] = {"abl": False, "abl+distill": True}

#: Keys in the node's ``context.state`` of the stored isolation (indices; fingerprint and round).
ISOLATION_KEY = "fedsec-abl-isolated"
ISOLATION_META_KEY = "fedsec-abl-isolated-meta"


@dataclass(frozen=True)
class EdgeReport:
    """Outcome of one :meth:`EdgeDefense.train_with_report` call.

    Attributes
    ----------
    isolated
        ``int64`` indices (increasing) into the training data of the samples ABL
        isolated (suspected backdoor samples).  In a phased LGA round: the
        isolation computed (and stored) for later rounds.
    abl_loss
        ABL's final (unlearning) training loss; in a phased LGA round the mean
        per-sample loss after the LGA epochs.
    distill_loss
        The distillation phase's last-epoch loss, or ``None`` if it did not run.
    loss
        The last loss: ``distill_loss`` if distillation ran, else ``abl_loss``.
    phase
        The round's ABL phase (:func:`fedsec.defenses.abl.abl_phase`).
    reused
        Whether the isolation came from the node's state (not computed this round).
    """

    isolated: np.ndarray
    abl_loss: float
    distill_loss: float | None
    loss: float
    phase: str = PHASE_EVERY_ROUND
    reused: bool = False


@dataclass(frozen=True, kw_only=True)
class EdgeDefense:
    """ABL (optionally followed by attention distillation) in place of plain local training.

    Parameters
    ----------
    isolation_epochs
        ABL's local-gradient-ascent (isolation) epochs, an int >= 1.
    gamma
        ABL's loss threshold ``γ``, finite and >= 0.
    fraction
        ABL's isolation ratio ``ρ``, in ``[0, 1)``.
    unlearning_epochs
        ABL's gradient-ascent (unlearning) epochs, an int >= 1.
    distill
        Whether self-attention distillation runs on the kept samples after ABL.
    distill_delta
        Weight ``δ`` of the distillation loss, finite and >= 0.
    distill_epochs
        Distillation epochs, an int >= 1.
    unlearning_lr
        SGD learning rate of ABL's unlearning phase (None: the client's optimizer).
    distill_learning_rate
        Learning rate of the distillation phase's own plain SGD (no momentum);
        None: the client's optimizer (``edge_defense`` always sets it from
        ``distill-learning-rate``).
    schedule
        ``"every-round"`` or ``"phased"`` (see the module docstring).
    isolation_rounds
        ``T_te`` of the phased schedule: rounds ``1..T_te`` train with LGA only.
    state
        The node's Flower ``context.state``, where the phased schedule keeps
        its isolation between rounds (None: nothing is kept, so every
        unlearning round isolates anew).  Not compared by ``==``.

    Raises
    ------
    ValueError
        If a field is invalid (the message names it).
    """

    isolation_epochs: int
    gamma: float
    fraction: float
    unlearning_epochs: int
    distill: bool
    distill_delta: float
    distill_epochs: int
    unlearning_lr: float | None = None
    distill_learning_rate: float | None = None
    schedule: str = "every-round"
    isolation_rounds: int = 5
    state: RecordDict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("isolation_epochs", "unlearning_epochs", "distill_epochs"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("gamma", "distill_delta"):
            value = getattr(self, name)
            if not is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not is_real(self.fraction) or not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {self.fraction!r}")
        if not isinstance(self.distill, bool | np.bool_):
            raise ValueError(f"distill must be a bool, got {self.distill!r}")
        rate = self.distill_learning_rate
        if rate is not None and (not is_real(rate) or not math.isfinite(rate) or rate <= 0):
            raise ValueError(f"distill_learning_rate must be None or a finite number > 0, got {rate!r}")
        if self.schedule not in ABL_SCHEDULES:
            raise ValueError(f"schedule must be one of {ABL_SCHEDULES}, got {self.schedule!r}")
        if not is_int(self.isolation_rounds) or self.isolation_rounds < 0:
            raise ValueError(f"isolation_rounds must be an int >= 0, got {self.isolation_rounds!r}")
        if self.state is not None and not isinstance(self.state, RecordDict):
            raise ValueError(f"state must be None or a flwr RecordDict, got {type(self.state).__name__}")

    def train(
        self,
        model: nn.Module,
        data: TensorSplit,
        *,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        epochs: int,
        batch_size: int,
        server_round: int = 0,
    ) -> float:
        """Train ``model`` in place with the edge defense; return the last loss.

        See :meth:`train_with_report`; this returns its :attr:`EdgeReport.loss`.
        """
        report = self.train_with_report(
            model,
            data,
            optimizer=optimizer,
            generator=generator,
            epochs=epochs,
            batch_size=batch_size,
            server_round=server_round,
        )
        return report.loss

    def train_with_report(
        self,
        model: nn.Module,
        data: TensorSplit,
        *,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        epochs: int,
        batch_size: int,
        server_round: int = 0,
    ) -> EdgeReport:
        """Run this round's ABL phase on ``data`` then, if :attr:`distill`, distil on the kept samples.

        By phase (:func:`fedsec.defenses.abl.abl_phase` of ``server_round``):

        * ``every-round``: ABL with ``clean_epochs=epochs`` (the client's local
          epochs of plain cross-entropy on the kept samples between isolation
          and unlearning), then distillation;
        * ``isolation`` (phased, ``server_round <= isolation_rounds``): ``epochs``
          of LGA on all samples, then the isolation is computed and stored in
          :attr:`state`; no unlearning and no distillation (nothing has been
          unlearned that distillation would repair);
        * ``unlearning`` (phased, later rounds): the stored isolation if it was
          computed on this ``data`` (else ``isolation_epochs`` of LGA and a new
          isolation, stored), ``epochs`` of cross-entropy on the kept samples,
          Eq. 9's unlearning, then distillation.

        ABL shares ``optimizer`` (the unlearning uses its own SGD at
        :attr:`unlearning_lr` when set), ``batch_size`` and ``generator``.
        Distillation uses its own SGD at :attr:`distill_learning_rate` when set,
        and is skipped (with a warning) when ABL isolated every sample.

        Parameters
        ----------
        model
            The network (updated in place).  With :attr:`distill`, it needs
            ``layer1..layer4`` or at least two ``Conv2d`` layers.
        data
            The device's training data; not modified.
        optimizer
            An optimizer over ``model``'s parameters.
        generator
            Source of every shuffling order.
        epochs
            Local epochs (ABL's clean epochs; the LGA epochs of a phased LGA round), an int >= 0.
        batch_size
            Mini-batch size, an int >= 1.
        server_round
            The federated round (from the train message's config); only the
            phased schedule reads it.

        Returns
        -------
        EdgeReport

        Raises
        ------
        ValueError
            If a parameter is invalid, or distillation is on and ``model`` has no
            attention blocks (checked before any training).
        FloatingPointError
            If a loss becomes non-finite.
        """
        if self.distill:
            attention_layers(model)  # fail before training if the model cannot be distilled
        phase = abl_phase(server_round, schedule=self.schedule, isolation_rounds=self.isolation_rounds)
        common: dict[str, Any] = {"optimizer": optimizer, "batch_size": batch_size, "generator": generator}
        unlearning_optimizer = (
            torch.optim.SGD(model.parameters(), lr=self.unlearning_lr) if self.unlearning_lr else None
        )
        reused = False
        if phase == PHASE_EVERY_ROUND:
            result = anti_backdoor_learning(
                model,
                data.x,
                data.y,
                isolation_epochs=self.isolation_epochs,
                gamma=self.gamma,
                fraction=self.fraction,
                unlearning_epochs=self.unlearning_epochs,
                clean_epochs=epochs,
                unlearning_optimizer=unlearning_optimizer,
                **common,
            )
            isolated, abl_loss = result.isolated, result.final_loss
        elif phase == PHASE_ISOLATION:
            isolated, abl_loss = lga_isolation(
                model,
                data.x,
                data.y,
                epochs=max(1, epochs),
                gamma=self.gamma,
                fraction=self.fraction,
                **common,
            )
            self._remember(data, isolated, server_round)
            logger.info(
                "edge defense: round %s is an LGA round (T_te=%s); isolation of %s samples stored",
                server_round,
                self.isolation_rounds,
                len(isolated),
            )
            return EdgeReport(
                isolated=isolated, abl_loss=abl_loss, distill_loss=None, loss=abl_loss, phase=phase
            )
        else:
            stored = self._recall(data)
            reused = stored is not None
            if stored is None:
                logger.info(
                    "edge defense: no stored isolation for this data; isolating in round %s", server_round
                )
                stored, _ = lga_isolation(
                    model,
                    data.x,
                    data.y,
                    epochs=self.isolation_epochs,
                    gamma=self.gamma,
                    fraction=self.fraction,
                    **common,
                )
                self._remember(data, stored, server_round)
            isolated = stored
            abl_loss = unlearn(
                model,
                data.x,
                data.y,
                isolated,
                clean_epochs=epochs,
                unlearning_epochs=self.unlearning_epochs,
                unlearning_optimizer=unlearning_optimizer,
                **common,
            )
        logger.info("edge defense: ABL isolated %s of %s samples (%s)", len(isolated), len(data), phase)
        distill_loss: float | None = None
        if self.distill:
            keep = np.setdiff1d(np.arange(len(data)), isolated)
            if len(keep) == 0:
                logger.warning("edge defense: every sample was isolated; distillation skipped")
            else:
                kept = data.subset(keep)
                distill_loss = attention_distill(
                    model,
                    kept.x,
                    kept.y,
                    delta=self.distill_delta,
                    epochs=self.distill_epochs,
                    batch_size=batch_size,
                    optimizer=self.distill_optimizer(model, optimizer),
                    generator=generator,
                )
                logger.info("edge defense: distilled on %s kept samples, loss %.4f", len(keep), distill_loss)
        loss = abl_loss if distill_loss is None else distill_loss
        return EdgeReport(
            isolated=isolated,
            abl_loss=abl_loss,
            distill_loss=distill_loss,
            loss=loss,
            phase=phase,
            reused=reused,
        )

    def distill_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The distillation's optimizer: plain SGD at :attr:`distill_learning_rate`, else ``optimizer``."""
        if self.distill_learning_rate is None:
            return optimizer
        return torch.optim.SGD(model.parameters(), lr=self.distill_learning_rate)

    def _remember(self, data: TensorSplit, isolated: np.ndarray, server_round: int) -> None:
        """Store ``isolated`` (computed on ``data`` in ``server_round``) in the node's state."""
        if self.state is None:
            return
        self.state[ISOLATION_KEY] = ArrayRecord({"isolated": Array(np.asarray(isolated, dtype=np.int64))})
        self.state[ISOLATION_META_KEY] = ConfigRecord(
            {"fingerprint": data_fingerprint(data.x, data.y), "round": int(server_round)}
        )

    def _recall(self, data: TensorSplit) -> np.ndarray | None:
        """The stored isolation if it was computed on ``data``; ``None`` otherwise."""
        if self.state is None or ISOLATION_KEY not in self.state or ISOLATION_META_KEY not in self.state:
            return None
        meta = self.state.config_records[ISOLATION_META_KEY]
        if meta.get("fingerprint") != data_fingerprint(data.x, data.y):
            logger.info("edge defense: the stored isolation (round %s) is of other data", meta.get("round"))
            return None
        stored = self.state.array_records[ISOLATION_KEY]["isolated"].numpy()
        return np.asarray(stored, dtype=np.int64)


def edge_defense(config: RunConfig, *, state: RecordDict | None = None) -> EdgeDefense | None:
    """The edge defense ``config.edge_defense`` names, or ``None`` for ``""``.

    Parameters
    ----------
    config
        The run configuration; ``edge-defense`` is ``""``, ``"abl"`` or
        ``"abl+distill"``, the other fields come from the ``abl-*`` and
        ``distill-*`` keys.
    state
        The node's Flower ``context.state`` (the phased ABL schedule keeps its
        isolation there); None: nothing is kept between rounds.

    Returns
    -------
    EdgeDefense or None

    Raises
    ------
    ValueError
        If ``config.edge_defense`` is not one of the known values.
    """
    if config.edge_defense == "":
        return None
    if config.edge_defense not in EDGE_DEFENSES:
        raise ValueError(
            f"edge_defense must be '' or one of {sorted(EDGE_DEFENSES)}, got {config.edge_defense!r}"
        )
    return EdgeDefense(
        isolation_epochs=config.abl_isolation_epochs,
        gamma=config.abl_gamma,
        fraction=config.abl_fraction,
        unlearning_epochs=config.abl_unlearning_epochs,
        distill=EDGE_DEFENSES[config.edge_defense],
        distill_delta=config.distill_delta,
        distill_epochs=config.distill_epochs,
        unlearning_lr=config.abl_unlearning_lr,
        distill_learning_rate=config.distill_learning_rate,
        schedule=config.abl_schedule,
        isolation_rounds=config.abl_isolation_rounds,
        state=state,
    )
