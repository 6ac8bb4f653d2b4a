"""Tests for the seeded, partition-ordered node sampler and the node-count wait."""

from __future__ import annotations

import random

import pytest
from flwr.app import Message, RecordDict

from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from simulations.validate import validate
from strategies.sampling import GridView, NodeWaitError, SeededSampler, query_partitions, wait_for_nodes
from tests.flower_fakes import FakeGrid, partition_handler


def grid_with(partitions: dict[int, object]) -> FakeGrid:
    """Nodes answering the partition query with ``partitions[node]`` (an exception: the node fails)."""

    def node(partition: object):
        if isinstance(partition, Exception):

            def fail(msg: Message) -> Message:
                raise partition

            return fail
        return partition_handler(partition)

    return FakeGrid({node_id: node(p) for node_id, p in partitions.items()})


def node_ids(n: int, seed: int) -> list[int]:
    """Random node ids, as the simulation engine draws them (differ between runs)."""
    rng = random.Random(seed)
    return [rng.getrandbits(63) for _ in range(n)]


def sampled_partitions(grid: FakeGrid, sampler: SeededSampler, rounds: int) -> list[list[int]]:
    return [sorted(sampler.partitions[node] for node in sampler.sample(grid)) for _ in range(rounds)]


def test_same_seed_samples_the_same_partitions_whatever_the_node_ids():
    first = grid_with({node: p for p, node in enumerate(node_ids(30, seed=1))})
    second = grid_with({node: p for p, node in reversed(list(enumerate(node_ids(30, seed=2))))})

    rounds_a = sampled_partitions(first, SeededSampler(seed=7, fraction_train=5 / 30), rounds=4)
    rounds_b = sampled_partitions(second, SeededSampler(seed=7, fraction_train=5 / 30), rounds=4)

    assert rounds_a == rounds_b
    assert all(len(r) == 5 for r in rounds_a)
    assert len({tuple(r) for r in rounds_a}) > 1  # a new sample every round


def test_another_seed_samples_other_partitions():
    ids = {node: p for p, node in enumerate(node_ids(30, seed=1))}
    assert sampled_partitions(grid_with(ids), SeededSampler(seed=7, fraction_train=5 / 30), 3) != (
        sampled_partitions(grid_with(ids), SeededSampler(seed=8, fraction_train=5 / 30), 3)
    )


def test_partitions_are_asked_once_per_node():
    grid = grid_with({i: i for i in range(6)})
    sampler = SeededSampler(seed=1, fraction_train=0.5)
    sampler.sample(grid)
    sampler.sample(grid)
    assert grid.count("query") == 6
    everyone = SeededSampler(seed=1)
    assert sorted(everyone.sample(grid)) == list(range(6)) and sorted(everyone.sample(grid)) == list(range(6))
    assert grid.count("query") == 12 and everyone.partitions == {i: i for i in range(6)}


def test_evaluation_draws_its_own_sample_and_none_at_fraction_zero():
    grid = grid_with({i: i for i in range(10)})
    assert SeededSampler(seed=1).sample(grid, evaluate=True) == []
    sampler = SeededSampler(seed=1, fraction_train=1.0, fraction_evaluate=0.3)
    assert len(sampler.sample(grid, evaluate=True)) == 3 and len(sampler.sample(grid)) == 10


def test_stratified_sample_holds_exactly_the_requested_attackers():
    grid = grid_with({node: p for p, node in enumerate(node_ids(20, seed=3))})
    sampler = SeededSampler(
        seed=7, fraction_train=0.25, malicious={"14", "15", "16", "17", "18", "19"}, malicious_per_round=3
    )
    for partitions in sampled_partitions(grid, sampler, rounds=10):
        assert len(partitions) == 5 and sum(p >= 14 for p in partitions) == 3


def test_stratified_sample_falls_back_when_too_few_attackers_are_left():
    grid = grid_with({i: i for i in range(6)})
    sampler = SeededSampler(seed=7, fraction_train=0.5, malicious={"5"}, malicious_per_round=2)
    (partitions,) = sampled_partitions(grid, sampler, rounds=1)
    assert len(partitions) == 3 and partitions.count(5) == 1


def test_nodes_that_report_no_partition_are_ordered_by_node_id_and_still_sampled():
    grid = grid_with({10: 0, 11: None, 12: RuntimeError("node lost"), 13: "x", 14: 1})
    sampler = SeededSampler(seed=3, fraction_train=0.4)
    chosen = {node for _ in range(20) for node in sampler.sample(grid)}
    assert chosen == {10, 11, 12, 13, 14}
    assert sampler.partitions == {10: 0, 11: None, 12: None, 13: None, 14: 1}
    assert sampler.label(12) == "node-12" and sampler.label(14) == "1"


def test_query_partitions_maps_every_asked_node():
    grid = grid_with({1: 4, 2: RuntimeError("gone")})
    assert query_partitions(grid, [1, 2], timeout=None) == {1: 4, 2: None}
    assert query_partitions(grid, [], timeout=None) == {}


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="seed"):
        SeededSampler(seed=-1)
    with pytest.raises(ValueError, match="fraction_train"):
        SeededSampler(seed=0, fraction_train=0.0)
    with pytest.raises(ValueError, match="malicious_per_round"):
        SeededSampler(seed=0, malicious_per_round=-2)


def test_grid_view_shows_only_the_sample_and_delivers_through_the_grid():
    grid = grid_with({1: 0, 2: 1, 3: 2})
    view = GridView(grid, [2])
    assert list(view.get_node_ids()) == [2]
    (reply,) = view.send_and_receive([Message(RecordDict(), dst_node_id=2, message_type="query")])
    assert reply.content["metrics"]["partition-id"] == 1


class GrowingGrid(FakeGrid):
    """A grid whose nodes connect one per call of ``get_node_ids`` up to ``final``."""

    def __init__(self, final: int) -> None:
        super().__init__({})
        self.final = final

    def get_node_ids(self):
        if len(self.nodes) < self.final:
            self.nodes[len(self.nodes)] = partition_handler(len(self.nodes))
        return list(self.nodes)


def test_wait_for_nodes_returns_once_the_expected_nodes_are_there():
    assert wait_for_nodes(GrowingGrid(3), expected=3, settle=5.0, poll=0.0) == [0, 1, 2]
    assert wait_for_nodes(GrowingGrid(2), expected=None, settle=0.05, poll=0.01) == [0, 1]


def test_wait_for_nodes_fails_fast_with_a_line_that_says_what_to_do():
    with pytest.raises(
        NodeWaitError, match=r"num-clients=10 but the federation has 2 nodes.*num-supernodes=10"
    ):
        wait_for_nodes(GrowingGrid(2), expected=10, settle=0.05, poll=0.01)
    with pytest.raises(NodeWaitError, match="num-clients=1 but the federation has 2 nodes"):
        wait_for_nodes(FakeGrid({1: partition_handler(0), 2: partition_handler(1)}), expected=1, poll=0.0)
    with pytest.raises(NodeWaitError, match="no SuperNode connected within 0s"):
        wait_for_nodes(FakeGrid({}), expected=None, first_timeout=0.05, poll=0.01)


def three_attackers_of_ten(**settings):
    return RunConfig.from_run_config(
        {"num-clients": 10, "roles": "label-flip:7-9", "fraction-fit": 0.5, **settings}
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"malicious-per-round": 4}, "exceeds the 3 malicious clients"),
        ({"malicious-per-round": 3, "fraction-fit": 0.2}, "cannot be met in a sample of 2"),
        (
            {"malicious-per-round": 1, "fraction-fit": 1.0},
            r"cannot be met in a sample of 10 clients \(3 malicious",
        ),
    ],
)
def test_impossible_malicious_per_round_is_a_config_error(settings, message):
    config = RunConfig.from_run_config(
        {"num-clients": 10, "roles": "label-flip:7-9", "fraction-fit": 0.5, **settings}
    )
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_possible_malicious_per_round_validates():
    validate(
        RunConfig.from_run_config(
            {"num-clients": 10, "roles": "label-flip:7-9", "fraction-fit": 0.5, "malicious-per-round": 2}
        )
    )


def twenty_clients(strategy: str, f: int, fraction: float = 0.5) -> RunConfig:
    return RunConfig.from_run_config(
        {"num-clients": 20, "fraction-fit": fraction, "strategy": strategy, "num-malicious-clients": f}
    )


@pytest.mark.parametrize(
    ("strategy", "f", "fraction", "message"),
    [
        ("krum", 4, 0.5, r"needs n >= 2f \+ 3 = 11 .* samples n = 10: set num-malicious-clients <= 3"),
        ("multikrum", 4, 0.5, "samples n = 10"),
        ("bulyan", 2, 0.5, r"needs n >= 4f \+ 3 = 11 .* set num-malicious-clients <= 1"),
        ("flower-krum", 9, 1.0, r"2f \+ 3 = 21 .* samples n = 20"),
    ],
)
def test_krum_and_bulyan_f_is_checked_against_the_clients_sampled_per_round(strategy, f, fraction, message):
    with pytest.raises(ConfigError, match=message):
        validate(twenty_clients(strategy, f, fraction))


@pytest.mark.parametrize(("strategy", "f"), [("krum", 3), ("bulyan", 1), ("fedavg", 9), ("krum", 0)])
def test_krum_and_bulyan_within_their_bound_validate(strategy, f):
    validate(twenty_clients(strategy, f))  # 10 sampled: Krum f <= 3, Bulyan f <= 1; other rules: any f


def test_multikrum_keeps_n_minus_f_of_the_sampled_clients():
    from strategies.registry import _multikrum_keep

    assert _multikrum_keep(twenty_clients("multikrum", 3)) == 7  # 10 sampled - 3, not 20 - 3
    assert _multikrum_keep(twenty_clients("multikrum", 3, fraction=1.0)) == 17
