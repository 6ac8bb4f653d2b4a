"""Test-only client roles that misbehave, registered as a fedsec plugin (``plugins=tests.fault_roles``).

They live under ``tests/`` on purpose: they are fault injection for the test suite, not attacks a
scenario should offer. Each is an honest client whose ``fit`` then breaks one rule.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.common import NDArrays, Scalar

from clients import BenignClient, benign_client, register_role
from fedsec.config import RunConfig


class CrashingClient(BenignClient):
    """Raises in every ``fit``, as a device that runs out of memory."""

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        raise MemoryError(f"client {self.partition_id} ran out of memory")


class NaNClient(BenignClient):
    """Sends NaN in every float array."""

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        weights, count, metrics = super().fit(parameters, config)
        return [np.full_like(w, np.nan) if w.dtype.kind == "f" else w for w in weights], count, metrics


class HugeClient(BenignClient):
    """Sends 1e38 in every float array: finite, so only a bound on influence catches it."""

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        weights, count, metrics = super().fit(parameters, config)
        return [np.full_like(w, 1e38) if w.dtype.kind == "f" else w for w in weights], count, metrics


class LyingClient(BenignClient):
    """Trains honestly but claims 10¹² examples, to carry the weighted average."""

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        weights, _, metrics = super().fit(parameters, config)
        return weights, 10**12, metrics


class HangingClient(BenignClient):
    """Trains, then sleeps ``HANG_SECONDS`` before it replies (longer than any test's round timeout)."""

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        result = super().fit(parameters, config)
        time.sleep(HANG_SECONDS)
        return result


HANG_SECONDS = 120.0


def _factory(cls: type[BenignClient]) -> Any:
    def build(
        config: RunConfig, *, partition_id: int, num_partitions: int, state: Any = None
    ) -> BenignClient:
        return benign_client(config, partition_id=partition_id, num_partitions=num_partitions, cls=cls)

    return build


register_role("crash", _factory(CrashingClient), objective="untargeted")
register_role("nan", _factory(NaNClient), objective="untargeted")
register_role("huge", _factory(HugeClient), objective="untargeted")
register_role("liar", _factory(LyingClient), objective="untargeted")
register_role("hang", _factory(HangingClient), objective="untargeted")
