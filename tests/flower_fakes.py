"""Small stand-ins for Flower's server-side plumbing, for in-process tests (no Ray)."""

from __future__ import annotations

import numpy as np
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters
from flwr.server.client_proxy import ClientProxy


class FakeProxy(ClientProxy):
    """A ClientProxy that is never asked to do anything (results are built directly)."""

    def __init__(self, cid: str) -> None:
        super().__init__(cid)
        self.node_id = int(cid)

    def get_properties(self, ins, timeout, group_id):  # pragma: no cover - unused
        raise NotImplementedError

    def get_parameters(self, ins, timeout, group_id):  # pragma: no cover - unused
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):  # pragma: no cover - unused
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):  # pragma: no cover - unused
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):  # pragma: no cover - unused
        raise NotImplementedError


def fit_result(pid: int, arrays: list[np.ndarray] | Parameters, num_examples: int = 10):
    """``(proxy, FitRes)`` as Flower hands them to ``aggregate_fit``."""
    parameters = arrays if isinstance(arrays, Parameters) else ndarrays_to_parameters(arrays)
    res = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=parameters,
        num_examples=num_examples,
        metrics={"partition-id": pid},
    )
    return FakeProxy(str(1000 + pid)), res
