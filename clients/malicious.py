"""Malicious Flower clients: the registry of attacker roles, by family.

* :mod:`clients.attacker` — the base :class:`MaliciousClient` (honest before
  ``attack-start-round``) and what every attacker shares;
* :mod:`clients.data_poisoning` — label flipping, BadNets pixel triggers (Gu et
  al. 2017), DBA (Xie et al. 2020), the clean-label backdoor (Turner et al.
  2019), Bhagoji et al.'s boosting and constrain-and-scale (Bagdasaryan et al.
  2020): the attacks the layered-defense and PDGAN papers are judged against;
* :mod:`clients.stealthy` — Chen et al., "Towards multi-party targeted model
  poisoning attacks against federated learning systems" (High-Confidence
  Computing 2021): colluding stealthy clients with perfect or limited knowledge
  and the single-node baselines SNAL2 and SAnoDC.

The names other modules import from here stay available here.
"""

from __future__ import annotations

from typing import Any

from clients.attacker import (
    HISTORY_KEY,
    POISON_STREAM,
    MaliciousClient,
    attacker_parts,
    global_trigger,
    poison_seed,
    sampled_per_round,
)
from clients.data_poisoning import DATA_POISONING_FACTORIES
from clients.stealthy import (
    STEALTH_VARIANTS,
    STEALTHY_FACTORIES,
    Stealth,
    StealthyClient,
    benign_partitions,
    known_benign_partitions,
    parse_lambdas,
    poison_sets,
    simulated_benign_updates,
    targeted_examples,
)

#: What each malicious role is after: ``targeted`` (source-class test samples
#: classified as the target) or ``backdoor`` (triggered test samples → target).
OBJECTIVES = {
    "label-flip": "targeted",
    "boosted": "targeted",
    **dict.fromkeys(STEALTH_VARIANTS, "targeted"),
    "badnets": "backdoor",
    "dba": "backdoor",
    "clean-label": "backdoor",
    "constrain-scale": "backdoor",
}

#: Malicious client roles (merged into :data:`clients.CLIENT_ROLES`).
MALICIOUS_FACTORIES: dict[str, Any] = {**DATA_POISONING_FACTORIES, **STEALTHY_FACTORIES}

__all__ = [
    "HISTORY_KEY",
    "MALICIOUS_FACTORIES",
    "OBJECTIVES",
    "POISON_STREAM",
    "STEALTH_VARIANTS",
    "MaliciousClient",
    "Stealth",
    "StealthyClient",
    "attacker_parts",
    "benign_partitions",
    "global_trigger",
    "known_benign_partitions",
    "parse_lambdas",
    "poison_seed",
    "poison_sets",
    "sampled_per_round",
    "simulated_benign_updates",
    "targeted_examples",
]
