"""Checks that every name a run config uses resolves, before any Flower process starts.

``RunConfig`` checks values it can see alone; this checks the names that live
in registries of other packages (strategy, client roles, attacks) and builds
the strategy once with placeholder weights so that its own parsing (e.g. the
FDA³ attack monitor's assignment) fails now, with the config key in the message.
It also checks that the GPUs the run asks for (``device``,
``client-resources-num-gpus``) are there, since Ray waits forever for a GPU it
cannot find.
"""

from __future__ import annotations

import logging

from clients import CLIENT_ROLES, malicious_partitions
from clients.malicious import sampled_per_round
from clients.stealthy import check_stealthy_roles
from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from fedsec.roles import parse_roles
from strategies import build_strategy

logger = logging.getLogger(__name__)


def validate(config: RunConfig) -> None:
    """Raise a ``FedsecError`` (naming the key) if any name in ``config`` does not resolve.

    ``num-clients`` must be known (the ServerApp resolves 0 to the federation's node count first).
    """
    if config.num_clients < 1:
        raise ConfigError("num-clients must be >= 1 here (the ServerApp resolves 0 from the federation)")
    check_gpus(config)
    for role in sorted(set(parse_roles(config.roles, config.num_clients).values())):
        CLIENT_ROLES[role]
    if config.eval_attacks or config.attack_params or config.eval_attack_sizes:
        from fedsec.attacks.params import parse_attack_names, parse_attack_params, parse_attack_sizes

        parse_attack_names(config.eval_attacks)
        parse_attack_params(config.attack_params)
        parse_attack_sizes(config.eval_attack_sizes)
    if config.malicious_per_round:
        check_malicious_per_round(config)
    check_byzantine_bound(config)
    check_data(config)
    check_stealthy_roles(config, config.num_clients)
    flower = logging.getLogger("flwr")
    level = flower.level
    flower.setLevel(logging.ERROR)  # Flower's strategies log their settings; this build is only a check
    try:
        build_strategy(
            config,
            initial_arrays=[],
            accuracy_fn=(lambda weights: 0.0) if config.validation_size else None,
        )
    finally:
        flower.setLevel(level)


def check_gpus(config: RunConfig) -> None:
    """Raise ``ConfigError`` if the run asks for a GPU this machine does not have.

    ``device=cuda`` needs a CUDA device here (the ServerApp and, in a simulation,
    the clients run on this machine).  ``client-resources-num-gpus`` > 0 makes Ray
    reserve that much GPU per simulated client; without a GPU Ray can place no
    client and the run would hang instead of failing.
    """
    import torch

    from fedsec.device import resolve_device

    resolve_device(config.device)
    gpus = config.client_resources_num_gpus
    if gpus > 0 and not torch.cuda.is_available():
        raise ConfigError(
            f"config key 'client-resources-num-gpus' is {gpus:g} but no CUDA device is visible "
            "(torch.cuda.is_available() is False); Ray could place no client. Set "
            "client-resources-num-gpus=0 on a machine without a GPU"
        )
    if gpus > 0 and config.device == "cpu":
        logger.warning(
            "client-resources-num-gpus=%g reserves GPUs for clients that run on the CPU (device=cpu)", gpus
        )
    if gpus == 0 and config.device == "cuda":
        logger.warning(
            "device=cuda with client-resources-num-gpus=0: in a Ray simulation (`fedsec run`) clients see "
            "no GPU and fail; give each a share, e.g. client-resources-num-gpus=0.25"
        )


def check_malicious_per_round(config: RunConfig) -> None:
    """Raise ``ConfigError`` unless every round can hold ``malicious-per-round`` attackers."""
    k = config.malicious_per_round
    bad = len(malicious_partitions(config, config.num_clients))
    sampled = sampled_per_round(config)
    if k > bad:
        raise ConfigError(f"malicious-per-round={k} exceeds the {bad} malicious clients of 'roles'")
    if k > sampled or sampled - k > config.num_clients - bad:
        raise ConfigError(
            f"malicious-per-round={k} cannot be met in a sample of {sampled} clients "
            f"({bad} malicious, {config.num_clients - bad} benign)"
        )


#: Byzantine-robust rules → ``(a, b)``: with ``f`` assumed attackers they need ``n >= a·f + b`` updates
#: (Krum: n > 2f + 2, Blanchard et al. 2017; Bulyan: n >= 4f + 3, El Mhamdi et al. 2018).
BYZANTINE_BOUNDS = {
    "krum": (2, 3),
    "multikrum": (2, 3),
    "flower-krum": (2, 3),
    "flower-multikrum": (2, 3),
    "bulyan": (4, 3),
    "flower-bulyan": (4, 3),
}


def check_byzantine_bound(config: RunConfig) -> None:
    """Raise ``ConfigError`` if Krum/Bulyan's ``f`` is too large for the clients sampled per round.

    ``num-malicious-clients`` is the ``f`` these rules assume among the updates of
    one round, and a round holds ``ceil(fraction-fit · num-clients)`` of them, not
    ``num-clients``.  Bulyan keeps the previous model in a round below its bound
    (so a run would never move), and Krum loses its guarantee.
    """
    bound = BYZANTINE_BOUNDS.get(config.strategy)
    f = config.num_malicious_clients
    if bound is None or f == 0:
        return
    a, b = bound
    sampled = sampled_per_round(config)
    if sampled < a * f + b:
        raise ConfigError(
            f"strategy={config.strategy!r} with num-malicious-clients={f} needs n >= {a}f + {b} = "
            f"{a * f + b} updates per round, but fraction-fit={config.fraction_fit:g} of "
            f"num-clients={config.num_clients} samples n = {sampled}: set num-malicious-clients <= "
            f"{max(0, (sampled - b) // a)} (the attackers assumed per round) or sample more clients"
        )


def check_data(config: RunConfig) -> None:
    """Load the dataset and raise (naming the keys) if the server's splits and the clients cannot share it.

    Raises
    ------
    fedsec.errors.DataUnavailableError
        If the dataset is not installed or not under ``data-root`` (the message says what to do).
    ConfigError
        If the server-held splits take the whole training set, or there are more clients than examples.
    """
    from fedsec.experiment import load_bundle, server_split_sizes

    train = len(load_bundle(config).train)
    held = sum(server_split_sizes(config).values())
    if held >= train:
        raise ConfigError(
            f"validation-size + auxiliary-size + clean-size + pretrain-size = {held} leave nothing of the "
            f"{train} training examples of {config.dataset!r} for the clients"
        )
    if train - held < config.num_clients:
        raise ConfigError(
            f"num-clients={config.num_clients} is more than the {train - held} training examples of "
            f"{config.dataset!r} left for clients"
        )
