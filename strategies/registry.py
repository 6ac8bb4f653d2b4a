"""From fedsec's run config to a strategy: the registry of names and the glue that builds each one.

Every strategy class in this package takes plain keyword arguments and works
in any Flower app; this module is the only place that reads a
:class:`~fedsec.config.RunConfig` to build them.  A factory in
:data:`STRATEGIES` receives the config, the keyword arguments every Flower
strategy takes (``base``: it trains and evaluates every node the grid view
holds, because the guard's seeded sampler chooses them) and the
:class:`~strategies.wrapper.ServerEnv`, and returns a Message-API strategy.
:func:`build_strategy` stacks the cross-cutting wrappers the config asks for
(server distillation, detectors, the GAN audit) and the update guard on top.

A new strategy is ordinary Flower: subclass one of ``flwr.serverapp.strategy``,
override ``aggregate_train``, and register a factory::

    STRATEGIES.register("clipped-fedavg", lambda config, base, env: ClippedFedAvg(**base))
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Strategy

from fedsec.config import RunConfig
from fedsec.device import resolve_device
from fedsec.errors import ConfigError
from fedsec.registry import Registry
from fedsec.results import RunRecorder
from strategies.guard import GuardedStrategy
from strategies.messages import PARTITION_KEY
from strategies.robust import MatrixBulyan, MatrixFedAvg, MatrixKrum, MatrixMedian, MatrixTrimmedAvg
from strategies.sampling import SeededSampler
from strategies.wrapper import GroundTruth, NDArrays, ServerEnv

logger = logging.getLogger(__name__)

__all__ = [
    "STRATEGIES",
    "StrategyFactory",
    "build_strategy",
    "flower_kwargs",
    "sampler_for",
    "weighted_metrics",
]

#: ``factory(config, base, env)``: ``base`` holds Flower's strategy keyword arguments,
#: ``env`` the run record, ground truth, validation accuracy and initial model (:class:`ServerEnv`).
StrategyFactory = Callable[[RunConfig, dict[str, Any], ServerEnv], Strategy]


def weighted_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Example-weighted mean of every numeric metric the replies share (``partition-id`` left out)."""
    metrics = [next(iter(r.metric_records.values())) for r in records if r.metric_records]
    weights = [_number(m.get(weighting_key)) for m in metrics]
    total = sum(weights)
    if not metrics or total <= 0:
        return MetricRecord()
    keys = set.intersection(*(set(m.keys()) for m in metrics)) - {weighting_key, PARTITION_KEY}
    out = MetricRecord()
    for key in sorted(keys):
        values = [m[key] for m in metrics]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = sum(w * _number(v) for w, v in zip(weights, values, strict=True)) / total
    return out


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def flower_kwargs(config: RunConfig) -> dict[str, Any]:
    """The keyword arguments every Flower strategy gets: train/evaluate every node of the round's view."""
    evaluate = config.fraction_evaluate > 0
    return {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0 if evaluate else 0.0,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1 if evaluate else 0,
        "min_available_nodes": 1,
        "train_metrics_aggr_fn": weighted_metrics,
        "evaluate_metrics_aggr_fn": weighted_metrics,
    }


def _fda3(config: RunConfig, base: dict[str, Any], env: ServerEnv) -> Strategy:
    from fedsec.attacks.evasion import ATTACKS
    from fedsec.attacks.monitor import AttackMonitor
    from fedsec.experiment import load_bundle, new_model
    from fedsec.fda3 import buffer_positions
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
        initial_arrays=env.initial_arrays or [],
        server_learning_rate=config.server_learning_rate,
        betas=(config.server_beta1, config.server_beta2),
        buffers=buffer_positions(new_model(config, load_bundle(config))) if env.initial_arrays else (),
    )


def _f(config: RunConfig) -> int:
    return config.num_malicious_clients


def _multikrum_keep(config: RunConfig) -> int:
    """``multikrum-keep``, else ``n − f`` of the ``n`` clients sampled per round (``fraction-fit``)."""
    sampled = max(1, math.ceil(config.fraction_fit * config.num_clients))
    return config.multikrum_keep or max(1, sampled - config.num_malicious_clients)


def layered_defense(config: RunConfig, inner: Strategy, env: ServerEnv) -> Strategy:
    """:class:`~strategies.layered.LayeredDefense` from the ``layered-*`` keys."""
    from strategies.layered import LayeredDefense

    return LayeredDefense(
        inner=inner,
        drop_negative=config.layered_drop_negative,
        cluster=config.layered_cluster,
        clip=config.layered_clip,
        min_samples=config.layered_min_samples or None,
        recorder=env.recorder,
        truth=env.truth,
    )


def _foolsgold(config: RunConfig, base: dict[str, Any], env: ServerEnv) -> Strategy:
    from strategies.foolsgold import FoolsGold

    return FoolsGold(**base, kappa=config.foolsgold_kappa, env=env)


def _flame(config: RunConfig, base: dict[str, Any], env: ServerEnv) -> Strategy:
    from strategies.flame import Flame

    return Flame(**base, noise_lambda=config.flame_noise, seed=config.seed, env=env)


#: fedsec's aggregators on the round's update matrix (:mod:`strategies.robust`); Flower's own under
#: ``flower-<name>`` compute the same from the replies.
STRATEGIES: Registry[StrategyFactory] = Registry(
    "strategy",
    {
        "fedavg": lambda config, base, env: MatrixFedAvg(**base),
        "fedmedian": lambda config, base, env: MatrixMedian(**base),
        "fedtrimmedavg": lambda config, base, env: MatrixTrimmedAvg(**base, beta=config.trim_beta),
        "krum": lambda config, base, env: MatrixKrum(**base, num_malicious_nodes=_f(config)),
        "multikrum": lambda config, base, env: MatrixKrum(
            **base, num_malicious_nodes=_f(config), num_nodes_to_select=_multikrum_keep(config)
        ),
        "bulyan": lambda config, base, env: MatrixBulyan(**base, num_malicious_nodes=_f(config)),
        "flower-fedavg": lambda config, base, env: FedAvg(**base),
        "flower-fedmedian": lambda config, base, env: FedMedian(**base),
        "flower-fedtrimmedavg": lambda config, base, env: FedTrimmedAvg(**base, beta=config.trim_beta),
        "flower-krum": lambda config, base, env: Krum(**base, num_malicious_nodes=_f(config)),
        "flower-multikrum": lambda config, base, env: MultiKrum(
            **base, num_malicious_nodes=_f(config), num_nodes_to_select=_multikrum_keep(config)
        ),
        "flower-bulyan": lambda config, base, env: Bulyan(**base, num_malicious_nodes=_f(config)),
        "fda3": _fda3,
        "layered": lambda config, base, env: layered_defense(config, MatrixFedAvg(**base), env),
        "foolsgold": _foolsgold,
        "flame": _flame,
    },
)


def server_distillation(config: RunConfig, inner: Strategy, env: ServerEnv) -> Strategy:
    """:class:`~strategies.layered.ServerDistillation` from ``distill-*`` and the clean split.

    Raises
    ------
    ConfigError
        If ``clean-size`` is 0 (there is nothing to distill on).
    """
    from fedsec.experiment import load_bundle, new_model, server_data
    from strategies.layered import ServerDistillation

    if config.clean_size <= 0:
        raise ConfigError("server-distill needs clean-size > 0 (a clean server-held set)")
    bundle = load_bundle(config)
    return ServerDistillation(
        inner=inner,
        model=new_model(config, bundle),
        clean=server_data(config, bundle)["clean"],
        delta=config.distill_delta,
        epochs=config.server_distill_epochs or config.distill_epochs,
        learning_rate=config.distill_learning_rate,
        batch_size=config.batch_size,
        seed=config.seed,
        recorder=env.recorder,
        device=resolve_device(config.device),
    )


def detection(config: RunConfig, inner: Strategy, env: ServerEnv) -> Strategy:
    """:class:`~strategies.detection.DetectionStrategy` from ``detectors`` and the threshold keys."""
    from fedsec.defenses.detection import Thresholds, parse_detectors
    from strategies.detection import DetectionStrategy

    try:
        detectors = parse_detectors(config.detectors)
    except ValueError as error:
        raise ConfigError(f"config key 'detectors': {error}") from None
    return DetectionStrategy(
        inner=inner,
        detectors=detectors,
        thresholds=Thresholds(
            accuracy_gamma=config.accuracy_gamma or None,
            l2_ratio=config.l2_ratio_threshold or None,
            cosine_gap=config.cosine_gap or None,
        ),
        calibration_rounds=config.calibration_rounds,
        margin=config.detector_margin,
        drop=config.detectors_drop,
        accuracy_fn=env.accuracy_fn,
        recorder=env.recorder,
        truth=env.truth,
    )


def audit(config: RunConfig, inner: Strategy, env: ServerEnv) -> Strategy:
    """:class:`~strategies.gan_audit.AuditStrategy` from the ``audit*``, ``auxiliary-*``, ``gan-*`` and
    ``inversion-*`` keys.

    Raises
    ------
    ConfigError
        If ``audit`` is not set, ``auxiliary-classes`` is malformed, ``audit=gan``
        has no auxiliary data, or ``gan-d-iter`` is set without ``audit=gan`` (the
        message names the key).
    """
    from fedsec.experiment import load_bundle, new_model, server_data
    from strategies.gan_audit import GENERATORS, AuditStrategy, parse_classes

    if config.audit not in GENERATORS:
        raise ConfigError(f"config key 'audit' must be one of: {', '.join(GENERATORS)}, got {config.audit!r}")
    if config.gan_d_iter and config.audit != "gan":
        raise ConfigError(
            f"config key 'gan-d-iter' counts GAN iterations: it needs audit=gan, got audit={config.audit!r}"
        )
    bundle = load_bundle(config)
    classes = parse_classes(config.auxiliary_classes, num_classes=bundle.num_classes)
    auxiliary = server_data(config, bundle)["auxiliary"]
    if config.audit == "gan" and len(auxiliary) == 0:
        raise ConfigError(
            "audit=gan needs auxiliary-size > 0 (the server's labelled auxiliary set the GAN trains on), "
            f"got config key 'auxiliary-size'={config.auxiliary_size}"
        )
    auxiliary = auxiliary.subset(np.flatnonzero(np.isin(auxiliary.y.numpy(), classes)))
    if config.audit == "gan" and len(auxiliary) == 0:
        raise ConfigError(
            f"audit=gan: the auxiliary set holds no example of config key 'auxiliary-classes'="
            f"{config.auxiliary_classes!r}; raise 'auxiliary-size' or choose other classes"
        )
    logger.info(
        "PDGAN audit (%s): %s auxiliary examples of classes %s", config.audit, len(auxiliary), classes
    )
    return AuditStrategy(
        inner=inner,
        generator=config.audit,
        start_round=config.audit_start_round,
        theta=config.audit_threshold,
        relative=config.audit_relative,
        consensus=config.audit_consensus,
        per_class=config.audit_per_class,
        score=config.audit_score,
        audit_size=config.audit_size,
        model=new_model(config, bundle),
        model_name=config.model,
        input_shape=bundle.input_shape,
        num_classes=bundle.num_classes,
        auxiliary=auxiliary,
        gan_steps=config.gan_steps,
        gan_batch_size=config.gan_batch_size,
        gan_learning_rate=config.gan_learning_rate,
        gan_class_balance=config.gan_class_balance,
        gan_generator=config.gan_generator,
        discriminator_init=config.gan_discriminator_init,
        d_iter=config.gan_d_iter,
        inversion_steps=config.inversion_steps,
        inversion_learning_rate=config.inversion_learning_rate,
        seed=config.seed,
        out_dir=Path(config.out_dir) if config.out_dir else None,
        recorder=env.recorder,
        truth=env.truth,
        device=resolve_device(config.device),
    )


def sampler_for(config: RunConfig, truth: GroundTruth) -> SeededSampler:
    """The seeded node sampler of a run (``fraction-fit``, ``fraction-evaluate``, ``malicious-per-round``)."""
    return SeededSampler(
        seed=config.seed,
        fraction_train=config.fraction_fit,
        fraction_evaluate=min(1.0, config.fraction_evaluate),
        malicious=truth.malicious,
        malicious_per_round=config.malicious_per_round or None,
        timeout=config.round_timeout or None,
    )


def build_strategy(
    config: RunConfig,
    *,
    initial_arrays: NDArrays | None = None,
    recorder: RunRecorder | None = None,
    truth: GroundTruth | None = None,
    accuracy_fn: Callable[[NDArrays], float] | None = None,
    max_examples: int | None = None,
) -> GuardedStrategy:
    """Build ``config.strategy`` from :data:`STRATEGIES`, wrapped as the config asks and in the update guard.

    With ``server-distill`` the aggregate is distilled on the clean set; with
    ``detectors`` configured, or malicious clients in ``truth``, the strategy is
    wrapped in :class:`~strategies.detection.DetectionStrategy` (which drops
    flagged updates, or only measures when no detector is on); with ``audit`` in
    the PDGAN audit.  ``accuracy_fn`` (validation accuracy of full model weights)
    feeds the accuracy detector; ``initial_arrays`` is the initial global model; ``max_examples``
    (the federation's training examples) is the most ``num-examples`` the guard accepts from a client.
    """
    factory = STRATEGIES[config.strategy]
    env = ServerEnv(
        recorder=recorder,
        truth=truth or GroundTruth(),
        accuracy_fn=accuracy_fn,
        initial_arrays=list(initial_arrays) if initial_arrays is not None else None,
    )
    strategy = factory(config, flower_kwargs(config), env)
    if config.server_distill:
        strategy = server_distillation(config, strategy, env)
    if config.detectors or env.truth.malicious:
        strategy = detection(config, strategy, env)
    if config.audit:
        strategy = audit(config, strategy, env)
    return GuardedStrategy(
        inner=strategy,
        recorder=recorder,
        sampler=sampler_for(config, env.truth),
        norm_bound=config.update_norm_bound or None,
        examples_bound=config.num_examples_bound or None,
        max_examples=max_examples,
    )
