"""ε of a DiPSeN client's DP-SGD training, from Flower's RDP privacy accountant.

DiPSeN (Ibitoye et al., 2021) states its noise as DP-SGD's (Alg. 1);
:mod:`fedsec.dpsgd` implements the clipping and noise, this module the
accounting: ``flwr.serverapp.RdpAccountant`` (Flower 1.42, backed by Google's
``dp-accounting``; Mironov, 2017, "Rényi Differential Privacy") composes one
sampled Gaussian release per local step.  Each step draws a batch of ``B`` of
the client's ``n`` samples without replacement (a shuffled pass is accounted as
such draws, the usual approximation), so the accountant uses sampling without
replacement with the replace-one neighbouring relation.  Under that relation one
sample's change moves the clipped gradient sum by up to ``2C`` (its old clipped
gradient out, a new one in), so the accountant's noise multiplier (noise std over
sensitivity) is ``σC / 2C = σ / 2``.  The ε is sample-level
privacy of one client's data; it assumes the client trained in every round so
far, an upper bound on what a sampled client spent.
"""

from __future__ import annotations

import math
import statistics

from flwr.serverapp import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)

from clients.benign import LOCAL_EVAL_FRACTION
from fedsec.config import RunConfig
from fedsec.data import DatasetBundle
from fedsec.dpsgd import steps_per_epoch
from fedsec.experiment import client_partition_sizes

__all__ = ["RDP_ORDERS", "dp_sgd_epsilon", "privacy_table"]

#: Rényi orders the accountant minimises over (orders below 2 fail to converge at small σ).
RDP_ORDERS: tuple[float, ...] = (
    *[2.0 + k / 4 for k in range(16)],
    *[float(o) for o in range(6, 65)],
    128.0,
    256.0,
)


def dp_sgd_epsilon(
    *, noise_multiplier: float, batch_size: int, dataset_size: int, steps: int, delta: float
) -> float:
    """ε at ``delta`` after ``steps`` DP-SGD steps of ``batch_size`` of ``dataset_size`` samples, noise ``σ``.

    ``0`` when no step ran; ``inf`` when ``noise_multiplier`` is 0 (no noise, no privacy).

    Raises
    ------
    ValueError
        If a count is not positive, ``noise_multiplier`` is negative or ``delta`` is outside (0, 1).
    """
    if noise_multiplier < 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    if min(batch_size, dataset_size) < 1 or steps < 0:
        raise ValueError(
            "batch_size and dataset_size must be >= 1 and steps >= 0, "
            f"got {batch_size}, {dataset_size}, {steps}"
        )
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=dataset_size,
            neighboring_relation=NeighboringRelation.REPLACE_ONE,
            sampling_method=SamplingMethod.WITHOUT_REPLACEMENT,
        ),
        orders=RDP_ORDERS,
    )
    event = GaussianPrivacyEvent(
        # noise std σ·C over the replace-one sensitivity 2C of the clipped sum
        noise_multiplier=float(noise_multiplier) / 2.0,
        sample_size=min(batch_size, dataset_size),
        population_size=dataset_size,
    )
    accountant.compose(event, count=steps)
    return accountant.get_privacy_spent().epsilon


def local_train_size(partition_size: int) -> int:
    """Samples a client trains on: its partition less the local evaluation split (``split_local``)."""
    return partition_size - round(LOCAL_EVAL_FRACTION * partition_size)


def privacy_table(config: RunConfig, bundle: DatasetBundle, *, column: str) -> dict[str, dict[str, float]]:
    """The ``Privacy (DP-SGD)`` table: ε at ``dp-sgd-delta`` after all rounds, smallest and median client.

    A client that took part in all ``num-server-rounds`` rounds ran
    ``rounds · local-epochs · ceil(n / batch-size)`` steps on its ``n`` samples;
    the smallest client has the largest sampling rate, so the largest ε.
    ``column`` names the table's one column (the model's paper name).
    """
    sizes = sorted(local_train_size(n) for n in client_partition_sizes(config, bundle))
    rows: dict[str, dict[str, float]] = {}
    for label, n in (("smallest client", sizes[0]), ("median client", int(statistics.median_low(sizes)))):
        steps = config.num_server_rounds * config.local_epochs * steps_per_epoch(n, config.batch_size)
        epsilon = dp_sgd_epsilon(
            noise_multiplier=config.dp_sgd_noise,
            batch_size=config.batch_size,
            dataset_size=n,
            steps=steps,
            delta=config.dp_sgd_delta,
        )
        rows[f"ε ({label}, every round)"] = {column: epsilon}
        rows[f"samples ({label})"] = {column: float(n)}
        rows[f"steps ({label})"] = {column: float(steps)}
    rows["δ"] = {column: config.dp_sgd_delta}
    rows["noise multiplier σ"] = {column: config.dp_sgd_noise}
    rows["clip norm C"] = {column: config.dp_sgd_clip}
    return rows
