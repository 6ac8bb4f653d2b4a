"""Reproducible node sampling over the grid's node ids, drawn from the run seed.

Flower's strategies sample with Python's global, unseeded ``random`` module
over node ids, which the simulation engine itself draws at random; two runs with
the same seed would train different clients in every round once
``fraction-train < 1``.  :class:`SeededSampler` fixes both:

* it orders the available nodes by their ``partition-id``, asked once per node
  with a Flower ``query`` message (every fedsec ClientApp answers it; nodes
  that do not are ordered after the others, by node id);
* its ``n``-th draw (``n = 0, 1, …``; one per round that samples a strict
  subset, plus one more per round for evaluation when that samples a subset)
  comes from ``random.Random(derive_seed(seed, SAMPLING_STREAM, n))``.

With ``malicious_per_round`` it also stratifies, as PDGAN's "three adversaries
per round": exactly that many of the round's clients come from the scenario's
malicious partitions and the rest from the benign ones.  That uses the
scenario's ground truth, so it is an experiment control, not a defense.

:class:`GridView` hands the chosen nodes to an inner strategy: it is the grid,
except that ``get_node_ids()`` returns only them, so any Flower strategy
(configured to train every node it sees) trains exactly the sample.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Collection, Iterable

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid

from fedsec.experiment import derive_seed
from fedsec.protocol import PARTITION_QUERY, QUERY_KEY
from strategies.grids import DelegatingGrid
from strategies.messages import CONFIG_KEY, PARTITION_KEY, integer_partition, metrics_of, partition_order

__all__ = [
    "PARTITION_QUERY",
    "SAMPLING_STREAM",
    "GridView",
    "NodeWaitError",
    "SeededSampler",
    "query_partitions",
    "wait_for_nodes",
]

logger = logging.getLogger(__name__)

#: Seed stream of the per-round client sample.
SAMPLING_STREAM = 0x5A3F


class NodeWaitError(RuntimeError):
    """The grid does not hold the nodes a run needs."""


def query_partitions(grid: Grid, node_ids: Iterable[int], *, timeout: float | None) -> dict[int, int | None]:
    """Ask every node in ``node_ids`` for its ``partition-id`` (one query message each).

    Nodes that answer with an error, do not answer within ``timeout`` or report
    no integer id map to ``None``.
    """
    nodes = list(node_ids)
    if not nodes:
        return {}
    messages = [
        Message(
            RecordDict({CONFIG_KEY: ConfigRecord({QUERY_KEY: PARTITION_QUERY})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    found: dict[int, int | None] = dict.fromkeys(nodes)
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            logger.warning("node %s did not report its partition-id: %s", node, reply.error.reason)
            continue
        value = metrics_of(reply).get(PARTITION_KEY)
        found[node] = integer_partition(value)
        if found[node] is None:
            logger.warning("node %s reported no integer partition-id (got %r)", node, value)
    return found


def wait_for_nodes(
    grid: Grid,
    *,
    expected: int | None,
    settle: float = 10.0,
    first_timeout: float = 120.0,
    poll: float = 0.5,
) -> list[int]:
    """The grid's node ids once the federation is ready.

    With ``expected``, return as soon as that many nodes are connected; fail
    (:class:`NodeWaitError`) if more are connected, or if fewer are and the
    count has not changed for ``settle`` seconds.  With ``expected=None``
    return every node once the count has been stable for ``settle`` seconds
    (a simulation registers all its nodes at once).  No node at all within
    ``first_timeout`` seconds also fails.
    """
    started = time.monotonic()
    last_count, last_change = -1, started
    while True:
        nodes = sorted(grid.get_node_ids())
        now = time.monotonic()
        if len(nodes) != last_count:
            last_count, last_change = len(nodes), now
        if expected is not None and len(nodes) == expected:
            return nodes
        if expected is not None and len(nodes) > expected:
            raise NodeWaitError(
                f"num-clients={expected} but the federation has {len(nodes)} nodes; "
                f"set num-clients={len(nodes)}, or num-clients=0 to use every node"
            )
        if not nodes:
            if now - started > first_timeout:
                raise NodeWaitError(f"no SuperNode connected within {first_timeout:.0f}s")
        elif now - last_change >= settle:
            if expected is None:
                return nodes
            raise NodeWaitError(
                f"num-clients={expected} but the federation has {len(nodes)} nodes (no change for "
                f"{settle:.0f}s): start {expected} SuperNodes, e.g. flwr run . --federation-config "
                f"'num-supernodes={expected}', or set num-clients=0 to use the {len(nodes)} there are"
            )
        time.sleep(poll)


class GridView(DelegatingGrid):
    """``grid``, except that :meth:`get_node_ids` returns only ``node_ids`` (a round's sample)."""

    def __init__(self, grid: Grid, node_ids: Collection[int]) -> None:
        super().__init__(grid)
        self.node_ids = list(node_ids)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return (NodeInfo(node_id=node_id) for node_id in self.node_ids)


class SeededSampler:
    """Draws each round's nodes as a pure function of the seed and the draw count.

    Parameters
    ----------
    seed
        The run seed.
    fraction_train, fraction_evaluate
        Fractions of the connected nodes sampled for training and for client-side
        evaluation (``ceil(fraction · n)``, at least 1; 0 for evaluation: none).
    malicious
        Partition ids (as strings, like :class:`~strategies.wrapper.GroundTruth`)
        of the scenario's malicious clients; only used with ``malicious_per_round``.
    malicious_per_round
        If set (>= 0), every sample that is smaller than the available pool
        holds exactly this many malicious clients.
    timeout
        Seconds to wait for the partition-id queries (``None``: no limit).
    """

    def __init__(
        self,
        *,
        seed: int,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 0.0,
        malicious: Collection[str] = (),
        malicious_per_round: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        for name, value, low_open in (
            ("fraction_train", fraction_train, True),
            ("fraction_evaluate", fraction_evaluate, False),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not ((0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0))
            ):
                interval = "(0, 1]" if low_open else "[0, 1]"
                raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
        if malicious_per_round is not None and (
            isinstance(malicious_per_round, bool)
            or not isinstance(malicious_per_round, int)
            or malicious_per_round < 0
        ):
            raise ValueError(
                f"malicious_per_round must be None or an integer >= 0, got {malicious_per_round!r}"
            )
        self.seed = seed
        self.fraction_train = float(fraction_train)
        self.fraction_evaluate = float(fraction_evaluate)
        self.malicious = frozenset(str(m) for m in malicious)
        self.malicious_per_round = malicious_per_round
        self.timeout = timeout
        #: ``{node id: partition id or None}`` of every node asked so far.
        self.partitions: dict[int, int | None] = {}
        #: Samples drawn so far (the next one is drawn from the stream of this index).
        self.draws = 0

    def __repr__(self) -> str:
        return (
            f"SeededSampler(seed={self.seed}, fraction_train={self.fraction_train}, "
            f"fraction_evaluate={self.fraction_evaluate}, malicious_per_round={self.malicious_per_round})"
        )

    def label(self, node_id: int) -> str:
        """The client label of ``node_id`` in records (its partition id once known)."""
        partition = self.partitions.get(node_id)
        return str(partition) if partition is not None else f"node-{node_id}"

    def resolve(self, grid: Grid, node_ids: Collection[int]) -> dict[int, int | None]:
        """Partition id of every node in ``node_ids`` (queried once per node, then cached)."""
        unknown = [node for node in node_ids if node not in self.partitions]
        if unknown:
            logger.info("asking %s nodes for their partition-id", len(unknown))
            self.partitions.update(query_partitions(grid, unknown, timeout=self.timeout))
        return {node: self.partitions.get(node) for node in node_ids}

    def ordered(self, grid: Grid, node_ids: Collection[int]) -> list[int]:
        """``node_ids`` sorted by partition id; nodes without one go last, by node id."""
        partitions = self.resolve(grid, node_ids)
        return sorted(node_ids, key=lambda node: partition_order(partitions[node], node))

    def sample(self, grid: Grid, *, evaluate: bool = False) -> list[int]:
        """This round's nodes for training (or, with ``evaluate``, for client-side evaluation)."""
        fraction = self.fraction_evaluate if evaluate else self.fraction_train
        available = sorted(grid.get_node_ids())
        if fraction == 0.0 or not available:
            return []
        wanted = max(1, math.ceil(fraction * len(available)))
        ordered = self.ordered(grid, available)  # also labels every node's replies and failures
        if wanted >= len(available):
            return available
        rng = random.Random(derive_seed(self.seed, SAMPLING_STREAM, self.draws))
        self.draws += 1
        if self.malicious_per_round is None:
            return rng.sample(ordered, wanted)
        return self._stratified(ordered, wanted, rng)

    def _stratified(self, ordered: list[int], wanted: int, rng: random.Random) -> list[int]:
        """``malicious_per_round`` malicious nodes and the rest benign (fewer if too few are left)."""
        assert self.malicious_per_round is not None
        bad = [node for node in ordered if str(self.partitions.get(node)) in self.malicious]
        good = [node for node in ordered if str(self.partitions.get(node)) not in self.malicious]
        k = min(self.malicious_per_round, len(bad), wanted)
        k = max(k, wanted - len(good))  # too few benign clients left: fill with malicious ones
        if k != self.malicious_per_round:
            logger.warning(
                "malicious-per-round=%s cannot be met from %s malicious and %s benign available clients; "
                "sampling %s malicious",
                self.malicious_per_round,
                len(bad),
                len(good),
                k,
            )
        return rng.sample(bad, k) + rng.sample(good, wanted - k)
