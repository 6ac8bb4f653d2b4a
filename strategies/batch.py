"""One round's decoded replies, shared by the guard, every defense and the aggregation.

The guard decodes each train reply once, keeps the well-formed ones, and builds
a :class:`RoundBatch`: the replies, their labels and sample counts, and the
updates as one float32 :class:`~fedsec.updates.UpdateMatrix` (``w − global``,
or the gradients themselves for FDA³).  A strategy that defines
``aggregate_batch(server_round, batch)`` works on that matrix; :func:`aggregate`
hands any other Message-API strategy (Flower's own) the replies instead.  So
each update is decoded once per round, and no defense copies the ``(n, d)``
matrix: selections are views (:meth:`RoundBatch.take`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from fedsec.updates import UpdateMatrix, add_to, flatten_updates
from strategies.messages import (
    NUM_EXAMPLES_KEY,
    client_label,
    metrics_of,
    reply_views,
    to_arrayrecord,
    with_content,
)

__all__ = ["RoundBatch", "aggregate", "batch_from_replies"]

NDArrays = list[np.ndarray]


@dataclass(frozen=True, eq=False)
class RoundBatch:
    """A round's usable replies and their updates (one row per reply, in the replies' order).

    Attributes
    ----------
    replies
        The reply messages.
    labels
        Each reply's client label (its ``partition-id``, else ``node-<id>``).
    counts
        Each reply's ``num-examples`` (after the guard's clamping), float64.
    updates
        The update rows: ``w − reference`` (or the replies' arrays when ``gradients``).
    reference
        The global model the clients started from.
    keys
        The ``ArrayRecord`` keys of the model's arrays.
    gradients
        Whether the replies carry gradients (FDA³) rather than weights.
    scales
        A factor per row applied by aggregation (a clipping defense's ``min(1, S/‖u‖)``); ones by default.
    """

    replies: tuple[Message, ...]
    labels: tuple[str, ...]
    counts: np.ndarray
    updates: UpdateMatrix
    reference: tuple[np.ndarray, ...]
    keys: tuple[str, ...]
    gradients: bool = False
    scales: np.ndarray = field(default_factory=lambda: np.ones(0))

    def __post_init__(self) -> None:
        n = len(self.replies)
        if not (len(self.labels) == self.updates.n == n == len(self.counts)):
            raise ValueError(f"a batch needs one label, count and update row per reply ({n})")
        if self.scales.size == 0:
            object.__setattr__(self, "scales", np.ones(n, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.replies)

    def take(self, positions: Sequence[int] | np.ndarray) -> RoundBatch:
        """The replies at ``positions``, in that order (a view of the same update matrix)."""
        index = np.asarray(positions, dtype=np.int64)
        return replace(
            self,
            replies=tuple(self.replies[i] for i in index),
            labels=tuple(self.labels[i] for i in index),
            counts=self.counts[index],
            updates=self.updates.take(index),
            scales=self.scales[index],
        )

    def scaled(self, factors: dict[int, float]) -> RoundBatch:
        """This batch with row ``i`` scaled by ``factors[i]`` in aggregation (the others unchanged)."""
        scales = self.scales.copy()
        for position, factor in factors.items():
            scales[position] *= factor
        return replace(self, scales=scales)

    def scaled_updates(self) -> UpdateMatrix:
        """The update rows with their scales applied (the batch's matrix itself when every scale is 1)."""
        if np.all(self.scales == 1.0):
            return self.updates
        rows = self.updates.array() * self.scales[:, np.newaxis].astype(self.updates.array().dtype)
        return UpdateMatrix(rows, checked=True)

    def weights(self, position: int) -> NDArrays:
        """Client ``position``'s full model (``reference + scale · update``); only for weight replies."""
        if self.gradients:
            raise ValueError("the replies carry gradients, not model weights")
        return add_to(self.reference, self.scales[position] * self.updates.row(position))

    def apply(self, update: np.ndarray) -> ArrayRecord:
        """``reference + update`` (a flat update over the float arrays) as an ``ArrayRecord``."""
        return to_arrayrecord(add_to(self.reference, update), list(self.keys))

    def contents(self) -> list[RecordDict]:
        """The replies' contents, with the counts the batch uses (for Flower's metric aggregation)."""
        out = []
        for msg, count in zip(self.replies, self.counts, strict=True):
            reported = metrics_of(msg).get(NUM_EXAMPLES_KEY)
            if reported == count:
                out.append(msg.content)
            else:
                record = MetricRecord(dict(metrics_of(msg).items()))
                record[NUM_EXAMPLES_KEY] = int(count)
                out.append(with_content(msg, metrics=record).content)
        return out

    def flower_replies(self) -> list[Message]:
        """The replies as a strategy without ``aggregate_batch`` must see them (scaled rows rebuilt)."""
        out = []
        for position, msg in enumerate(self.replies):
            if self.scales[position] != 1.0:
                msg = with_content(msg, arrays=to_arrayrecord(self.weights(position), list(self.keys)))
            if metrics_of(msg).get(NUM_EXAMPLES_KEY) != self.counts[position]:
                record = MetricRecord(dict(metrics_of(msg).items()))
                record[NUM_EXAMPLES_KEY] = int(self.counts[position])
                msg = with_content(msg, metrics=record)
            out.append(msg)
        return out


def batch_from_replies(
    replies: Iterable[Message],
    *,
    reference: Sequence[np.ndarray],
    keys: Sequence[str],
    gradients: bool = False,
) -> RoundBatch:
    """Decode ``replies`` (the ones without an error; at least one) into a batch.

    For strategies used without the guard, which otherwise builds the batch while it screens.
    """
    good = [msg for msg in replies if not msg.has_error()]
    if not good:
        raise ValueError("a batch needs at least one reply without an error")
    arrays = [reply_views(msg) for msg in good]
    rows = flatten_updates(arrays, None if gradients else reference)
    counts = np.array([_count(msg) for msg in good], dtype=np.float64)
    return RoundBatch(
        replies=tuple(good),
        labels=tuple(client_label(msg) for msg in good),
        counts=counts,
        updates=UpdateMatrix(rows),
        reference=tuple(np.asarray(a) for a in reference),
        keys=tuple(keys),
        gradients=gradients,
    )


def _count(msg: Message) -> float:
    value = metrics_of(msg).get(NUM_EXAMPLES_KEY)
    valid = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if valid else 1.0  # type: ignore[arg-type]


def aggregate(
    strategy: Strategy, server_round: int, batch: RoundBatch
) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """``strategy.aggregate_batch`` where it has one; else Flower's ``aggregate_train`` of the replies."""
    method = getattr(strategy, "aggregate_batch", None)
    if method is not None:
        result: tuple[ArrayRecord | None, MetricRecord | None] = method(server_round, batch)
        return result
    return strategy.aggregate_train(server_round, batch.flower_replies())
