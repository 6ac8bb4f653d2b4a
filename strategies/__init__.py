"""Flower strategies for fedsec: a registry of names to Flower ``Strategy`` factories.

Every factory receives the run's :class:`~fedsec.config.RunConfig` and the
keyword arguments every Flower strategy takes (fractions, minimum clients,
server-side ``evaluate_fn``, ``on_fit_config_fn``, ``initial_parameters``,
metric aggregation), and returns a Flower strategy.  :func:`build_strategy`
wraps the result in :class:`~strategies.guard.GuardedStrategy`, so every
strategy, built-in or new, rejects malformed updates and survives failed
clients.

Adding a strategy is ordinary Flower: subclass one, override ``aggregate_fit``,
and add a line to :data:`STRATEGIES` (see the README).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from flwr.common import Parameters
from flwr.server.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, Strategy

from fedsec.config import RunConfig
from fedsec.registry import Registry
from fedsec.results import RunRecorder
from strategies.guard import GuardedStrategy
from strategies.wrapper import GroundTruth, ServerEnv

#: ``factory(config, base, env)``: ``base`` holds Flower's strategy keyword arguments,
#: ``env`` the run record, ground truth and validation accuracy (:class:`ServerEnv`).
StrategyFactory = Callable[[RunConfig, dict[str, Any], ServerEnv], Strategy]


def _fda3(config: RunConfig, base: dict[str, Any], env: ServerEnv) -> Strategy:
    from fedsec.attacks.evasion import ATTACKS
    from fedsec.attacks.monitor import AttackMonitor
    from strategies.fda3 import FDA3

    monitor = AttackMonitor.from_config(
        known=list(ATTACKS),
        assign=config.fda3_assign,
        new_attacks=config.fda3_new_attacks,
        num_partitions=config.num_clients,
    )
    return FDA3(
        **base,
        monitor=monitor,
        server_learning_rate=config.server_learning_rate,
        betas=(config.server_beta1, config.server_beta2),
    )


def _multikrum(config: RunConfig, base: dict[str, Any], env: ServerEnv) -> Strategy:
    keep = config.multikrum_keep or max(1, config.num_clients - config.num_malicious_clients)
    return Krum(**base, num_malicious_clients=config.num_malicious_clients, num_clients_to_keep=keep)


def _layered(config: RunConfig, base: dict[str, Any], env: ServerEnv) -> Strategy:
    from strategies.layered import LayeredDefense

    return LayeredDefense.from_config(config, inner=FedAvg(**base), env=env)


def _foolsgold(config: RunConfig, base: dict[str, Any], env: ServerEnv) -> Strategy:
    from strategies.foolsgold import FoolsGold

    return FoolsGold(**base, kappa=config.foolsgold_kappa, env=env)


def _flame(config: RunConfig, base: dict[str, Any], env: ServerEnv) -> Strategy:
    from strategies.flame import Flame

    return Flame(**base, noise_lambda=config.flame_noise, seed=config.seed, env=env)


STRATEGIES: Registry[StrategyFactory] = Registry(
    "strategy",
    {
        "fedavg": lambda config, base, env: FedAvg(**base),
        "fedmedian": lambda config, base, env: FedMedian(**base),
        "fedtrimmedavg": lambda config, base, env: FedTrimmedAvg(**base, beta=config.trim_beta),
        "krum": lambda config, base, env: Krum(
            **base, num_malicious_clients=config.num_malicious_clients, num_clients_to_keep=0
        ),
        "multikrum": _multikrum,
        "fda3": _fda3,
        "bulyan": lambda config, base, env: Bulyan(
            **base, num_malicious_clients=config.num_malicious_clients, to_keep=0
        ),
        "layered": _layered,
        "foolsgold": _foolsgold,
        "flame": _flame,
    },
)


def weighted_metrics(metrics: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Example-weighted mean of every numeric metric the clients reported."""
    total = sum(n for n, _ in metrics)
    if total == 0:
        return {}
    keys = {k for _, m in metrics for k, v in m.items() if isinstance(v, int | float) and k != "partition-id"}
    return {k: sum(n * float(m.get(k, 0.0)) for n, m in metrics) / total for k in sorted(keys)}


def flower_kwargs(
    config: RunConfig,
    *,
    initial_parameters: Parameters,
    evaluate_fn: Callable[..., Any] | None,
    on_fit_config_fn: Callable[[int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The keyword arguments every Flower strategy takes, filled from ``config``."""
    min_fit = max(1, math.ceil(config.fraction_fit * config.num_clients))
    min_eval = (
        max(1, math.ceil(config.fraction_evaluate * config.num_clients)) if config.fraction_evaluate else 0
    )
    return {
        "fraction_fit": config.fraction_fit,
        "fraction_evaluate": config.fraction_evaluate,
        "min_fit_clients": min_fit,
        "min_evaluate_clients": min_eval,
        "min_available_clients": config.num_clients,
        "evaluate_fn": evaluate_fn,
        "on_fit_config_fn": on_fit_config_fn,
        "accept_failures": True,
        "initial_parameters": initial_parameters,
        "fit_metrics_aggregation_fn": weighted_metrics,
        "evaluate_metrics_aggregation_fn": weighted_metrics,
    }


def build_strategy(
    config: RunConfig,
    *,
    initial_parameters: Parameters,
    evaluate_fn: Callable[..., Any] | None = None,
    on_fit_config_fn: Callable[[int], dict[str, Any]] | None = None,
    recorder: RunRecorder | None = None,
    truth: GroundTruth | None = None,
    accuracy_fn: Callable[[Any], float] | None = None,
) -> GuardedStrategy:
    """Build ``config.strategy`` from :data:`STRATEGIES`, wrapped in the update guard.

    With ``detectors`` configured, or malicious clients in ``truth``, the
    strategy is first wrapped in :class:`~strategies.detection.DetectionStrategy`
    (which drops flagged updates, or only measures when no detector is on).
    ``accuracy_fn`` (validation accuracy of full model weights) feeds the
    accuracy detector.
    """
    factory = STRATEGIES[config.strategy]
    base = flower_kwargs(
        config,
        initial_parameters=initial_parameters,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=on_fit_config_fn,
    )
    env = ServerEnv(recorder=recorder, truth=truth or GroundTruth(), accuracy_fn=accuracy_fn)
    strategy = factory(config, base, env)
    if config.server_distill:
        from strategies.layered import ServerDistillation

        strategy = ServerDistillation.from_config(config, inner=strategy, env=env)
    if config.detectors or env.truth.malicious:
        from strategies.detection import DetectionStrategy

        strategy = DetectionStrategy.from_config(
            config, inner=strategy, accuracy_fn=accuracy_fn, recorder=recorder, truth=env.truth
        )
    if config.audit:
        from strategies.gan_audit import AuditStrategy

        strategy = AuditStrategy.from_config(config, inner=strategy, env=env)
    return GuardedStrategy(inner=strategy, recorder=recorder)


__all__ = ["STRATEGIES", "StrategyFactory", "build_strategy", "flower_kwargs", "weighted_metrics"]
