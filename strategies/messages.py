"""Small helpers on Flower's Message API shared by every fedsec strategy.

A train reply carries one ``ArrayRecord`` (the client's model, or gradient for
FDA³) and one ``MetricRecord`` with ``num-examples`` and, for fedsec clients,
``partition-id``.  These helpers read them, name the client in the records,
and build modified copies of a reply (scaled or with a harmonised metric
record) without touching the original.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

__all__ = [
    "ARRAYS_KEY",
    "CONFIG_KEY",
    "METRICS_KEY",
    "NUM_EXAMPLES_KEY",
    "PARTITION_KEY",
    "array_view",
    "array_views",
    "arrays_of",
    "client_label",
    "describe_error",
    "integer_partition",
    "metrics_of",
    "ndarrays_of",
    "partition_order",
    "reply_partition",
    "reply_views",
    "to_arrayrecord",
    "with_content",
]

from fedsec.protocol import ARRAYS_KEY, CONFIG_KEY, METRICS_KEY, NUM_EXAMPLES_KEY, PARTITION_KEY


def integer_partition(value: object) -> int | None:
    """A reported ``partition-id`` if it is an integer (not a bool), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def partition_order(partition: object, node_id: int | str) -> tuple[int, int, str]:
    """Sort key for clients: by integer ``partition-id``; clients without one after them, by node id."""
    number = integer_partition(partition)
    return (0, number, str(node_id)) if number is not None else (1, 0, str(node_id))


def metrics_of(msg: Message) -> MetricRecord:
    """The reply's (first) ``MetricRecord``; an empty one if it has none."""
    if not msg.has_content():
        return MetricRecord()
    records = msg.content.metric_records
    return next(iter(records.values())) if records else MetricRecord()


def arrays_of(msg: Message) -> ArrayRecord | None:
    """The reply's (first) ``ArrayRecord``, or ``None``."""
    if not msg.has_content():
        return None
    records = msg.content.array_records
    return next(iter(records.values())) if records else None


def ndarrays_of(msg: Message) -> list[np.ndarray]:
    """The reply's arrays as numpy arrays, in record order (raises if it has none or they do not decode)."""
    record = arrays_of(msg)
    if record is None:
        raise ValueError("the reply carries no ArrayRecord")
    return record.to_numpy_ndarrays()


def array_view(array: Array) -> np.ndarray:
    """``array.numpy()`` without copying the values: a read-only view of the serialized bytes.

    Flower serializes a numpy array with ``np.save`` (``stype`` ``numpy.ndarray``):
    a ``.npy`` header, then the raw values.  For a C-ordered array of a plain
    dtype whose bytes are exactly header + values, the values are read in place.
    Anything else (another ``stype``, Fortran order, an object dtype, a malformed
    or truncated payload, trailing bytes) goes through Flower's ``Array.numpy()``,
    which decodes it the usual way or raises.
    """
    data = array.data
    if array.stype == "numpy.ndarray" and isinstance(data, bytes):
        stream = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                return array.numpy()
        except (ValueError, TypeError, SyntaxError):
            return array.numpy()
        count = math.prod(shape)
        offset = stream.tell()
        if not fortran_order and not dtype.hasobject and offset + count * dtype.itemsize == len(data):
            view = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
            return view  # bytes are immutable: the view is read-only
    return array.numpy()


def array_views(record: ArrayRecord) -> list[np.ndarray]:
    """Every array of ``record`` as :func:`array_view` gives it (read-only, values not copied), in order."""
    return [array_view(array) for array in record.values()]


def reply_views(msg: Message) -> list[np.ndarray]:
    """The reply's arrays as read-only views of its payload (:func:`array_views`; raises if it has none)."""
    record = arrays_of(msg)
    if record is None:
        raise ValueError("the reply carries no ArrayRecord")
    return array_views(record)


def reply_partition(msg: Message) -> int | None:
    """The ``partition-id`` the reply reports, or ``None``."""
    return integer_partition(metrics_of(msg).get(PARTITION_KEY))


def client_label(msg: Message) -> str:
    """The id used in records: the reply's ``partition-id``, else ``node-<src node id>``."""
    partition = reply_partition(msg)
    return str(partition) if partition is not None else f"node-{msg.metadata.src_node_id}"


def describe_error(msg: Message) -> str:
    """One line for an error reply (what Flower reports for a crashed or timed-out client)."""
    error = msg.error
    reason = (error.reason or "").strip().splitlines()
    return f"error code {error.code}: {reason[-1] if reason else 'no reason given'}"


def to_arrayrecord(arrays: Sequence[np.ndarray], keys: Sequence[str] | None = None) -> ArrayRecord:
    """An ``ArrayRecord`` of ``arrays``, under ``keys`` (default: Flower's ``"0", "1", …``)."""
    if keys is None:
        return ArrayRecord([np.asarray(a) for a in arrays])
    if len(keys) != len(arrays):
        raise ValueError(f"{len(keys)} keys for {len(arrays)} arrays")
    return ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(keys, arrays, strict=True)})


def with_content(
    msg: Message, *, arrays: ArrayRecord | None = None, metrics: MetricRecord | None = None
) -> Message:
    """A copy of reply ``msg`` (same metadata) whose array and/or metric record is replaced."""
    old = msg.content
    records: dict[str, ArrayRecord | MetricRecord] = {}
    for key, record in old.array_records.items():
        records[key] = arrays if arrays is not None else record
    for key, metric in old.metric_records.items():
        records[key] = metrics if metrics is not None else metric
    content = RecordDict({**records, **dict(old.config_records.items())})
    return Message(content=content, metadata=msg.metadata)  # type: ignore[call-overload]


def keys_of(records: Iterable[ArrayRecord]) -> list[list[str]]:
    """The key lists of several array records (for consistency checks)."""
    return [list(r.keys()) for r in records]
