"""Flower clients for fedsec: a registry of client roles.

A role names the kind of client a node runs (``benign`` here; later modules add
adversarial-training devices, malicious clients and defending clients).  In
simulation a scenario assigns roles to partition ids; in deployment the
SuperNode's ``--node-config`` carries ``role``.  Every factory takes the run
config, the node's partition and returns a Flower ``NumPyClient``.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import RecordDict
from flwr.client import NumPyClient

from clients.benign import BenignClient, client_parts
from clients.malicious import MALICIOUS_FACTORIES, OBJECTIVES
from fedsec.config import RunConfig
from fedsec.experiment import client_data, data_key, load_bundle, new_model
from fedsec.registry import Registry
from fedsec.roles import parse_roles

ClientFactory = Callable[..., NumPyClient]


def benign_client(
    config: RunConfig,
    *,
    partition_id: int,
    num_partitions: int,
    state: RecordDict | None = None,
    cls: type[BenignClient] = BenignClient,
) -> BenignClient:
    """Build the honest client (or a ``cls`` subclass of it) for ``partition_id`` of ``num_partitions``."""
    return cls(**client_parts(config, partition_id=partition_id, num_partitions=num_partitions, state=state))


def dipsen_client(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
) -> NumPyClient:
    """Build the DiPSeN client (benign training, per-round seeded noise) for ``partition_id``."""
    from clients.dipsen import DiPSeNClient

    return benign_client(config, partition_id=partition_id, num_partitions=num_partitions, cls=DiPSeNClient)


def fda3_device(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
) -> NumPyClient:
    """Build the FDA³ adversarial-training device for ``partition_id``."""
    from clients.adversarial import AdversarialClient
    from fedsec.device import resolve_device
    from fedsec.evaluation import cache_dir_of

    bundle = load_bundle(config)
    data = client_data(config, bundle, partition_id=partition_id, num_partitions=num_partitions)
    return AdversarialClient(
        config=config,
        partition_id=partition_id,
        model=new_model(config, bundle),
        data=data,
        num_classes=bundle.num_classes,
        cache_dir=cache_dir_of(config),
        data_key=data_key(config, partition_id=partition_id, num_partitions=num_partitions),
        device=resolve_device(config.device),
    )


CLIENT_ROLES: Registry[ClientFactory] = Registry(
    "client role",
    {
        "benign": benign_client,
        "dipsen": dipsen_client,
        "fda3-device": fda3_device,
        **MALICIOUS_FACTORIES,
    },
)

#: Roles whose clients attack, mapped to what they are after (``targeted``: a source class read as the
#: target; ``backdoor``: a trigger read as the target; ``untargeted``: anything else). The scenario's
#: ground truth for detection counts, and which attack test sets the server measures.
MALICIOUS_ROLES: Registry[str] = Registry("malicious client role", OBJECTIVES)

#: What a malicious role may be after.
ATTACK_OBJECTIVES = ("targeted", "backdoor", "untargeted")


def register_role(name: str, factory: ClientFactory, *, objective: str | None = None) -> ClientFactory:
    """Register a client role; with ``objective`` (one of :data:`ATTACK_OBJECTIVES`) it is a malicious one."""
    if objective is not None and objective not in ATTACK_OBJECTIVES:
        choices = ", ".join(ATTACK_OBJECTIVES)
        raise ValueError(f"objective must be one of {choices} or None, got {objective!r}")
    CLIENT_ROLES.register(name, factory)
    if objective is not None:
        MALICIOUS_ROLES.register(name, objective)
    return factory


def malicious_partitions(config: RunConfig, num_partitions: int) -> frozenset[int]:
    """Partition ids the scenario's ``roles`` make malicious."""
    return frozenset(p for p, r in parse_roles(config.roles, num_partitions).items() if r in MALICIOUS_ROLES)


def role_of(
    config: RunConfig, *, partition_id: int, num_partitions: int, node_role: str | None = None
) -> str:
    """A node's role: its node config's ``role`` if set, else the scenario's ``roles`` map."""
    if node_role:
        return node_role
    return parse_roles(config.roles, num_partitions)[partition_id]


def build_client(
    config: RunConfig,
    *,
    partition_id: int,
    num_partitions: int,
    role: str = "benign",
    state: RecordDict | None = None,
) -> NumPyClient:
    """Build the client for ``role`` (see :data:`CLIENT_ROLES`); ``state`` is the node's Flower state."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id must be in [0, {num_partitions}), got {partition_id}")
    return CLIENT_ROLES[role](config, partition_id=partition_id, num_partitions=num_partitions, state=state)


__all__ = [
    "ATTACK_OBJECTIVES",
    "CLIENT_ROLES",
    "MALICIOUS_ROLES",
    "BenignClient",
    "benign_client",
    "build_client",
    "malicious_partitions",
    "register_role",
]
