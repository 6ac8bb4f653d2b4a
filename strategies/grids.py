"""Grid wrappers: a delegating base, and replies collected as soon as they land.

Flower's ``Grid.send_and_receive`` pushes a round's messages and then pulls
the replies in a loop that sleeps a fixed interval between pulls: 0.1 s in
the simulation engine's ``InMemoryGrid`` and **3 s** in the ``HttpGrid`` a
ServerApp gets under the deployment engine, so a deployed round lasts a whole
number of 3-second sleeps however fast the clients are.  :class:`PollingGrid`
pulls with a short interval that grows while nothing arrives (2 ms, × 1.5 up
to 0.1 s, so never slower than the simulation engine's) and starts short
again after each reply, through the grid's own ``push_messages`` and
``pull_messages``.  (Under the deployment engine the SuperNodes' own 3-second
pull loop still sets the pace; that one is Flower's.)  :class:`DelegatingGrid` forwards every
``Grid`` method to a wrapped grid; :class:`~strategies.sampling.GridView`
builds on it too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedsec.numbers import is_real

__all__ = ["DelegatingGrid", "PollingGrid"]


class DelegatingGrid(Grid):
    """``grid`` itself: every ``Grid`` method forwards to it (a base for wrappers that change one)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.grid.send_and_receive(messages, timeout=timeout)


class PollingGrid(DelegatingGrid):
    """``grid`` whose :meth:`send_and_receive` returns within a few milliseconds of the last reply.

    Parameters
    ----------
    grid
        The ServerApp's grid.
    first
        Seconds of the first sleep after a pull that brought no reply (> 0).
    longest
        The longest sleep between two pulls (>= ``first``).
    growth
        Factor (>= 1) by which the sleep grows after each pull that brought nothing.
    clock, sleep
        The time source and the sleep (the tests pass a simulated clock).

    Raises
    ------
    ValueError
        If an interval or the growth factor is out of range (naming it).
    """

    def __init__(
        self,
        grid: Grid,
        *,
        first: float = 0.002,
        longest: float = 0.1,
        growth: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(grid)
        for name, value in (("first", first), ("longest", longest), ("growth", growth)):
            if not is_real(value) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if first <= 0:
            raise ValueError(f"first must be > 0, got {first!r}")
        if longest < first:
            raise ValueError(f"longest must be >= first ({first}), got {longest!r}")
        if growth < 1:
            raise ValueError(f"growth must be >= 1, got {growth!r}")
        self.first, self.longest, self.growth = float(first), float(longest), float(growth)
        self._clock, self._sleep = clock, sleep

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``, then pull until every one is answered or ``timeout`` seconds have passed.

        Like Flower's: the replies that arrived (in arrival order), without the
        ones still missing at the timeout; ``None`` waits for all.
        """
        pending = set(self.grid.push_messages(messages))
        deadline = None if timeout is None else self._clock() + timeout
        replies: list[Message] = []
        wait = self.first / self.growth  # the first sleep is `first`
        while pending:
            arrived = list(self.grid.pull_messages(pending))
            replies.extend(arrived)
            pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
            if not pending:
                break
            wait = self.first if arrived else min(wait * self.growth, self.longest)
            if deadline is not None:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                wait = min(wait, remaining)
            self._sleep(wait)
        return replies
