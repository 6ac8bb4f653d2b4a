"""Stand-ins for Flower's server-side plumbing, for in-process tests (no Ray, no SuperLink).

* :func:`train_reply` / :func:`error_reply` build the reply messages a
  strategy's ``aggregate_train`` receives;
* :class:`FakeGrid` (:class:`simulations.local_grid.LocalGrid`) is a ``Grid``
  whose nodes are Python callables: it delivers each message to its node's
  handler (a ClientApp function, a fake) in process, so
  ``strategy.start(grid=FakeGrid(...))`` runs Flower's own round loop against
  real client code;
* :func:`node_context` builds the ``Context`` a ClientApp function receives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from simulations.local_grid import LocalGrid, partition_handler

__all__ = ["FakeGrid", "partition_handler"]


def instruction(node_id: int, message_type: str = "train") -> Message:
    """A message as the server sends it to ``node_id``."""
    return Message(RecordDict({"config": ConfigRecord()}), dst_node_id=node_id, message_type=message_type)


def arrays_record(arrays: list[np.ndarray] | ArrayRecord, keys: list[str] | None = None) -> ArrayRecord:
    if isinstance(arrays, ArrayRecord):
        return arrays
    if keys is None:
        return ArrayRecord([np.asarray(a) for a in arrays])
    return ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(keys, arrays, strict=True)})


def train_reply(
    pid: int | None,
    arrays: list[np.ndarray] | ArrayRecord,
    num_examples: Any = 10,
    *,
    node_id: int | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Message:
    """The reply of client ``pid`` (node ``1000 + pid`` unless given) carrying ``arrays``."""
    node = node_id if node_id is not None else 1000 + (pid or 0)
    record: dict[str, Any] = {"num-examples": num_examples, **(metrics or {})}
    if pid is not None:
        record["partition-id"] = pid
    content = RecordDict({"arrays": arrays_record(arrays), "metrics": MetricRecord(record)})
    return Message(content=content, reply_to=instruction(node))


def error_reply(
    node_id: int, reason: str = "boom", code: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
) -> Message:
    """An error reply from ``node_id`` (what Flower delivers for a client that raised or timed out)."""
    return Message(Error(code=code, reason=reason), reply_to=instruction(node_id))


def node_context(run_config: Mapping[str, Any], partition_id: int, num_partitions: int) -> Context:
    """The ``Context`` a ClientApp function receives on simulated node ``partition_id``."""
    return Context(
        run_id=1,
        node_id=5000 + partition_id,
        node_config={"partition-id": partition_id, "num-partitions": num_partitions},
        state=RecordDict(),
        run_config=dict(run_config),
    )


FakeGrid = LocalGrid


def partition_grid(n: int) -> FakeGrid:
    """``n`` nodes (ids ``1000 + i``) that answer the partition query with ``i``."""
    return FakeGrid({1000 + i: partition_handler(i) for i in range(n)})


def configure(
    strategy: Any, server_round: int, arrays: list[np.ndarray], *, nodes: int = 10
) -> list[Message]:
    """``strategy.configure_train`` of ``arrays`` to a grid of ``nodes`` partition-answering nodes."""
    grid = partition_grid(nodes)
    return list(strategy.configure_train(server_round, ArrayRecord(list(arrays)), ConfigRecord(), grid))


def aggregate(strategy: Any, server_round: int, replies: Iterable[Message]) -> list[np.ndarray] | None:
    """``strategy.aggregate_train`` of ``replies`` as numpy arrays (``None``: no new model)."""
    arrays, _ = strategy.aggregate_train(server_round, list(replies))
    return None if arrays is None else arrays.to_numpy_ndarrays()


def app_nodes(run_config: Mapping[str, Any], n: int, *, first_node: int = 7000) -> dict[int, Any]:
    """``n`` nodes running fedsec's ClientApp in process, partition ``i`` on node ``first_node + i``."""
    from simulations.client_app import app

    def node(context: Context) -> Any:
        return lambda msg: app(msg, context)

    return {first_node + i: node(node_context(run_config, i, n)) for i in range(n)}


def server_context(run_config: Mapping[str, Any]) -> Context:
    """The ``Context`` the ServerApp receives for ``run_config``."""
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config))
