"""Strategy wrappers: delegate to an inner Flower strategy, filter updates before it aggregates.

Cross-cutting defenses (the update guard, poisoning detectors, the GAN audit,
server-side distillation) wrap any inner strategy the way Flower's
differential-privacy wrappers do, instead of one subclass per combination.

* :class:`StrategyWrapper` forwards every ``Strategy`` method to ``inner`` and
  remembers the global model it last sent out (``global_arrays``).
* :class:`FilteringStrategy` decodes the round's updates, asks :meth:`select`
  which to keep (the defense's pure function), records kept and dropped
  clients with reasons and the detection counts against the scenario's ground
  truth, and lets ``inner`` aggregate what was kept.  Selection and aggregation
  stay separate steps.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedsec.defenses.detection import confusion
from fedsec.results import RunRecorder

logger = logging.getLogger(__name__)

FitResults = list[tuple[ClientProxy, FitRes]]
Failures = list[tuple[ClientProxy, FitRes] | BaseException]


def integer_partition(value: object) -> int | None:
    """A reported ``partition-id`` if it is an integer (not a bool), else ``None``."""
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def partition_order(partition: object, cid: str) -> tuple[int, int, str]:
    """Sort key for clients: by integer ``partition-id``; clients without one after them, by node id."""
    number = integer_partition(partition)
    return (0, number, cid) if number is not None else (1, 0, cid)


def client_label(proxy: ClientProxy, res: FitRes | EvaluateRes | None = None) -> str:
    """The id used in records: the client's ``partition-id`` metric, else Flower's node id."""
    if res is not None and "partition-id" in res.metrics:
        return str(res.metrics["partition-id"])
    return f"node-{proxy.cid}"


@dataclass(frozen=True)
class GroundTruth:
    """Which clients the scenario made malicious, and from which round they attack.

    Used only for the records (detection TP/FP/FN/TN, per-attacker statistics);
    no defense reads it to decide anything.
    """

    malicious: frozenset[str] = frozenset()
    start_round: int = 1

    def at(self, server_round: int) -> frozenset[str]:
        """The clients that attack in ``server_round``."""
        return self.malicious if server_round >= self.start_round else frozenset()


@dataclass(frozen=True)
class ServerEnv:
    """What the server side gives strategies besides the config and Flower's keyword arguments.

    Attributes
    ----------
    recorder
        The run record (per-round decisions go here); ``None`` only logs.
    truth
        The scenario's malicious clients, for detection counts only.
    accuracy_fn
        Validation accuracy of full model weights (accuracy detector), if the server holds a validation set.
    """

    recorder: RunRecorder | None = None
    truth: GroundTruth = field(default_factory=GroundTruth)
    accuracy_fn: Callable[[NDArrays], float] | None = None


class StrategyWrapper(Strategy):
    """Forward every call to ``inner``; remember the global model last sent to clients."""

    def __init__(self, *, inner: Strategy) -> None:
        if not isinstance(inner, Strategy):
            raise ValueError(f"inner must be a flwr Strategy, got {type(inner).__name__}")
        self.inner = inner
        self.global_arrays: NDArrays | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        parameters = self.inner.initialize_parameters(client_manager)
        if parameters is not None:
            self.global_arrays = parameters_to_ndarrays(parameters)
        return parameters

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self.global_arrays = parameters_to_ndarrays(parameters)
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self, server_round: int, results: FitResults, failures: Failures
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        return self.inner.aggregate_fit(server_round, results, failures)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.inner.evaluate(server_round, parameters)


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
    """Drop the updates :meth:`select` rejects, record why, and let ``inner`` aggregate the rest.

    Parameters
    ----------
    inner
        Any Flower strategy.
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

    @abstractmethod
    def select(self, server_round: int, labels: list[str], updates: list[NDArrays]) -> Verdict:
        """Decide which of this round's client weights (``updates``, full models) to keep."""

    def aggregate_fit(
        self, server_round: int, results: FitResults, failures: Failures
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if self.global_arrays is None:
            raise RuntimeError("configure_fit must run before aggregate_fit (no global model yet)")
        if not results:
            return self.inner.aggregate_fit(server_round, results, failures)
        labels = [client_label(proxy, res) for proxy, res in results]
        updates = [parameters_to_ndarrays(res.parameters) for _, res in results]
        verdict = self.select(server_round, labels, updates)
        self._record(server_round, labels, verdict)
        kept = [
            (results[i][0], self._scaled(results[i][1], updates[i], verdict.scales[i]))
            if i in verdict.scales
            else results[i]
            for i in verdict.kept
        ]
        if not kept:
            logger.warning(
                "round %s: %s dropped every update; keeping the previous model", server_round, self.name
            )
            return None, {}
        return self.inner.aggregate_fit(server_round, kept, failures)

    def _scaled(self, res: FitRes, weights: NDArrays, factor: float) -> FitRes:
        """``res`` carrying ``global + factor · (weights − global)`` (float arrays; others as sent)."""
        assert self.global_arrays is not None
        arrays = [
            (g + factor * (w.astype(np.float64) - g)).astype(w.dtype)
            if np.issubdtype(w.dtype, np.floating)
            else w
            for w, g in zip(weights, self.global_arrays, strict=True)
        ]
        return replace(res, parameters=ndarrays_to_parameters(arrays))

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
