"""PollingGrid collects replies as they land (simulated clock), honours the timeout, checks its options."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from strategies.grids import PollingGrid
from tests.flower_fakes import FakeGrid, instruction, partition_handler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


class SlowGrid(FakeGrid):
    """A grid whose node ``1000 + i`` answers ``ready[i]`` seconds after the push (None: never)."""

    def __init__(self, ready: list[float | None], clock: Clock) -> None:
        super().__init__({1000 + i: partition_handler(i) for i in range(len(ready))})
        self.ready = ready
        self.clock = clock
        self.pulls = 0
        self.pushed_at = 0.0

    def push_messages(self, messages):
        self.pushed_at = self.clock.time()
        return super().push_messages(messages)

    def pull_messages(self, message_ids):
        self.pulls += 1
        due = []
        for i in message_ids:
            reply = self._replies.get(i)
            delay = None if reply is None else self.ready[reply.metadata.src_node_id - 1000]
            if delay is not None and self.clock.time() - self.pushed_at >= delay:
                due.append(i)
        return super().pull_messages(due)


def messages(n: int) -> list[Message]:
    return [instruction(1000 + i, "query") for i in range(n)]


def test_replies_are_collected_within_the_first_interval_of_landing_and_none_is_lost():
    clock = Clock()
    grid = SlowGrid([0.3, 0.31, 1.7], clock)
    polling = PollingGrid(grid, clock=clock.time, sleep=clock.sleep)

    replies = list(polling.send_and_receive(messages(3), timeout=None))

    assert sorted(r.metadata.src_node_id for r in replies) == [1000, 1001, 1002]
    assert clock.now - 1.7 <= polling.longest  # the last reply waited at most one (capped) interval
    assert max(clock.sleeps) <= polling.longest
    assert grid.pulls < 1.7 / polling.longest * 3  # backing off: tens of pulls, not one per first interval


def test_a_reply_after_a_quiet_spell_is_picked_up_faster_than_flowers_fixed_interval_early_on():
    clock = Clock()
    grid = SlowGrid([0.05], clock)
    PollingGrid(grid, clock=clock.time, sleep=clock.sleep).send_and_receive(messages(1))
    assert clock.now - 0.05 < 0.02  # Flower's simulation grid would sleep 0.1 s before its second pull
    assert clock.sleeps[0] == pytest.approx(0.002)


def test_the_timeout_returns_what_arrived_without_sleeping_past_it():
    clock = Clock()
    grid = SlowGrid([0.2, None], clock)
    replies = list(
        PollingGrid(grid, clock=clock.time, sleep=clock.sleep).send_and_receive(messages(2), timeout=1.0)
    )
    assert [r.metadata.src_node_id for r in replies] == [1000]
    assert clock.now == pytest.approx(1.0)


def test_everything_else_is_the_wrapped_grids():
    grid = FakeGrid({1000: partition_handler(0), 1001: partition_handler(1)})
    polling = PollingGrid(grid)
    assert list(polling.get_node_ids()) == [1000, 1001]
    message = polling.create_message(RecordDict({"config": ConfigRecord()}), "query", 1001, "g")
    assert message.metadata.dst_node_id == 1001 and grid.count("query") == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"first": 0.0}, "first must be > 0"),
        ({"longest": 0.001}, "longest must be >="),
        ({"growth": 0.5}, "growth"),
    ],
)
def test_bad_intervals_are_refused_naming_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        PollingGrid(FakeGrid({}), **options)
