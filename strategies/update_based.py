"""A FedAvg base for strategies that aggregate update vectors ``δ_i = w_i − w_global`` themselves.

FoolsGold and FLAME replace FedAvg's weighted mean with their own math on the
flattened updates; this base (Flower's Message-API ``FedAvg``) tracks the global
model the clients started from, decodes a round's replies into client labels
and an ``(n, d)`` update matrix, and turns an aggregated update back into an
``ArrayRecord`` and the kept clients' aggregated metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedsec.attacks.poisoning import apply_update, flat_update
from strategies.messages import client_label, ndarrays_of, to_arrayrecord
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

    def round_updates(
        self, replies: Iterable[Message]
    ) -> tuple[list[np.ndarray], list[Message], list[str], np.ndarray] | None:
        """``(global weights, valid replies, client labels, (n, d) updates)``; None without valid replies."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None
        if self.global_arrays is None:
            raise RuntimeError("configure_train must run before aggregate_train (no global model yet)")
        reference = self.global_arrays
        labels = [client_label(msg) for msg in valid]
        deltas = np.stack([flat_update(ndarrays_of(msg), reference) for msg in valid])
        return reference, valid, labels, deltas

    def new_global(
        self, reference: list[np.ndarray], update: np.ndarray, valid: list[Message], kept: Sequence[int]
    ) -> tuple[ArrayRecord, MetricRecord]:
        """``reference + update`` as an ``ArrayRecord``, and the kept clients' aggregated metrics."""
        arrays = to_arrayrecord(apply_update(reference, update), self.global_keys)
        metrics = self.train_metrics_aggr_fn([valid[i].content for i in kept], self.weighted_by_key)
        return arrays, metrics
