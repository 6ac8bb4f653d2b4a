"""The FDA³ experiment's table (Song et al., Figs. 2 and 4): rows = models, columns = test sets.

Builds the comparison models with :func:`fedsec.fda3_baselines.baseline_table`,
taking each device's natural/adversarial pairs from the same code and cache the
FDA³ devices used during the run (:class:`clients.adversarial.AdversarialClient`).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from clients import fda3_device
from clients.adversarial import AdversarialClient, weights_digest
from fedsec.attacks.evasion import ATTACKS
from fedsec.attacks.monitor import AttackMonitor
from fedsec.config import RunConfig
from fedsec.data import DatasetBundle, TensorSplit
from fedsec.fda3 import AdversarialPairs
from fedsec.fda3_baselines import baseline_table
from fedsec.training import get_weights


def fda3_table(
    config: RunConfig,
    bundle: DatasetBundle,
    *,
    initial: nn.Module,
    final: nn.Module,
    sets: Mapping[str, TensorSplit],
) -> dict[str, dict[str, float]]:
    """``{row: {test set: accuracy}}`` for None, X+AdvTrain, ALL+AdvTrain and FL+AdvTrain."""
    monitor = AttackMonitor.from_config(
        known=list(ATTACKS),
        assign=config.fda3_assign,
        new_attacks=config.fda3_new_attacks,
        num_partitions=config.num_clients,
    )
    attacks: list[str] = []
    for pid in monitor.partitions:
        attacks += [a for a in monitor.schemes_for(pid, 1) if a not in attacks]
    initial_weights = get_weights(initial)
    digest = weights_digest(initial_weights)

    def pairs_of(partition_id: int, schemes: tuple[str, ...]) -> AdversarialPairs:
        device = fda3_device(config, partition_id=partition_id, num_partitions=config.num_clients)
        assert isinstance(device, AdversarialClient)
        return device.pairs(schemes, initial_weights, digest)

    return baseline_table(
        initial=initial,
        final=final,
        monitor=monitor,
        attacks=attacks,
        pairs_of=pairs_of,
        sets=sets,
        num_classes=bundle.num_classes,
        alpha=config.fda3_alpha,
        steps=config.num_server_rounds,
        batch_size=config.fda3_batch_size,
        lr=config.server_learning_rate,
        betas=(config.server_beta1, config.server_beta2),
        seed=config.seed,
    )
