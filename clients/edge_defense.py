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
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsec.config import RunConfig
from fedsec.data import TensorSplit
from fedsec.defenses.abl import anti_backdoor_learning
from fedsec.defenses.attention import attention_layers
from fedsec.defenses.attention import distill as attention_distill

__all__ = ["EDGE_DEFENSES", "EdgeDefense", "EdgeReport", "edge_defense"]

logger = logging.getLogger(__name__)

#: ``edge-defense`` config value -> whether attention distillation follows ABL.
EDGE_DEFENSES: dict[str, bool] = {"abl": False, "abl+distill": True}


@dataclass(frozen=True)
class EdgeReport:
    """Outcome of one :meth:`EdgeDefense.train_with_report` call.

    Attributes
    ----------
    isolated
        ``int64`` indices (increasing) into the training data of the samples ABL
        isolated (suspected backdoor samples).
    abl_loss
        ABL's final (unlearning) training loss.
    distill_loss
        The distillation phase's last-epoch loss, or ``None`` if it did not run.
    loss
        The last loss: ``distill_loss`` if distillation ran, else ``abl_loss``.
    """

    isolated: np.ndarray
    abl_loss: float
    distill_loss: float | None
    loss: float


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

    def __post_init__(self) -> None:
        for name in ("isolation_epochs", "unlearning_epochs", "distill_epochs"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("gamma", "distill_delta"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not _is_real(self.fraction) or not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {self.fraction!r}")
        if not isinstance(self.distill, bool | np.bool_):
            raise ValueError(f"distill must be a bool, got {self.distill!r}")

    def train(
        self,
        model: nn.Module,
        data: TensorSplit,
        *,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        epochs: int,
        batch_size: int,
    ) -> float:
        """Train ``model`` in place with the edge defense; return the last loss.

        See :meth:`train_with_report`; this returns its :attr:`EdgeReport.loss`.
        """
        report = self.train_with_report(
            model, data, optimizer=optimizer, generator=generator, epochs=epochs, batch_size=batch_size
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
    ) -> EdgeReport:
        """Run ABL on ``data`` then, if :attr:`distill`, distillation on the kept samples.

        ABL runs with ``clean_epochs=epochs`` (the client's local epochs of plain
        cross-entropy on the kept samples between isolation and unlearning).  Both
        phases share ``optimizer``, ``batch_size`` and ``generator``.  Distillation
        is skipped (with a warning) when ABL isolated every sample.

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
            Local epochs (ABL's clean epochs), an int >= 0.
        batch_size
            Mini-batch size, an int >= 1.

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
        result = anti_backdoor_learning(
            model,
            data.x,
            data.y,
            isolation_epochs=self.isolation_epochs,
            gamma=self.gamma,
            fraction=self.fraction,
            unlearning_epochs=self.unlearning_epochs,
            clean_epochs=epochs,
            optimizer=optimizer,
            batch_size=batch_size,
            generator=generator,
            unlearning_optimizer=(
                torch.optim.SGD(model.parameters(), lr=self.unlearning_lr) if self.unlearning_lr else None
            ),
        )
        logger.info("edge defense: ABL isolated %s of %s samples", len(result.isolated), len(data))
        distill_loss: float | None = None
        if self.distill:
            keep = np.setdiff1d(np.arange(len(data)), result.isolated)
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
                    optimizer=optimizer,
                    generator=generator,
                )
                logger.info("edge defense: distilled on %s kept samples, loss %.4f", len(keep), distill_loss)
        loss = result.final_loss if distill_loss is None else distill_loss
        return EdgeReport(
            isolated=result.isolated, abl_loss=result.final_loss, distill_loss=distill_loss, loss=loss
        )


def edge_defense(config: RunConfig) -> EdgeDefense | None:
    """The edge defense ``config.edge_defense`` names, or ``None`` for ``""``.

    Parameters
    ----------
    config
        The run configuration; ``edge-defense`` is ``""``, ``"abl"`` or
        ``"abl+distill"``, the other fields come from the ``abl-*`` and
        ``distill-*`` keys.

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
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
