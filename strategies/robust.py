"""FedAvg and the robust aggregators on the round's update matrix (Message-API ``FedAvg`` subclasses).

:class:`MatrixFedAvg`, :class:`MatrixKrum` (Krum and Multi-Krum),
:class:`MatrixMedian`, :class:`MatrixTrimmedAvg` and :class:`MatrixBulyan`
compute what Flower's ``FedAvg``, ``Krum``/``MultiKrum``, ``FedMedian``,
``FedTrimmedAvg`` and ``Bulyan`` compute (tests compare them on the same
replies), but on the batch the update guard decoded once
(:mod:`strategies.batch`, math in :mod:`fedsec.robust`): no second decode, no
per-array Python loops, distances from one Gram matrix, coordinate-wise rules
in :func:`server_threads` threads.  Used without the guard
they decode the replies themselves.  fedsec's registry names them ``fedavg``,
``krum``, ``multikrum``, ``fedmedian``, ``fedtrimmedavg`` and ``bulyan``;
Flower's own stay available as ``flower-<name>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedsec.robust import bulyan, coordinate_median, multikrum_select, trimmed_mean
from strategies.batch import RoundBatch, batch_from_replies

__all__ = ["MatrixBulyan", "MatrixFedAvg", "MatrixKrum", "MatrixMedian", "MatrixTrimmedAvg", "server_threads"]


def server_threads() -> int:
    """The threads the coordinate-wise rules may use: torch's intra-op count, which the ServerApp sets
    from ``torch-threads`` (and ``fedsec bench`` per row)."""
    return max(1, torch.get_num_threads())


class MatrixFedAvg(FedAvg):
    """FedAvg on the batch: ``w + Σ_i (n_i / Σ n) · s_i · δ_i`` in one matrix–vector product.

    Parameters
    ----------
    **kwargs
        Flower ``FedAvg`` arguments.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sent: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        if self._sent is None:
            raise RuntimeError("configure_train must run before aggregate_train (no global model yet)")
        batch = batch_from_replies(
            valid, reference=self._sent.to_numpy_ndarrays(), keys=list(self._sent.keys())
        )
        return self.aggregate_batch(server_round, batch)

    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        weights = batch.counts / batch.counts.sum() * batch.scales
        return batch.apply(batch.updates.combine(weights)), self.metrics(batch, range(len(batch)))

    def metrics(self, batch: RoundBatch, positions: Iterable[int]) -> MetricRecord:
        """The aggregated metrics of the replies at ``positions``."""
        contents = batch.contents()
        return self.train_metrics_aggr_fn([contents[i] for i in positions], self.weighted_by_key)


def _check_count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class MatrixKrum(MatrixFedAvg):
    """Krum (``num_nodes_to_select = 1``) or Multi-Krum: FedAvg of the lowest-scoring updates.

    Parameters
    ----------
    num_malicious_nodes
        ``f``, the number of Byzantine clients assumed.
    num_nodes_to_select
        How many lowest-scoring updates are averaged (1: Krum).
    **kwargs
        Flower ``FedAvg`` arguments.
    """

    def __init__(self, *, num_malicious_nodes: int = 0, num_nodes_to_select: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_malicious_nodes = _check_count("num_malicious_nodes", num_malicious_nodes, 0)
        self.num_nodes_to_select = _check_count("num_nodes_to_select", num_nodes_to_select, 1)

    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        chosen = multikrum_select(batch.scaled_updates(), self.num_malicious_nodes, self.num_nodes_to_select)
        weights = np.zeros(len(batch))
        weights[chosen] = batch.counts[chosen] / batch.counts[chosen].sum() * batch.scales[chosen]
        return batch.apply(batch.updates.combine(weights)), self.metrics(batch, chosen.tolist())


class MatrixMedian(MatrixFedAvg):
    """FedMedian: the coordinate-wise median of the clients' models."""

    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        update = coordinate_median(batch.scaled_updates(), threads=server_threads())
        return batch.apply(update), self.metrics(batch, range(len(batch)))


class MatrixTrimmedAvg(MatrixFedAvg):
    """FedTrimmedAvg: the coordinate-wise mean after cutting ``int(beta · n)`` values from each end.

    Parameters
    ----------
    beta
        The fraction cut from each end, in ``[0, 0.5)``.
    **kwargs
        Flower ``FedAvg`` arguments.
    """

    def __init__(self, *, beta: float = 0.2, **kwargs: Any) -> None:
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0.0 <= beta < 0.5:
            raise ValueError(f"beta must be a number in [0, 0.5), got {beta!r}")
        super().__init__(**kwargs)
        self.beta = float(beta)

    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        update = trimmed_mean(batch.scaled_updates(), self.beta, threads=server_threads())
        return batch.apply(update), self.metrics(batch, range(len(batch)))


class MatrixBulyan(MatrixFedAvg):
    """Bulyan: Multi-Krum keeps ``n − 2f`` updates, then a trimmed mean around their coordinate median.

    A round with fewer than ``4f + 3`` updates keeps the previous model, as Flower's Bulyan does.
    """

    def __init__(self, *, num_malicious_nodes: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_malicious_nodes = _check_count("num_malicious_nodes", num_malicious_nodes, 0)

    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if len(batch) < 4 * self.num_malicious_nodes + 3:
            return None, None
        update = bulyan(batch.scaled_updates(), self.num_malicious_nodes, threads=server_threads())
        return batch.apply(update), self.metrics(batch, range(len(batch)))
