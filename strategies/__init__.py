"""Server strategies for fedsec on Flower's Message API (``flwr.serverapp.strategy``).

Every strategy here takes plain keyword arguments and plugs into any Flower
app: :class:`~strategies.guard.GuardedStrategy` and the defense wrappers
(:class:`~strategies.layered.LayeredDefense`,
:class:`~strategies.detection.DetectionStrategy`,
:class:`~strategies.gan_audit.AuditStrategy`,
:class:`~strategies.layered.ServerDistillation`) wrap any Message-API
strategy, Flower's own ``FedAvg``, ``FedMedian`` or ``Krum`` included;
:class:`~strategies.fda3.FDA3`, :class:`~strategies.foolsgold.FoolsGold` and
:class:`~strategies.flame.Flame` are ``FedAvg`` subclasses.  Building them
from fedsec's run config is :mod:`strategies.registry`.
"""

from __future__ import annotations

from strategies.guard import GuardedStrategy
from strategies.registry import STRATEGIES, StrategyFactory, build_strategy, flower_kwargs, weighted_metrics
from strategies.sampling import SeededSampler
from strategies.wrapper import FilteringStrategy, GroundTruth, ServerEnv, StrategyWrapper, Verdict

__all__ = [
    "STRATEGIES",
    "FilteringStrategy",
    "GroundTruth",
    "GuardedStrategy",
    "SeededSampler",
    "ServerEnv",
    "StrategyFactory",
    "StrategyWrapper",
    "Verdict",
    "build_strategy",
    "flower_kwargs",
    "weighted_metrics",
]
