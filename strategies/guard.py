"""A wrapper that screens every client reply before the inner strategy sees it.

Every fedsec strategy is wrapped in :class:`GuardedStrategy` (the registry does
it), the way Flower wraps strategies for differential privacy; it wraps any
Message-API strategy just as well (``GuardedStrategy(inner=FedAvg())``).  Per
round it

* optionally draws the round's nodes from the run seed
  (:class:`~strategies.sampling.SeededSampler`) and hands the inner strategy a
  view of the grid holding only them;
* decodes each train reply and rejects the malformed ones with a logged reason:
  undecodable arrays, other array keys than the global model's, the wrong
  number, shape or dtype of arrays (:func:`fedsec.validation.screen_layout`),
  NaN/Inf (one dot product of the update's row with itself, which is also its
  squared norm), a ``num-examples`` that is not a positive integer, or a
  ``partition-id`` other than the node's; each update is read once, from a
  view of its payload, straight into its row of the round's matrix;
* counts the clients that failed (error replies: exceptions, timeouts) with
  their reasons;
* passes the well-formed replies to the inner strategy in a fixed order (by
  ``partition-id``, then node id), with metric records reduced to the keys all
  of them share (Flower's strategies refuse replies whose keys differ), so that
  the floating-point sums of the aggregation do not depend on the order in
  which the engine delivered them;
* keeps the previous global model when the inner aggregation raises or returns
  a non-finite model, and casts the aggregate back to the model's dtypes
  (integer buffers stay integers);
* writes every decision into the run record.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsec.numbers import is_real
from fedsec.protocol import EPSILON_KEY, FIT_SECONDS_KEY
from fedsec.results import RunRecorder
from fedsec.updates import UpdateMatrix, flatten_arrays, flatten_into, float_positions
from fedsec.validation import (
    ArraySpec,
    bounded_counts,
    finite_row,
    layout_of,
    norm_outliers,
    row_norms,
    screen_layout,
)
from strategies.batch import RoundBatch, aggregate
from strategies.messages import (
    NUM_EXAMPLES_KEY,
    array_views,
    arrays_of,
    client_label,
    describe_error,
    metrics_of,
    partition_order,
    reply_partition,
    with_content,
)
from strategies.sampling import GridView, SeededSampler
from strategies.wrapper import StrategyWrapper

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_EXAMPLES_BOUND", "DEFAULT_NORM_BOUND", "GuardedStrategy", "replies_are_gradients"]

#: An update may be at most this many times the round's median update norm (and the model's norm + 1).
DEFAULT_NORM_BOUND = 100.0
#: A reported ``num-examples`` above this many times the round's median is clamped to it.
DEFAULT_EXAMPLES_BOUND = 10.0


class GuardedStrategy(StrategyWrapper):
    """Screen replies for ``inner`` and record what was rejected and why.

    Parameters
    ----------
    inner
        Any Message-API strategy; it aggregates what the guard keeps.
    recorder
        Where per-round decisions go; ``None`` only logs them.
    sampler
        Draws each round's nodes from the run seed (``None``: the inner strategy samples).
    """

    def __init__(
        self,
        *,
        inner: Strategy,
        recorder: RunRecorder | None = None,
        sampler: SeededSampler | None = None,
        norm_bound: float | None = DEFAULT_NORM_BOUND,
        examples_bound: float | None = DEFAULT_EXAMPLES_BOUND,
        max_examples: int | None = None,
    ) -> None:
        super().__init__(inner=inner)
        if sampler is not None and not isinstance(sampler, SeededSampler):
            raise ValueError(f"sampler must be a SeededSampler or None, got {type(sampler).__name__}")
        for name, value in (("norm_bound", norm_bound), ("examples_bound", examples_bound)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 1
            ):
                raise ValueError(f"{name} must be None or a number > 1, got {value!r}")
        if max_examples is not None and (
            isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
        ):
            raise ValueError(f"max_examples must be None or an integer >= 1, got {max_examples!r}")
        self.recorder = recorder
        self.sampler = sampler
        self.norm_bound = None if norm_bound is None else float(norm_bound)
        self.examples_bound = None if examples_bound is None else float(examples_bound)
        self.max_examples = max_examples
        self.gradients = replies_are_gradients(inner)
        self._layout: tuple[ArraySpec, ...] | None = None
        self._sent: list[Message] = []
        self._buffer: np.ndarray | None = None  # the last round's update matrix, reused when free
        #: Added to the round numbers Flower's ``start`` passes in (see :meth:`resume_after`).
        self.round_offset = 0
        #: Rounds whose aggregation produced a new global model.
        self.aggregated_rounds = 0
        #: The first reason a client failed or an update was rejected ("" while none).
        self.first_problem = ""

    def __repr__(self) -> str:
        return f"GuardedStrategy({self.inner!r})"

    # ------------------------------------------------------------ resuming
    def checkpoint_state(self) -> dict[str, Any]:
        """The sampler's draw count and the run's aggregation tally."""
        return {
            "draws": self.sampler.draws if self.sampler is not None else 0,
            "aggregated_rounds": self.aggregated_rounds,
            "first_problem": self.first_problem,
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        if self.sampler is not None:
            self.sampler.draws = int(state.get("draws", 0))
        self.aggregated_rounds = int(state.get("aggregated_rounds", 0))
        self.first_problem = str(state.get("first_problem", ""))

    def resume_after(self, server_round: int) -> None:
        """Number the rounds Flower's ``start`` runs from ``server_round + 1`` on (a resumed run)."""
        if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 0:
            raise ValueError(f"server_round must be an integer >= 0, got {server_round!r}")
        self.round_offset = server_round

    # ------------------------------------------------------------ configure
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        config["server-round"] = server_round
        self.global_keys = list(arrays.keys())
        self.global_arrays = arrays.to_numpy_ndarrays()
        self._layout = layout_of(self.global_arrays)
        view = self._view(grid, evaluate=False)
        messages = list(self.inner.configure_train(server_round, arrays, config, view))
        self._sent = messages
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        config["server-round"] = server_round
        view = self._view(grid, evaluate=True)
        return self.inner.configure_evaluate(server_round, arrays, config, view)

    def _view(self, grid: Grid, *, evaluate: bool) -> Grid:
        if self.sampler is None:
            return grid
        return GridView(grid, self.sampler.sample(grid, evaluate=evaluate))

    # ------------------------------------------------------------- screening
    def node_of(self, reply: Message) -> int:
        """The node a reply answers for: the destination of the message it replies to.

        (An error the SuperLink raises for an unreachable node comes from the SuperLink itself.)
        """
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in self._sent if m.metadata.message_id}
        return sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def label(self, msg: Message) -> str:
        """The client's label: its partition id (from the sampler's map for error replies), else its node."""
        if not msg.has_error():
            return client_label(msg)
        if self.sampler is not None:
            return self.sampler.label(self.node_of(msg))
        return f"node-{self.node_of(msg)}"

    def screen(self, server_round: int, replies: Iterable[Message]) -> RoundBatch | None:
        """The round's usable replies, in partition order, decoded into one batch (``None``: none).

        Failures and rejections are logged and recorded with their reasons.
        """
        if self._layout is None or self.global_keys is None or self.global_arrays is None:
            raise RuntimeError("configure_train must run before aggregate_train (no model layout yet)")
        replies = list(replies)
        rejected: dict[str, str] = {}
        failed: dict[str, str] = {}
        answered = {self.node_of(msg) for msg in replies}
        for node in (m.metadata.dst_node_id for m in self._sent):
            if node not in answered:
                label = self.sampler.label(node) if self.sampler is not None else f"node-{node}"
                failed[label] = "no reply within the round timeout"
                logger.warning(
                    "round %s: client %s did not reply within the round timeout", server_round, label
                )
        positions = float_positions(self.global_arrays)
        width = sum(int(self.global_arrays[i].size) for i in positions)
        dtype = np.result_type(*[self.global_arrays[i].dtype for i in positions]) if positions else np.float32
        # In the order the aggregation uses, so that the rows need no reordering (a copy) afterwards.
        replies.sort(key=lambda m: partition_order(reply_partition(m), m.metadata.src_node_id))
        rows = self._matrix(len(replies), width, np.dtype(dtype))  # each update decoded straight into its row
        candidates: list[Message] = []
        squares: list[np.floating[Any]] = []  # each kept row's squared norm (inf where it overflows)
        for msg in replies:
            label = self.label(msg)
            if msg.has_error():
                failed[label] = describe_error(msg)
                logger.warning("round %s: client %s failed: %s", server_round, label, failed[label])
                continue
            reason, arrays = self._problem(msg)
            checked: str | np.floating[Any] = reason or ""
            if reason is None:
                row = rows[len(candidates)]
                flatten_into(row, arrays, None if self.gradients else self.global_arrays)
                checked = finite_row(row, arrays)
            if isinstance(checked, str):
                rejected[label] = checked
                continue
            candidates.append(msg)
            squares.append(checked)
        kept, counts, out_of_bounds, clamped = self._bounded(candidates, rows[: len(candidates)], squares)
        rejected.update(out_of_bounds)
        for label, reason in rejected.items():
            logger.warning("round %s: rejected update from client %s: %s", server_round, label, reason)
        for reason in (*failed.values(), *rejected.values()):
            self.first_problem = self.first_problem or reason
        labels = [client_label(candidates[i]) for i in kept]
        if self.recorder is not None:
            self.recorder.note(
                server_round,
                received=len(replies),
                accepted=labels,
                failures=len(failed),
                rejected=rejected,
                **({"failed": failed} if failed else {}),
                **({"clamped_examples": clamped} if clamped else {}),
            )
        if not kept:
            return None
        chosen = rows[kept] if kept != list(range(len(candidates))) else rows[: len(candidates)]
        return RoundBatch(
            replies=tuple(_common_metrics([candidates[i] for i in kept])),
            labels=tuple(labels),
            counts=np.array([counts[i] for i in kept], dtype=np.float64),
            updates=UpdateMatrix(chosen, checked=True),
            reference=tuple(self.global_arrays),
            keys=tuple(self.global_keys),
            gradients=self.gradients,
        )

    def _matrix(self, n: int, width: int, dtype: np.dtype) -> np.ndarray:
        """An ``(n, width)`` matrix for a round's updates: the last round's, when nothing holds it any more.

        Writing a 660 MB matrix (100 clients of a 1.66M-parameter model) into fresh memory costs
        the page faults of every page, each round; reusing the buffer does not.  It is reused only
        when no view of it is alive (every numpy view holds a reference to its base): a strategy
        that kept last round's updates keeps them intact.
        """
        buffer = self._buffer
        # references: self._buffer, `buffer` and getrefcount's argument; any more is a live view
        if (
            buffer is None
            or sys.getrefcount(buffer) > 3
            or buffer.shape[0] < n
            or buffer.shape[1] != width
            or buffer.dtype != dtype
        ):
            buffer = np.empty((n, width), dtype=dtype)
            self._buffer = buffer
        return buffer[:n]

    def _bounded(
        self, candidates: list[Message], rows: np.ndarray, squares: list[np.floating[Any]]
    ) -> tuple[list[int], list[int], dict[str, str], dict[str, list[int]]]:
        """Positions of the replies within the norm and sample-count bounds, every reply's count to use,
        the rejected and the clamped counts (``squares``: each row's squared norm from the screen)."""
        assert self.global_arrays is not None
        rejected: dict[str, str] = {}
        positions = list(range(len(candidates)))
        if self.norm_bound is not None and candidates:
            norms = row_norms(rows, squares)
            model = flatten_arrays(self.global_arrays)
            model_norm = UpdateMatrix(model[np.newaxis, :], checked=True).norms()[0] if model.size else 0.0
            outliers = norm_outliers(norms.tolist(), bound=self.norm_bound, model_norm=float(model_norm))
            rejected.update({client_label(candidates[i]): reason for i, reason in outliers.items()})
            positions = [i for i in positions if i not in outliers]
        counts = [int(cast(float, _count(msg))) for msg in candidates]  # screened: positive integers
        used, too_many, clamps = bounded_counts(
            [counts[i] for i in positions], bound=self.examples_bound, cap=self.max_examples
        )
        rejected.update({client_label(candidates[positions[k]]): r for k, r in too_many.items()})
        for k, value in enumerate(used):
            counts[positions[k]] = value
        clamped = {client_label(candidates[positions[k]]): list(pair) for k, pair in clamps.items()}
        kept = [i for k, i in enumerate(positions) if k not in too_many]
        return kept, counts, rejected, clamped

    def _problem(self, msg: Message) -> tuple[str | None, list[np.ndarray]]:
        """Why reply ``msg`` cannot be aggregated (``None``: it can), and its decoded arrays."""
        assert self._layout is not None and self.global_keys is not None
        record = arrays_of(msg)
        if record is None or len(msg.content.array_records) != 1:
            return "the reply must carry exactly one ArrayRecord", []
        if list(record.keys()) != self.global_keys:
            keys = _short(list(record.keys()))
            return f"array keys {keys} differ from the model's {_short(self.global_keys)}", []
        try:
            arrays = array_views(record)  # read-only views of the payload: written once, into the row
        except Exception as error:  # noqa: BLE001 - any undecodable payload is a rejection
            return f"arrays could not be decoded ({type(error).__name__}: {error})", []
        problem = screen_layout(arrays, self._layout)  # the values are checked once written into a row
        if problem is not None:
            return problem, []
        count = _count(msg)
        if isinstance(count, bool) or not isinstance(count, int | float) or not math.isfinite(count):
            return f"{NUM_EXAMPLES_KEY} must be a finite number, got {count!r}", []
        if count <= 0 or float(count) != int(count):
            return f"{NUM_EXAMPLES_KEY} must be a positive integer, got {count!r}", []
        if self.sampler is not None and msg.metadata.src_node_id in self.sampler.partitions:
            known = self.sampler.partitions[msg.metadata.src_node_id]
            reported = reply_partition(msg)
            if known is not None and reported != known:
                node = msg.metadata.src_node_id
                return f"reports partition-id {reported!r} but node {node} is partition {known}", []
        return None, arrays

    # ----------------------------------------------------------- aggregation
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        batch = self.screen(server_round, replies)
        if batch is None:
            logger.warning("round %s: no well-formed update; keeping the previous model", server_round)
            self._note(server_round, aggregated=False, reason="no well-formed update")
            return None, None
        kept = batch.replies
        try:
            arrays, metrics = aggregate(self.inner, server_round, batch)
        except Exception as error:  # noqa: BLE001 - a failed aggregation keeps the previous model
            reason = (
                f"{type(self.inner).__name__} could not aggregate {len(kept)} updates "
                f"({type(error).__name__}: {error})"
            )
            logger.error("round %s: %s; keeping the previous model", server_round, reason)
            self._note(server_round, aggregated=False, reason=reason)
            return None, None
        if arrays is None:
            self._note(
                server_round, aggregated=False, reason=f"{type(self.inner).__name__} returned no model"
            )
            return None, metrics
        checked, reason = self._checked_aggregate(arrays)
        if checked is None:
            logger.error("round %s: %s; keeping the previous model", server_round, reason)
            self._note(server_round, aggregated=False, reason=reason)
            return None, metrics
        self.aggregated_rounds += 1
        self._note(server_round, aggregated=True, extra={**privacy_spent(kept), **fit_seconds(kept)})
        return checked, metrics

    def _checked_aggregate(self, arrays: ArrayRecord) -> tuple[ArrayRecord | None, str]:
        """The aggregate cast to the model's dtypes, or ``None`` and why it cannot be the next model."""
        assert self._layout is not None and self.global_keys is not None
        if list(arrays.keys()) != self.global_keys:
            return None, "the aggregate's array keys differ from the model's"
        values = arrays.to_numpy_ndarrays()
        if len(values) != len(self._layout):
            return None, f"the aggregate has {len(values)} arrays, the model {len(self._layout)}"
        cast: list[np.ndarray] = []
        for index, (value, spec) in enumerate(zip(values, self._layout, strict=True)):
            if tuple(value.shape) != spec.shape:
                return None, f"aggregate array {index} has shape {value.shape}, expected {spec.shape}"
            if np.issubdtype(value.dtype, np.inexact) and not np.all(np.isfinite(value)):
                return None, f"aggregate array {index} is not finite"
            if value.dtype != spec.dtype:
                value = np.rint(value) if np.issubdtype(spec.dtype, np.integer) else value
                value = value.astype(spec.dtype)
            cast.append(value)
        return self.as_record(cast), ""

    def _note(
        self, server_round: int, *, aggregated: bool, reason: str = "", extra: dict[str, float] | None = None
    ) -> None:
        if not aggregated:
            self.first_problem = self.first_problem or reason
        if self.recorder is not None:
            fields: dict[str, Any] = {"aggregated": aggregated, **(extra or {})}
            if reason:
                fields["aggregation_error"] = reason
            self.recorder.note(server_round, **fields)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        replies = list(replies)
        good = _common_metrics([msg for msg in replies if not msg.has_error()])
        for msg in replies:
            if msg.has_error():
                logger.warning(
                    "round %s: client %s failed to evaluate: %s",
                    server_round,
                    self.label(msg),
                    describe_error(msg),
                )
        if not good:
            return None
        try:
            return self.inner.aggregate_evaluate(server_round, good)
        except Exception as error:  # noqa: BLE001 - client-side evaluation is informative only
            logger.error(
                "round %s: client evaluation not aggregated (%s: %s)",
                server_round,
                type(error).__name__,
                error,
            )
            return None


def replies_are_gradients(strategy: Strategy) -> bool:
    """Whether the innermost strategy under ``strategy`` aggregates gradients (FDA³), not weights."""
    while isinstance(getattr(strategy, "inner", None), Strategy):
        strategy = strategy.inner  # type: ignore[attr-defined]
    return getattr(strategy, "REPLIES", "weights") == "gradients"


def _count(msg: Message) -> object:
    return metrics_of(msg).get(NUM_EXAMPLES_KEY)


def _common_metrics(replies: list[Message]) -> list[Message]:
    """``replies`` with metric records reduced to the keys every one of them has (lists dropped)."""
    if not replies:
        return replies
    records = [metrics_of(msg) for msg in replies]
    common = set.intersection(*(set(r.keys()) for r in records))
    common = {k for k in common if all(not isinstance(r[k], list) for r in records)}
    out = []
    for msg, record in zip(replies, records, strict=True):
        if set(record.keys()) == common and len(msg.content.metric_records) == 1:
            out.append(msg)
        else:
            out.append(with_content(msg, metrics=MetricRecord({k: record[k] for k in sorted(common)})))
    return out


def _short(keys: list[str]) -> str:
    return str(keys) if len(keys) <= 4 else f"[{', '.join(keys[:3])}, … ({len(keys)} keys)]"


def privacy_spent(replies: Iterable[Message]) -> dict[str, float]:
    """``{"dp_epsilon": ε}``, the largest ε any aggregated client reports spent so far (DP-SGD), else ``{}``.

    A DP-SGD client (:mod:`clients.dipsen`) reports its cumulative ``dp-epsilon``
    with every update; the round's guarantee is that of its least private client.
    """
    spent = [float(value) for reply in replies if is_real(value := metrics_of(reply).get(EPSILON_KEY))]
    return {"dp_epsilon": max(spent)} if spent else {}


def fit_seconds(replies: Iterable[Message]) -> dict[str, float]:
    """``{"fit_seconds": s}``, the seconds the aggregated clients report spending in ``fit``, summed.

    What the clients computed, against which a round's wall time shows what the engine and the
    server added (``fedsec bench``); informational, so a missing or nonsensical value counts 0.
    """
    reported = [metrics_of(reply).get(FIT_SECONDS_KEY) for reply in replies]
    spent = [float(value) for value in reported if is_real(value) and math.isfinite(value) and value >= 0]
    return {"fit_seconds": round(sum(spent), 4)} if spent else {}
