"""FDA³ cloud side: average device gradients and step Adam on the server model (Song et al., Algorithm 2).

A Flower ``FedAvg`` subclass (Message API) whose ``aggregate_train`` treats each
reply as a **gradient**: it averages them (``1/N Σ g_i``,
:func:`fedsec.aggregation.gradient_mean`) and applies one Adam step
(:func:`fedsec.aggregation.adam_step`, state kept across rounds) to the model it
sent this round, except at the model's buffers (BatchNorm statistics), where
replies carry each device's change to the buffer and the server adds their
mean (:func:`fedsec.fda3.apply_buffer_deltas`).  ``configure_train`` is the attack monitor's channel: every
round the train config carries each device's assigned schemes
(``fda3-schemes``) and the initial model's digest, and a scheme added at round
r is logged as downloaded by its devices.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from clients.adversarial import INITIAL_DIGEST_KEY, SCHEMES_KEY, encode_schemes, weights_digest
from fedsec.aggregation import AdamState, adam_init, adam_step
from fedsec.attacks.monitor import AttackMonitor
from fedsec.fda3 import apply_buffer_deltas
from fedsec.updates import add_to
from strategies.batch import RoundBatch, batch_from_replies
from strategies.messages import ndarrays_of, to_arrayrecord

logger = logging.getLogger(__name__)


class FDA3(FedAvg):
    """Gradient averaging + server-side Adam, with an attack monitor pushing schemes to devices.

    Parameters
    ----------
    monitor
        Which schemes each device uses in each round.
    initial_arrays
        The pre-trained initial model (its digest tells devices which model their cached pairs belong to).
    server_learning_rate, betas
        Adam hyper-parameters of the server step.
    buffers
        Positions of the model's buffers in its weight list
        (:func:`fedsec.fda3.buffer_positions`): replies carry buffer changes
        there, which are averaged and added instead of stepped by Adam.
    **kwargs
        Flower ``FedAvg`` arguments.
    """

    #: Replies carry gradients, not weights (the update guard bounds their own norm).
    REPLIES = "gradients"

    def __init__(
        self,
        *,
        monitor: AttackMonitor,
        initial_arrays: Sequence[np.ndarray],
        server_learning_rate: float,
        betas: tuple[float, float] = (0.9, 0.999),
        buffers: Sequence[int] = (),
        **kwargs: Any,
    ) -> None:
        if not isinstance(monitor, AttackMonitor):
            raise ValueError(f"monitor must be an AttackMonitor, got {type(monitor).__name__}")
        if isinstance(server_learning_rate, bool) or not server_learning_rate > 0:
            raise ValueError(f"server_learning_rate must be > 0, got {server_learning_rate!r}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        initial = [np.asarray(a) for a in initial_arrays]
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(initial) for i in buffers):
            raise ValueError(f"buffers must be positions in 0..{len(initial) - 1}, got {list(buffers)!r}")
        super().__init__(**kwargs)
        self.buffers = tuple(sorted(set(buffers)))
        self.monitor = monitor
        self.server_learning_rate = float(server_learning_rate)
        self.betas = (float(betas[0]), float(betas[1]))
        self.initial_digest = weights_digest(initial)
        self.adam: AdamState = adam_init(initial)
        self._sent: ArrayRecord | None = None

    def __repr__(self) -> str:
        return f"FDA3(lr={self.server_learning_rate}, betas={self.betas})"

    def checkpoint_state(self) -> dict[str, Any]:
        """The server Adam's step count and moments."""
        return {
            "step": self.adam.step,
            "exp_avg": list(self.adam.exp_avg),
            "exp_avg_sq": list(self.adam.exp_avg_sq),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        if state:
            self.adam = AdamState(
                step=int(state["step"]),
                exp_avg=tuple(np.asarray(m) for m in state["exp_avg"]),
                exp_avg_sq=tuple(np.asarray(v) for v in state["exp_avg_sq"]),
            )

    def schemes(self, server_round: int) -> dict[int, tuple[str, ...]]:
        """Every device's schemes in ``server_round``."""
        return {pid: self.monitor.schemes_for(pid, server_round) for pid in self.monitor.partitions}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = arrays
        for addition in self.monitor.newly_added(server_round):
            logger.info(
                "round %s: new attack %s; devices %s download the scheme",
                server_round,
                addition.attack,
                list(addition.partitions),
            )
        config[SCHEMES_KEY] = encode_schemes(self.schemes(server_round))
        config[INITIAL_DIGEST_KEY] = self.initial_digest
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid or self._sent is None:
            return None, None
        batch = batch_from_replies(
            valid, reference=self._sent.to_numpy_ndarrays(), keys=list(self._sent.keys()), gradients=True
        )
        return self.aggregate_batch(server_round, batch)

    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``1/N Σ g_i`` of the batch's gradient rows (one matrix–vector product), then one Adam step.

        At :attr:`buffers` the mean is a buffer change, added as it is.
        """
        if not batch.gradients:
            raise ValueError("FDA3 aggregates gradients: the batch must hold gradient replies")
        current = list(batch.reference)
        mean = add_to([np.zeros_like(a) for a in current], batch.updates.combine(batch.scales / len(batch)))
        gradients = [np.zeros_like(m) if i in self.buffers else m for i, m in enumerate(mean)]
        updated, self.adam = adam_step(
            current, gradients, self.adam, lr=self.server_learning_rate, betas=self.betas
        )
        if self.buffers:
            replies = [ndarrays_of(msg) for msg in batch.replies]
            for i, array in apply_buffer_deltas(current, replies, self.buffers, float_mean=mean).items():
                updated[i] = array
        metrics = self.train_metrics_aggr_fn(batch.contents(), self.weighted_by_key)
        return to_arrayrecord(updated, list(batch.keys)), metrics
