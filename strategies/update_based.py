"""A FedAvg base for strategies that aggregate update vectors ``δ_i = w_i − w_global`` themselves.

FoolsGold and FLAME replace FedAvg's weighted mean with their own math on the
flattened updates; this base tracks the global model the clients started from,
decodes a round's results into client labels and an ``(n, d)`` update matrix,
and turns an aggregated update back into Flower parameters and metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.common import FitIns, NDArrays, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from fedsec.attacks.poisoning import apply_update, flat_update
from strategies.wrapper import Failures, FitResults, ServerEnv, client_label


class UpdateAggregator(FedAvg):
    """FedAvg that hands subclasses the round's update matrix instead of the raw results.

    Parameters
    ----------
    env
        Run record and ground truth (for the records only).
    **kwargs
        Flower ``FedAvg`` arguments.
    """

    def __init__(self, *, env: ServerEnv, **kwargs: Any) -> None:
        if not isinstance(env, ServerEnv):
            raise ValueError(f"env must be a ServerEnv, got {type(env).__name__}")
        super().__init__(**kwargs)
        self.env = env
        self.global_arrays: NDArrays | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        parameters = super().initialize_parameters(client_manager)
        if parameters is not None:
            self.global_arrays = parameters_to_ndarrays(parameters)
        return parameters

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self.global_arrays = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)

    def round_updates(
        self, results: FitResults, failures: Failures
    ) -> tuple[NDArrays, list[str], np.ndarray] | None:
        """``(global weights, client labels, (n, d) updates)``, or None when FedAvg would not aggregate."""
        if not results or (not self.accept_failures and failures):
            return None
        if self.global_arrays is None:
            raise RuntimeError("configure_fit must run before aggregate_fit (no global model yet)")
        reference = self.global_arrays
        labels = [client_label(proxy, res) for proxy, res in results]
        deltas = np.stack(
            [flat_update(parameters_to_ndarrays(res.parameters), reference) for _, res in results]
        )
        return reference, labels, deltas

    def new_global(
        self, reference: NDArrays, update: np.ndarray, results: FitResults, kept: Sequence[int]
    ) -> tuple[Parameters, dict[str, Scalar]]:
        """``reference + update`` as Flower parameters, and the kept clients' aggregated fit metrics."""
        parameters = ndarrays_to_parameters(apply_update(reference, update))
        metrics: dict[str, Scalar] = {}
        if self.fit_metrics_aggregation_fn:
            metrics = self.fit_metrics_aggregation_fn(
                [(results[i][1].num_examples, results[i][1].metrics) for i in kept]
            )
        return parameters, metrics
