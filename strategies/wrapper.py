"""Strategy wrappers on Flower's Message API: delegate to any inner strategy, filter replies first.

Cross-cutting defenses (the update guard, poisoning detectors, the GAN audit,
server-side distillation, the layered defense's server layer) wrap any
``flwr.serverapp.strategy.Strategy`` — Flower's own ``FedAvg``, ``FedMedian``,
``Krum``, … included — the way Flower's differential-privacy wrappers do,
instead of one subclass per combination.

* :class:`StrategyWrapper` forwards every ``Strategy`` method to ``inner`` and
  remembers the global model it last sent out (``global_arrays``).
* :class:`FilteringStrategy` decodes the round's train replies, asks
  :meth:`~FilteringStrategy.select` which to keep (the defense's pure
  function), records kept and dropped clients with reasons and the detection
  counts against the scenario's ground truth, and lets ``inner`` aggregate what
  was kept.  Selection and aggregation stay separate steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsec.defenses.detection import confusion
from fedsec.results import RunRecorder
from strategies.batch import RoundBatch, aggregate, batch_from_replies
from strategies.messages import to_arrayrecord

logger = logging.getLogger(__name__)

NDArrays = list[np.ndarray]


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The checkpoint state of ``strategy`` and of every strategy it wraps (``{"own": …, "inner": …}``).

    A strategy keeps state across rounds by defining ``checkpoint_state()`` and
    ``restore_state(state)``; Flower's own strategies keep none.
    """
    own = strategy.checkpoint_state() if hasattr(strategy, "checkpoint_state") else {}
    inner = getattr(strategy, "inner", None)
    return {"own": own, "inner": strategy_state(inner)} if isinstance(inner, Strategy) else {"own": own}


def restore_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    """Give ``strategy`` (and the strategies it wraps) back the state :func:`strategy_state` returned."""
    if hasattr(strategy, "restore_state"):
        strategy.restore_state(state.get("own", {}))
    inner = getattr(strategy, "inner", None)
    if isinstance(inner, Strategy) and "inner" in state:
        restore_strategy_state(inner, state["inner"])


def check_strategy(inner: object) -> Strategy:
    """``inner`` if it is a Message-API strategy; a ``ValueError`` that says what to use otherwise."""
    if isinstance(inner, Strategy):
        return inner
    if hasattr(inner, "aggregate_fit"):
        raise ValueError(
            f"inner is a legacy flwr.server.strategy {type(inner).__name__}; fedsec wraps strategies of "
            "Flower's Message API (flwr.serverapp.strategy, e.g. FedAvg(), Krum(), or a subclass)"
        )
    raise ValueError(f"inner must be a flwr.serverapp.strategy.Strategy, got {type(inner).__name__}")


@dataclass(frozen=True)
class GroundTruth:
    """Which clients the scenario made malicious, and in which rounds they attack.

    Used only for the records (detection TP/FP/FN/TN, per-attacker statistics);
    no defense reads it to decide anything.
    """

    malicious: frozenset[str] = frozenset()
    start_round: int = 1
    #: The last round they attack (0: to the end).
    end_round: int = 0

    def at(self, server_round: int) -> frozenset[str]:
        """The clients that attack in ``server_round``."""
        ended = self.end_round != 0 and server_round > self.end_round
        return self.malicious if server_round >= self.start_round and not ended else frozenset()


@dataclass(frozen=True)
class ServerEnv:
    """What the server side gives strategies besides their own keyword arguments.

    Attributes
    ----------
    recorder
        The run record (per-round decisions go here); ``None`` only logs.
    truth
        The scenario's malicious clients, for detection counts only.
    accuracy_fn
        Validation accuracy of full model weights (accuracy detector), if the server holds a validation set.
    initial_arrays
        The initial global model (FDA³'s server Adam starts from it).
    """

    recorder: RunRecorder | None = None
    truth: GroundTruth = field(default_factory=GroundTruth)
    accuracy_fn: Callable[[NDArrays], float] | None = None
    initial_arrays: NDArrays | None = None


class StrategyWrapper(Strategy):
    """Forward every call to ``inner``; remember the global model last sent to clients for training."""

    def __init__(self, *, inner: Strategy) -> None:
        self.inner = check_strategy(inner)
        #: The global model sent in the current round's ``configure_train``.
        self.global_arrays: NDArrays | None = None
        #: Its ``ArrayRecord`` keys (replies are rebuilt under the same keys).
        self.global_keys: list[str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def summary(self) -> None:
        logger.info("%r", self)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.global_keys = list(arrays.keys())
        self.global_arrays = arrays.to_numpy_ndarrays()
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def require_global(self) -> NDArrays:
        """The global model of this round (raises if ``configure_train`` did not run)."""
        if self.global_arrays is None:
            raise RuntimeError("configure_train must run before aggregate_train (no global model yet)")
        return self.global_arrays

    def as_record(self, arrays: NDArrays) -> ArrayRecord:
        """``arrays`` under this round's global keys."""
        return to_arrayrecord(arrays, self.global_keys)


@dataclass(frozen=True)
class Verdict:
    """What a defense decided about one round's updates (indices into the round's list).

    Attributes
    ----------
    kept
        Indices of the updates to aggregate.
    dropped
        ``{index: reason}`` of the updates left out.
    record
        Extra per-round fields for ``metrics.jsonl`` (keyed by client label).
    scales
        ``{index: factor}`` of kept updates to shrink before aggregation: the
        inner strategy receives ``global + factor · (weights − global)`` (e.g.
        norm clipping).  Kept updates not listed are passed on unchanged.
    """

    kept: tuple[int, ...]
    dropped: dict[int, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    scales: dict[int, float] = field(default_factory=dict)


class FilteringStrategy(StrategyWrapper):
    """Drop the replies :meth:`select` rejects, record why, and let ``inner`` aggregate the rest.

    Parameters
    ----------
    inner
        Any Message-API strategy.
    name
        The filter's name in the records (``kept[name]``, ``detection[name]``).
    recorder
        Where decisions go; ``None`` only logs them.
    truth
        The scenario's malicious clients, for detection counts only.
    """

    def __init__(
        self,
        *,
        inner: Strategy,
        name: str,
        recorder: RunRecorder | None = None,
        truth: GroundTruth | None = None,
    ) -> None:
        super().__init__(inner=inner)
        self.name = name
        self.recorder = recorder
        self.truth = truth or GroundTruth()

    def select(self, server_round: int, labels: list[str], updates: list[NDArrays]) -> Verdict:
        """Decide which of this round's client weights (``updates``, full models) to keep.

        A defense overrides this, or :meth:`select_batch` to work on the round's update matrix.
        """
        raise NotImplementedError(f"{type(self).__name__} defines neither select nor select_batch")

    def select_batch(self, server_round: int, batch: RoundBatch) -> Verdict:
        """Decide which of the batch's replies to keep; by default :meth:`select` on the full models."""
        return self.select(server_round, list(batch.labels), [batch.weights(i) for i in range(len(batch))])

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        reference = self.require_global()
        replies = list(replies)
        if not any(not msg.has_error() for msg in replies):
            return self.inner.aggregate_train(server_round, replies)
        batch = batch_from_replies(replies, reference=reference, keys=self.global_keys or [], gradients=False)
        return self.aggregate_batch(server_round, batch)

    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Select on the round's batch, record the verdict, and let ``inner`` aggregate what was kept."""
        verdict = self.select_batch(server_round, batch)
        labels = list(batch.labels)
        self._record(server_round, labels, verdict)
        if not verdict.kept:
            logger.warning(
                "round %s: %s dropped every update; keeping the previous model", server_round, self.name
            )
            return None, None
        positions = list(verdict.kept)
        kept = batch.take(positions).scaled(
            {k: verdict.scales[i] for k, i in enumerate(positions) if i in verdict.scales}
        )
        return aggregate(self.inner, server_round, kept)

    def _record(self, server_round: int, labels: list[str], verdict: Verdict) -> None:
        dropped = {labels[i]: reason for i, reason in verdict.dropped.items()}
        for label, reason in dropped.items():
            logger.warning("round %s: %s dropped client %s: %s", server_round, self.name, label, reason)
        counts = confusion(dropped, self.truth.at(server_round), labels)
        logger.info(
            "round %s: %s kept %s of %s (%s)", server_round, self.name, len(verdict.kept), len(labels), counts
        )
        if self.recorder is not None:
            self.recorder.note(
                server_round,
                kept={self.name: sorted((labels[i] for i in verdict.kept), key=_natural)},
                detection={self.name: counts},
                **({"dropped": dropped} if dropped else {}),
                **verdict.record,
            )


def _natural(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (1 << 30, label)


def labels_of(indices: Collection[int], labels: list[str]) -> list[str]:
    """The client labels at ``indices``, in natural order."""
    return sorted((labels[i] for i in indices), key=_natural)
