"""A FedAvg base for strategies that aggregate update vectors ``δ_i = w_i − w_global`` themselves.

FoolsGold and FLAME replace FedAvg's weighted mean with their own math on the
flattened updates; this base (Flower's Message-API ``FedAvg``) tracks the global
model the clients started from, decodes a round's replies into client labels
and an ``(n, d)`` update matrix, and turns an aggregated update back into an
``ArrayRecord`` and the kept clients' aggregated metrics.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies.batch import RoundBatch, batch_from_replies
from strategies.wrapper import ServerEnv


class UpdateAggregator(FedAvg):
    """FedAvg that hands subclasses the round's update matrix instead of the raw replies.

    Parameters
    ----------
    env
        Run record and ground truth (for the records only).
    **kwargs
        Flower ``FedAvg`` arguments.
    """

    def __init__(self, *, env: ServerEnv | None = None, **kwargs: Any) -> None:
        if env is not None and not isinstance(env, ServerEnv):
            raise ValueError(f"env must be a ServerEnv, got {type(env).__name__}")
        super().__init__(**kwargs)
        self.env = env or ServerEnv()
        self.global_arrays: list[np.ndarray] | None = None
        self.global_keys: list[str] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.global_keys = list(arrays.keys())
        self.global_arrays = arrays.to_numpy_ndarrays()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode the replies into a batch (what the guard does once for every strategy) and aggregate it."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        if self.global_arrays is None or self.global_keys is None:
            raise RuntimeError("configure_train must run before aggregate_train (no global model yet)")
        batch = batch_from_replies(valid, reference=self.global_arrays, keys=self.global_keys)
        return self.aggregate_batch(server_round, batch)

    @abstractmethod
    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the round's update matrix ``batch.updates`` (rows ``w_i − w_global``)."""

    def new_global(
        self, batch: RoundBatch, update: np.ndarray, kept: Sequence[int]
    ) -> tuple[ArrayRecord, MetricRecord]:
        """``reference + update`` as an ``ArrayRecord``, and the kept clients' aggregated metrics."""
        contents = batch.contents()
        return batch.apply(update), self.train_metrics_aggr_fn(
            [contents[i] for i in kept], self.weighted_by_key
        )
