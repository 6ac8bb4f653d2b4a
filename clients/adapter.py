"""The one adapter between Flower's Message API and fedsec's ``NumPyClient`` subclasses.

fedsec's clients (benign, FDA³ device, DiPSeN, the malicious roles, the edge
defense) are ``NumPyClient`` subclasses: ``fit(parameters, config)`` and
``evaluate(parameters, config)`` on lists of numpy arrays.  A ClientApp built
with ``@app.train()`` / ``@app.evaluate()`` receives ``Message`` objects; these
functions turn a train or evaluate message into the client's call and its
result into the reply:

* ``msg.content["arrays"]`` (an ``ArrayRecord``) → ``parameters``;
* ``msg.content["config"]`` (a ``ConfigRecord``) → ``config``;
* the returned arrays → an ``ArrayRecord`` under the same keys as the ones received;
* the returned metrics (numbers only) plus ``num-examples`` (and, for a train
  reply, ``fit-seconds``: the seconds ``fit`` took) → a ``MetricRecord``.

:func:`partition_reply` answers the server's ``partition-id`` query (the
seeded sampler orders nodes by it) without building a client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient

from fedsec.protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    FIT_SECONDS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    PARTITION_KEY,
)

__all__ = ["evaluate_reply", "message_config", "message_parameters", "partition_reply", "train_reply"]

logger = logging.getLogger(__name__)


def message_parameters(msg: Message) -> tuple[list[np.ndarray], list[str]]:
    """The global model a train/evaluate message carries, and its array keys."""
    records = msg.content.array_records
    if not records:
        raise ValueError(f"the {msg.metadata.message_type} message carries no ArrayRecord")
    record: ArrayRecord = records[ARRAYS_KEY] if ARRAYS_KEY in records else next(iter(records.values()))
    return record.to_numpy_ndarrays(), list(record.keys())


def message_config(msg: Message) -> dict[str, Any]:
    """The message's config record as a plain dict (empty if it carries none)."""
    records = msg.content.config_records
    if not records:
        return {}
    record = records[CONFIG_KEY] if CONFIG_KEY in records else next(iter(records.values()))
    return dict(record.items())


def _metric_record(metrics: Mapping[str, Any], num_examples: int) -> MetricRecord:
    """Numbers (and lists of numbers) of ``metrics``, plus ``num-examples``."""
    kept: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float):
            kept[key] = value
        else:
            logger.debug("metric %r (%s) is not a number and is not sent", key, type(value).__name__)
    kept[NUM_EXAMPLES_KEY] = int(num_examples)
    return MetricRecord(kept)


def train_reply(client: NumPyClient, msg: Message) -> Message:
    """Run ``client.fit`` on a train message and build its reply."""
    parameters, keys = message_parameters(msg)
    started = time.perf_counter()
    weights, num_examples, metrics = client.fit(parameters, message_config(msg))
    metrics = {**metrics, FIT_SECONDS_KEY: time.perf_counter() - started}
    if len(keys) == len(weights):
        arrays = ArrayRecord({k: Array(np.asarray(w)) for k, w in zip(keys, weights, strict=True)})
    else:  # the server's guard rejects it (wrong number of arrays), with the reason in the records
        arrays = ArrayRecord([np.asarray(w) for w in weights])
    content = RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: _metric_record(metrics, num_examples)})
    return Message(content=content, reply_to=msg)


def evaluate_reply(client: NumPyClient, msg: Message) -> Message:
    """Run ``client.evaluate`` on an evaluate message and build its reply (``loss`` among the metrics)."""
    parameters, _ = message_parameters(msg)
    loss, num_examples, metrics = client.evaluate(parameters, message_config(msg))
    record = _metric_record({"loss": float(loss), **metrics}, num_examples)
    return Message(content=RecordDict({METRICS_KEY: record}), reply_to=msg)


def partition_reply(partition_id: int, msg: Message) -> Message:
    """Answer the server's ``partition-id`` query."""
    return Message(
        content=RecordDict({METRICS_KEY: MetricRecord({PARTITION_KEY: partition_id})}), reply_to=msg
    )
