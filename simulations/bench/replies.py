"""The synthetic replies the aggregation section times on: a model's arrays plus seeded noise, as Flower's
train replies, fresh copies of them per call, and the in-process grid strategies are configured on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from simulations.bench.common import MNIST_SHAPE, NUM_CLASSES

__all__ = ["bench_grid", "fresh_replies", "model_weights", "synthetic_replies"]


def model_weights(name: str) -> list[np.ndarray]:
    """The float32 arrays of model ``name`` on MNIST-shaped input (what clients send)."""
    from fedsec.models import build_model
    from fedsec.training import get_weights

    return get_weights(build_model(name, input_shape=MNIST_SHAPE, num_classes=NUM_CLASSES, seed=0))


def synthetic_replies(weights: Sequence[np.ndarray], n: int, *, seed: int) -> list[Message]:
    """``n`` seeded updates shaped like ``weights`` (global + small noise), as Flower's train replies."""
    from simulations.local_grid import set_local_identity

    set_local_identity()
    rng = np.random.default_rng(seed)
    replies: list[Message] = []
    for i in range(n):
        arrays = [
            (w + (rng.random(w.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(0.02)).astype(w.dtype)
            for w in weights
        ]
        metrics = MetricRecord({"num-examples": 30 + i % 7, "partition-id": i})
        instruction = Message(
            RecordDict({"config": ConfigRecord()}), dst_node_id=1000 + i, message_type="train"
        )
        content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics})
        replies.append(Message(content=content, reply_to=instruction))
    return replies


def fresh_replies(replies: Sequence[Message]) -> list[Message]:
    """Copies of ``replies`` whose records can be consumed (Flower's FedMedian, FedTrimmedAvg and
    Bulyan pop the arrays out of the replies they aggregate); the arrays' bytes are shared, not copied."""
    copies = []
    for msg in replies:
        records = {
            key: ArrayRecord(dict(record.items())) for key, record in msg.content.array_records.items()
        }
        content = RecordDict({**records, **dict(msg.content.metric_records.items())})
        copies.append(Message(content=content, metadata=msg.metadata))  # type: ignore[call-overload]
    return copies


def bench_grid(n: int) -> Any:
    """``n`` in-process nodes ``1000 + i`` that answer the partition query with ``i``."""
    from simulations.local_grid import LocalGrid, partition_handler

    return LocalGrid({1000 + i: partition_handler(i) for i in range(n)})
