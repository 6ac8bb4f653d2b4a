"""FDA³ cloud side: average device gradients and step Adam on the server model (Song et al., Algorithm 2).

A Flower ``FedAvg`` subclass whose ``aggregate_fit`` treats each result as a
**gradient**: it averages them (``1/N Σ g_i``, :func:`fedsec.aggregation.gradient_mean`)
and applies one Adam step (:func:`fedsec.aggregation.adam_step`, state kept
across rounds) to the parameters it sent this round.  ``configure_fit`` is the
attack monitor's channel: every round the fit config carries each device's
assigned schemes (``fda3-schemes``) and the initial model's digest, and a scheme
added at round r is logged as downloaded by its devices.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.common import FitIns, FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from clients.adversarial import INITIAL_DIGEST_KEY, SCHEMES_KEY, encode_schemes, weights_digest
from fedsec.aggregation import AdamState, adam_init, adam_step, gradient_mean
from fedsec.attacks.monitor import AttackMonitor

logger = logging.getLogger(__name__)


class FDA3(FedAvg):
    """Gradient averaging + server-side Adam, with an attack monitor pushing schemes to devices.

    Parameters
    ----------
    monitor
        Which schemes each device uses in each round.
    server_learning_rate, betas
        Adam hyper-parameters of the server step.
    **kwargs
        Flower ``FedAvg`` arguments (``initial_parameters`` is required).
    """

    def __init__(
        self,
        *,
        monitor: AttackMonitor,
        server_learning_rate: float,
        betas: tuple[float, float] = (0.9, 0.999),
        **kwargs: Any,
    ) -> None:
        if kwargs.get("initial_parameters") is None:
            raise ValueError("FDA3 needs initial_parameters (the pre-trained initial model)")
        if server_learning_rate <= 0:
            raise ValueError(f"server_learning_rate must be > 0, got {server_learning_rate}")
        super().__init__(**kwargs)
        self.monitor = monitor
        self.server_learning_rate = server_learning_rate
        self.betas = betas
        initial = parameters_to_ndarrays(kwargs["initial_parameters"])
        self.initial_digest = weights_digest(initial)
        self.adam: AdamState = adam_init(initial)
        self._sent: Parameters | None = None

    def __repr__(self) -> str:
        return f"FDA3(lr={self.server_learning_rate}, betas={self.betas})"

    def schemes(self, server_round: int) -> dict[int, tuple[str, ...]]:
        """Every device's schemes in ``server_round``."""
        return {pid: self.monitor.schemes_for(pid, server_round) for pid in self.monitor.partitions}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._sent = parameters
        for addition in self.monitor.newly_added(server_round):
            logger.info(
                "round %s: new attack %s; devices %s download the scheme",
                server_round,
                addition.attack,
                list(addition.partitions),
            )
        instructions = super().configure_fit(server_round, parameters, client_manager)
        extra: dict[str, Scalar] = {
            SCHEMES_KEY: encode_schemes(self.schemes(server_round)),
            INITIAL_DIGEST_KEY: self.initial_digest,
        }
        return [(proxy, FitIns(ins.parameters, {**ins.config, **extra})) for proxy, ins in instructions]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results or self._sent is None:
            return None, {}
        gradients = [parameters_to_ndarrays(res.parameters) for _, res in results]
        mean = gradient_mean(gradients)
        current = parameters_to_ndarrays(self._sent)
        updated, self.adam = adam_step(
            current, mean, self.adam, lr=self.server_learning_rate, betas=self.betas
        )
        metrics: dict[str, Scalar] = {}
        if self.fit_metrics_aggregation_fn is not None:
            metrics = self.fit_metrics_aggregation_fn([(res.num_examples, res.metrics) for _, res in results])
        return ndarrays_to_parameters(updated), metrics
