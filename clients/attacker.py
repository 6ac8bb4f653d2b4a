"""The base of every malicious Flower client: honest outside its attack rounds, attacking in them.

Shared by the attacker families of :mod:`clients.data_poisoning` (label
flipping, BadNets, DBA, clean-label, boosting, constrain-and-scale) and
:mod:`clients.stealthy` (Chen et al., "Towards multi-party targeted model
poisoning attacks against federated learning systems", High-Confidence
Computing 2021).  Each attacker is a :class:`~clients.benign.BenignClient`
that trains with the one loop on other data or with another loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.common import NDArrays, Scalar

from clients.benign import BenignClient, client_parts
from fedsec.config import RunConfig
from fedsec.data.triggers import Trigger, pixel_pattern
from fedsec.experiment import derive_seed

#: Key of the previous global model in the node's Flower ``Context.state``.
HISTORY_KEY = "fedsec-previous-global"
#: Seed-derivation key of the poisoning draws (distinct from partition and round keys).
POISON_STREAM = 0x9015


def global_trigger(config: RunConfig, input_shape: tuple[int, int, int]) -> Trigger:
    """The run's backdoor trigger (what the server's ASR test set is stamped with)."""
    return pixel_pattern(input_shape, kind=config.trigger, size=config.trigger_size)


def sampled_per_round(config: RunConfig) -> int:
    """Clients FedAvg averages each round (n in constrain-and-scale's γ = n/η)."""
    return max(1, math.ceil(config.fraction_fit * config.num_clients))


def poison_seed(config: RunConfig, partition_id: int, *keys: int) -> int:
    """A 32-bit seed for this attacker's poisoning draws (numpy's legacy seeding needs < 2**32)."""
    return derive_seed(config.seed, partition_id, POISON_STREAM, *keys) % 2**32


def attacker_parts(
    config: RunConfig,
    partition_id: int,
    num_partitions: int,
    state: RecordDict | None,
    *,
    controls_training: bool = False,
) -> dict[str, Any]:
    """Client arguments; an attacker that ``controls_training`` never runs the edge defense.

    Data-poisoning roles model honest devices whose data was poisoned, so they
    train the way every device does (with the edge defense, if the run has one,
    which keeps its state in the node's ``state`` like every device's).
    """
    parts = client_parts(config, partition_id=partition_id, num_partitions=num_partitions, state=state)
    if controls_training:
        parts["defense"] = None
    return {**parts, "state": state, "num_partitions": num_partitions}


class MaliciousClient(BenignClient):
    """A client that trains honestly outside its attack rounds and attacks in them (``RunConfig.attacks_in``).

    It remembers the global model it received in the node's ``state`` (under
    :data:`HISTORY_KEY`), the history a limited-knowledge attacker estimates from.
    """

    def __init__(self, *, state: RecordDict | None = None, num_partitions: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state
        self.num_partitions = num_partitions

    def attack(self, parameters: NDArrays, server_round: int) -> tuple[NDArrays, dict[str, Scalar]]:
        """This round's malicious weights and metrics to report."""
        raise NotImplementedError

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        server_round = int(config.get("server-round", 0))
        if not self.config.attacks_in(server_round):
            result = super().fit(parameters, config)
        else:
            weights, metrics = self.attack(parameters, server_round)
            result = (weights, len(self.train_data), {"partition-id": self.partition_id, **metrics})
        if self.state is not None:
            self.state[HISTORY_KEY] = ArrayRecord([np.asarray(p) for p in parameters])
        return result
