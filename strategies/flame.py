"""FLAME as a Flower strategy (Nguyen et al., USENIX Security 2022).

"FLAME: Taming Backdoors in Federated Learning": HDBSCAN on the pairwise
cosine distances of the updates admits the majority cluster, admitted updates
are clipped to the median update norm ``S_t``, averaged, and Gaussian noise
of standard deviation ``λ · S_t`` is added.  The math is
:func:`fedsec.defenses.flame.flame`; this adapter decodes the updates
``δ_i = w_i − w_global``, draws the noise from
``numpy.random.default_rng([seed, server_round])``, records the decisions and
returns ``w_global + Δ``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord

from fedsec.defenses.detection import confusion
from fedsec.defenses.flame import flame
from strategies.batch import RoundBatch
from strategies.update_based import UpdateAggregator
from strategies.wrapper import ServerEnv, labels_of

__all__ = ["Flame"]

logger = logging.getLogger(__name__)


class Flame(UpdateAggregator):
    """FedAvg replaced by FLAME's filter, clip, average and noise.

    Parameters
    ----------
    noise_lambda
        Noise level ``λ >= 0`` (noise std ``λ · S_t``; the paper uses 0.001).
    seed
        Run seed; round ``r`` draws its noise from ``default_rng([seed, r])``.
    env
        Run record and ground truth (for the records only).
    **kwargs
        Flower ``FedAvg`` arguments (Message API).

    Notes
    -----
    Per round the record gets ``kept["flame"]``, ``dropped`` (with reasons),
    ``detection["flame"]`` (drops against the ground truth) and
    ``flame: {"clip_norm": S_t, "noise_std": λ·S_t}``.
    """

    def __init__(
        self, *, noise_lambda: float, seed: int, env: ServerEnv | None = None, **kwargs: Any
    ) -> None:
        if (
            not isinstance(noise_lambda, int | float)
            or isinstance(noise_lambda, bool)
            or not math.isfinite(noise_lambda)
            or noise_lambda < 0
        ):
            raise ValueError(f"noise_lambda must be a finite number >= 0, got {noise_lambda!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        super().__init__(env=env, **kwargs)
        self.noise_lambda = float(noise_lambda)
        self.seed = seed

    def __repr__(self) -> str:
        return f"Flame(noise_lambda={self.noise_lambda})"

    def aggregate_batch(
        self, server_round: int, batch: RoundBatch
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        labels = list(batch.labels)
        deltas = batch.scaled_updates()
        result = flame(
            deltas,
            noise_lambda=self.noise_lambda,
            rng=np.random.default_rng([self.seed, server_round]),
        )

        dropped = {labels[i]: reason for i, reason in result.dropped.items()}
        for label, reason in dropped.items():
            logger.warning("round %s: FLAME dropped client %s: %s", server_round, label, reason)
        counts = confusion(dropped, self.env.truth.at(server_round), labels)
        logger.info(
            "round %s: FLAME kept %s of %s, S_t=%.4g, noise std %.4g (%s)",
            server_round,
            len(result.kept),
            len(labels),
            result.clip_norm,
            result.noise_std,
            counts,
        )
        if self.env.recorder is not None:
            self.env.recorder.note(
                server_round,
                kept={"flame": labels_of(result.kept, labels)},
                dropped=dropped,
                detection={"flame": counts},
                flame={"clip_norm": result.clip_norm, "noise_std": result.noise_std},
            )

        return self.new_global(batch, result.update, result.kept)
