"""The poisoning detectors of Chen et al. as a wrapper around any Flower strategy.

:class:`DetectionStrategy` measures every round's updates (cosine to the
aggregate of the others, L2 norm against the round's median, and with the
``accuracy`` detector the validation accuracy of ``w + δ_i`` against
``w + δ_{others}``), calibrates thresholds on the first rounds if asked,
drops flagged updates and lets the inner strategy aggregate the rest.  The
math is :mod:`fedsec.defenses.detection`.

Even with no detector enabled it records, per client and round, the statistics
the paper's tables report (cosine to the others, maximal L2 distance to the
benign updates) — the benign set there comes from the scenario's ground
truth and is used only for these records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.serverapp.strategy import Strategy

from fedsec.defenses.detection import (
    RoundStatistics,
    Thresholds,
    calibrate,
    cosine_to_others,
    flag,
    max_l2_to,
    norm_ratios,
)
from fedsec.errors import ConfigError
from fedsec.results import RunRecorder
from fedsec.updates import add_to
from strategies.batch import RoundBatch
from strategies.wrapper import FilteringStrategy, GroundTruth, NDArrays, Verdict

logger = logging.getLogger(__name__)

AccuracyFn = Callable[[NDArrays], float]


class DetectionStrategy(FilteringStrategy):
    """Flag and drop updates that fail the configured checks; record the statistics.

    Parameters
    ----------
    inner
        The strategy that aggregates the kept updates.
    detectors
        Enabled checks, a subset of ``("accuracy", "l2", "cosine")``.
    thresholds
        Thresholds set explicitly; the others are calibrated.
    calibration_rounds
        Rounds ``1..calibration_rounds`` only collect statistics (nothing is flagged).
    margin
        How much calibrated thresholds are widened (fraction of their value).
    drop
        Drop flagged updates (False: only flag and record them, to measure evasion).
    accuracy_fn
        Validation accuracy of a full model's weights (needed by ``accuracy``).
    recorder, truth
        As for :class:`~strategies.wrapper.FilteringStrategy`.
    """

    def __init__(
        self,
        *,
        inner: Strategy,
        detectors: tuple[str, ...],
        thresholds: Thresholds,
        calibration_rounds: int,
        margin: float,
        drop: bool = True,
        accuracy_fn: AccuracyFn | None = None,
        recorder: RunRecorder | None = None,
        truth: GroundTruth | None = None,
    ) -> None:
        super().__init__(inner=inner, name="detectors", recorder=recorder, truth=truth)
        if calibration_rounds < 0:
            raise ValueError(f"calibration_rounds must be >= 0, got {calibration_rounds}")
        if "accuracy" in detectors and accuracy_fn is None:
            raise ConfigError("the accuracy detector needs a server validation set: set validation-size > 0")
        missing = {
            "accuracy": thresholds.accuracy_gamma,
            "l2": thresholds.l2_ratio,
            "cosine": thresholds.cosine_gap,
        }
        unset = [d for d in detectors if missing[d] is None]
        if unset and calibration_rounds == 0:
            raise ConfigError(
                f"detectors {', '.join(unset)} have no threshold: set calibration-rounds > 0 "
                "or their thresholds (accuracy-gamma, l2-ratio-threshold, cosine-gap)"
            )
        self.detectors = detectors
        self.fixed = thresholds
        self.thresholds = thresholds if calibration_rounds == 0 else Thresholds()
        self.calibration_rounds = calibration_rounds
        self.margin = margin
        self.drop = drop
        self.accuracy_fn = accuracy_fn
        self._history: list[RoundStatistics] = []

    def checkpoint_state(self) -> dict[str, Any]:
        """The thresholds in force and the calibration rounds' statistics."""
        return {
            "thresholds": self.thresholds.as_dict(),
            "history": [
                {"cosine": h.cosine, "l2_ratio": h.l2_ratio, "accuracy_drop": h.accuracy_drop}
                for h in self._history
            ],
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        values = state["thresholds"]
        self.thresholds = Thresholds(
            accuracy_gamma=values["accuracy"], l2_ratio=values["l2"], cosine_gap=values["cosine"]
        )
        self._history = [
            RoundStatistics(cosine=h["cosine"], l2_ratio=h["l2_ratio"], accuracy_drop=h["accuracy_drop"])
            for h in state["history"]
        ]

    def statistics(self, batch: RoundBatch) -> RoundStatistics:
        """The round's update statistics (all from the batch's Gram matrix, except the accuracy check)."""
        deltas = batch.updates
        drops = None
        if "accuracy" in self.detectors and self.accuracy_fn is not None:
            drops = np.array([self._accuracy_drop(batch, i) for i in range(len(batch))])
        return RoundStatistics(
            cosine=cosine_to_others(deltas), l2_ratio=norm_ratios(deltas), accuracy_drop=drops
        )

    def _accuracy_drop(self, batch: RoundBatch, i: int) -> float:
        """Validation accuracy of ``w + mean(δ_others)`` minus that of ``w + δ_i``."""
        assert self.accuracy_fn is not None
        own = self.accuracy_fn(batch.weights(i))
        n = len(batch)
        if n == 1:
            return 0.0
        others = np.full(n, 1.0 / (n - 1))
        others[i] = 0.0
        mean = add_to(batch.reference, batch.updates.combine(others * batch.scales))
        return float(self.accuracy_fn(mean) - own)

    def select_batch(self, server_round: int, batch: RoundBatch) -> Verdict:
        labels = list(batch.labels)
        stats = self.statistics(batch)
        deltas = batch.updates
        norms = deltas.norms()
        benign = [i for i, label in enumerate(labels) if label not in self.truth.malicious]
        max_l2 = max_l2_to(deltas, benign)
        record: dict[str, Any] = {
            "update_stats": {
                label: {
                    "cosine": float(stats.cosine[i]),
                    "l2_ratio": float(stats.l2_ratio[i]),
                    "norm": float(norms[i]),
                    "max_l2_benign": float(max_l2[i]),
                    **(
                        {"accuracy_drop": float(stats.accuracy_drop[i])}
                        if stats.accuracy_drop is not None
                        else {}
                    ),
                }
                for i, label in enumerate(labels)
            }
        }
        if server_round <= self.calibration_rounds:
            self._history.append(stats)
            if server_round == self.calibration_rounds:
                self.thresholds = calibrate(self._history, margin=self.margin, fixed=self.fixed)
                logger.info("detectors calibrated after round %s: %s", server_round, self.thresholds)
            record["thresholds"] = self.thresholds.as_dict()
            return Verdict(kept=tuple(range(len(labels))), record=record)
        flagged = flag(stats, self.thresholds, self.detectors)
        record["thresholds"] = self.thresholds.as_dict()
        record["flagged_by"] = {labels[i]: sorted(reasons) for i, reasons in flagged.items()}
        if not self.drop:
            return Verdict(kept=tuple(range(len(labels))), record=record)
        return Verdict(
            kept=tuple(i for i in range(len(labels)) if i not in flagged),
            dropped={i: "; ".join(reasons.values()) for i, reasons in flagged.items()},
            record=record,
        )
