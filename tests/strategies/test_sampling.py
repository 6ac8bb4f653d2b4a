"""Tests for the seeded, partition-ordered client sampler."""

from __future__ import annotations

import random

import pytest
from flwr.common import Code, GetPropertiesRes, Status

from clients.benign import ReportsPartition
from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from simulations.validate import validate
from strategies.sampling import SeededClientManager, partition_of
from tests.flower_fakes import FakeProxy


class PartitionProxy(FakeProxy):
    """A proxy whose client reports ``partition`` (``None``: reports nothing; an exception: fails)."""

    def __init__(self, cid: str, partition: object) -> None:
        super().__init__(cid)
        self.partition = partition
        self.asked = 0

    def get_properties(self, ins, timeout, group_id):
        self.asked += 1
        if isinstance(self.partition, Exception):
            raise self.partition
        properties = {} if self.partition is None else {"partition-id": self.partition}
        return GetPropertiesRes(status=Status(code=Code.OK, message=""), properties=properties)


def manager_with(partitions: dict[str, object], **kwargs) -> SeededClientManager:
    manager = SeededClientManager(seed=kwargs.pop("seed", 7), **kwargs)
    for cid, partition in partitions.items():
        manager.register(PartitionProxy(cid, partition))
    return manager


def node_ids(n: int, seed: int) -> list[str]:
    """Random node ids, as the simulation engine draws them (differ between runs)."""
    rng = random.Random(seed)
    return [str(rng.getrandbits(63)) for _ in range(n)]


def sampled_partitions(manager: SeededClientManager, k: int, rounds: int) -> list[list[int]]:
    return [sorted(proxy.partition for proxy in manager.sample(k)) for _ in range(rounds)]


def test_same_seed_samples_the_same_partitions_whatever_the_node_ids():
    first = manager_with({cid: p for p, cid in enumerate(node_ids(30, seed=1))})
    second = manager_with({cid: p for p, cid in reversed(list(enumerate(node_ids(30, seed=2))))})

    rounds_a = sampled_partitions(first, 5, rounds=4)
    rounds_b = sampled_partitions(second, 5, rounds=4)

    assert rounds_a == rounds_b
    assert len({tuple(r) for r in rounds_a}) > 1  # a new sample every round


def test_another_seed_samples_other_partitions():
    ids = {cid: p for p, cid in enumerate(node_ids(30, seed=1))}
    assert sampled_partitions(manager_with(ids, seed=7), 5, 3) != sampled_partitions(
        manager_with(ids, seed=8), 5, 3
    )


def test_partitions_are_asked_once_and_not_at_all_when_everyone_is_sampled():
    manager = manager_with({str(i): i for i in range(6)})
    assert len(manager.sample(6)) == 6
    assert all(proxy.asked == 0 for proxy in manager.clients.values())
    manager.sample(3)
    manager.sample(3)
    assert all(proxy.asked == 1 for proxy in manager.clients.values())


def test_stratified_sample_holds_exactly_the_requested_attackers():
    manager = manager_with(
        {cid: p for p, cid in enumerate(node_ids(20, seed=3))},
        malicious={"14", "15", "16", "17", "18", "19"},
        malicious_per_round=3,
    )
    for partitions in sampled_partitions(manager, 5, rounds=10):
        assert sum(p >= 14 for p in partitions) == 3


def test_stratified_sample_falls_back_when_too_few_attackers_are_left():
    manager = manager_with({str(i): i for i in range(6)}, malicious={"5"}, malicious_per_round=2)
    (partitions,) = sampled_partitions(manager, 3, rounds=1)
    assert len(partitions) == 3 and partitions.count(5) == 1


def test_clients_that_report_no_partition_are_ordered_by_node_id_and_still_sampled():
    manager = manager_with({"10": 0, "11": None, "12": RuntimeError("node lost"), "13": "x", "14": 1})
    chosen = {proxy.cid for _ in range(20) for proxy in manager.sample(2)}
    assert chosen == {"10", "11", "12", "13", "14"}
    assert partition_of(manager.clients["12"]) is None


def test_too_few_clients_gives_an_empty_sample_and_bad_arguments_raise():
    assert manager_with({"1": 1}).sample(2, min_num_clients=1) == []
    with pytest.raises(ValueError, match="seed"):
        SeededClientManager(seed=-1)
    with pytest.raises(ValueError, match="malicious_per_round"):
        SeededClientManager(seed=0, malicious_per_round=-2)


def test_fedsec_clients_report_their_partition():
    class Client(ReportsPartition):
        partition_id = 11

    assert Client().get_properties({}) == {"partition-id": 11}


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
