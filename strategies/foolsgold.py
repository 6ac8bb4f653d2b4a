"""FoolsGold as a Flower strategy (Fung, Yoon and Beschastnikh, RAID 2020).

"The Limitations of Federated Learning in Sybil Settings": every client's
update is weighted by a FoolsGold learning-rate weight that shrinks with the
cosine similarity of its *accumulated* updates to any other client's, so
sybils that push the same poisoning direction round after round cancel out.
The math is :mod:`fedsec.defenses.foolsgold`; this is the Flower adapter: it
decodes updates ``δ_i = w_i − w_global``, keeps the per-client histories,
computes the weights and returns ``w_global + Σ w_i δ_i / Σ w_i``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord

from fedsec.defenses.detection import confusion
from fedsec.defenses.foolsgold import FoolsGoldHistory, foolsgold_aggregate, foolsgold_weights
from strategies.batch import RoundBatch
from strategies.update_based import UpdateAggregator
from strategies.wrapper import ServerEnv, labels_of

__all__ = ["FoolsGold"]

logger = logging.getLogger(__name__)

#: Reason recorded for a client whose FoolsGold weight is exactly 0.
ZERO_WEIGHT = "FoolsGold weight 0"


class FoolsGold(UpdateAggregator):
    """FedAvg with FoolsGold client weights instead of example counts.

    Parameters
    ----------
    kappa
        Confidence ``κ > 0`` of the FoolsGold logit (the paper uses 1).
    env
        Run record and ground truth (for the records only).
    **kwargs
        Flower ``FedAvg`` arguments (Message API).

    Notes
    -----
    Per round the record gets ``foolsgold_weights`` (``{client: weight}``),
    ``kept["foolsgold"]`` (clients with a positive weight), ``dropped``
    (clients with weight 0) and ``detection["foolsgold"]`` (those drops
    against the ground truth).  If every weight is 0 the previous model is
    kept (``None`` parameters).
    """

    def __init__(self, *, kappa: float, env: ServerEnv | None = None, **kwargs: Any) -> None:
        if (
            not isinstance(kappa, int | float)
            or isinstance(kappa, bool)
            or not math.isfinite(kappa)
            or kappa <= 0
        ):
            raise ValueError(f"kappa must be a finite number > 0, got {kappa!r}")
        super().__init__(env=env, **kwargs)
        self.kappa = float(kappa)
        self.history = FoolsGoldHistory()

    def __repr__(self) -> str:
        return f"FoolsGold(kappa={self.kappa})"

    def checkpoint_state(self) -> dict[str, Any]:
        """Every client's accumulated update (FoolsGold's memory across rounds)."""
        return {"history": self.history.history}

    def restore_state(self, state: dict[str, Any]) -> None:
        self.history = FoolsGoldHistory.from_history(dict(state.get("history", {})))

    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        labels = list(batch.labels)
        deltas = batch.scaled_updates()
        histories = self.history.update(labels, deltas)
        weights = foolsgold_weights(histories, kappa=self.kappa)

        kept = [i for i in range(len(labels)) if weights[i] > 0]
        dropped = {labels[i]: ZERO_WEIGHT for i in range(len(labels)) if weights[i] == 0}
        for label in dropped:
            logger.warning("round %s: FoolsGold gave client %s weight 0", server_round, label)
        counts = confusion(dropped, self.env.truth.at(server_round), labels)
        logger.info(
            "round %s: FoolsGold weights %s (%s)", server_round, np.round(weights, 3).tolist(), counts
        )
        if self.env.recorder is not None:
            self.env.recorder.note(
                server_round,
                foolsgold_weights={label: float(w) for label, w in zip(labels, weights, strict=True)},
                kept={"foolsgold": labels_of(kept, labels)},
                dropped=dropped,
                detection={"foolsgold": counts},
            )
        if not kept:
            logger.warning("round %s: every FoolsGold weight is 0; keeping the previous model", server_round)
            return None, None

        return self.new_global(batch, foolsgold_aggregate(deltas, weights), kept)
