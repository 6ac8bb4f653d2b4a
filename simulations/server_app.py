"""The fedsec Flower ServerApp: builds the strategy from the run config and runs the rounds.

It uses Flower's compatibility layer (``flwr.server.compat.start_grid`` with a
``flwr.server.strategy.Strategy``), evaluates the global model on the server's
held-out test split after every round — and, when ``eval-attacks`` names
attacks, on adversarial test sets made against the initial model — and writes
the run records (``metrics.jsonl``, ``summary.json``, ``accuracy.png``) to
``out-dir``.  With ``fda3-baselines`` it also trains the FDA³ paper's
comparison models and stores their table in ``summary.json``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.common import Context, NDArrays, Scalar, ndarrays_to_parameters
from flwr.server import Grid, ServerApp, ServerConfig
from flwr.server.compat import start_grid

from fedsec.config import RunConfig
from fedsec.data import DatasetBundle, TensorSplit
from fedsec.experiment import load_bundle, new_model, server_data
from fedsec.results import RunRecorder
from fedsec.roles import parse_roles
from fedsec.training import evaluate, get_weights, set_weights
from simulations.tables import final_tables
from simulations.validate import validate
from strategies import build_strategy
from strategies.sampling import SeededClientManager
from strategies.wrapper import GroundTruth

logger = logging.getLogger(__name__)

app = ServerApp()


def make_evaluate_fn(
    config: RunConfig,
    model: torch.nn.Module,
    test: TensorSplit,
    num_classes: int,
    recorder: RunRecorder,
    robust_sets: Mapping[str, TensorSplit] | None = None,
    attack_sets: Mapping[str, TensorSplit] | None = None,
) -> Any:
    """Server-side evaluation on the held-out test split (and robust/attack sets); closes each round's record.

    ``attack_sets`` maps a record key to a test set whose accuracy is recorded
    each round (see :func:`attack_test_sets`).
    """

    def evaluate_fn(
        server_round: int, parameters: NDArrays, fit_config: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]]:
        set_weights(model, parameters)
        result = evaluate(model, test.x, test.y, num_classes=num_classes, batch_size=config.eval_batch_size)
        extra: dict[str, Any] = {}
        for name, split in (attack_sets or {}).items():
            extra[name] = evaluate(
                model, split.x, split.y, num_classes=num_classes, batch_size=config.eval_batch_size
            ).accuracy
        if robust_sets:
            from fedsec.evaluation import accuracy_on

            extra["robust"] = accuracy_on(model, robust_sets, num_classes=num_classes)
        recorder.end_round(server_round, accuracy=result.accuracy, loss=result.loss, **extra)
        return result.loss, {"accuracy": result.accuracy}

    return evaluate_fn


def attack_test_sets(config: RunConfig, bundle: DatasetBundle, test: TensorSplit) -> dict[str, TensorSplit]:
    """The test sets that measure the scenario's attacks (by what its malicious roles are after).

    ``targeted_accuracy``: the source-class test samples labelled with the target (with
    ``targeted-samples``, only the chosen ones, and ``class_flip_rate`` the whole class);
    when a whole class is flipped, ``other_class_accuracy``: the test samples of every
    other class with their true labels (a full flip alone costs the source class's share
    of the clean accuracy, so this is what it leaves intact);
    ``asr``: every non-target test sample stamped with the global trigger, labelled the target.
    """
    from clients.malicious import OBJECTIVES, global_trigger, targeted_examples
    from fedsec.data.poisoning import backdoor_test_set, targeted_subset

    roles = set(parse_roles(config.roles, config.num_clients).values())
    objectives = {OBJECTIVES[r] for r in roles if r in OBJECTIVES}
    sets: dict[str, TensorSplit] = {}
    if "targeted" in objectives:
        whole_class = targeted_subset(test, source=config.attack_source, target=config.attack_target)
        if config.targeted_samples:
            sets["targeted_accuracy"] = targeted_examples(config)
            sets["class_flip_rate"] = whole_class
        else:
            sets["targeted_accuracy"] = whole_class
            others = np.flatnonzero(test.y.numpy() != config.attack_source)
            sets["other_class_accuracy"] = test.subset(others)
    if "backdoor" in objectives:
        trigger = global_trigger(config, bundle.input_shape)
        sets["asr"] = backdoor_test_set(test, trigger, target=config.attack_target)
    return sets


def ground_truth(config: RunConfig) -> GroundTruth:
    """The scenario's malicious clients (for detection counts in the records)."""
    from clients import malicious_partitions

    ids = malicious_partitions(config, config.num_clients)
    return GroundTruth(malicious=frozenset(str(i) for i in ids), start_round=config.attack_start_round)


def validation_accuracy_fn(
    config: RunConfig, model: torch.nn.Module, validation: TensorSplit, num_classes: int
) -> Callable[[NDArrays], float] | None:
    """Accuracy of full model weights on the server's validation split (for the accuracy detector)."""
    if len(validation) == 0:
        return None
    scratch = copy.deepcopy(model)

    def accuracy(weights: NDArrays) -> float:
        set_weights(scratch, weights)
        return evaluate(
            scratch, validation.x, validation.y, num_classes=num_classes, batch_size=config.eval_batch_size
        ).accuracy

    return accuracy


def fit_config(server_round: int) -> dict[str, Scalar]:
    """What every client receives with ``fit``: the round (seeds its local shuffling)."""
    return {"server-round": server_round}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of the configured strategy and write the records."""
    config = RunConfig.from_run_config(context.run_config)
    validate(config)
    torch.set_num_threads(max(1, config.torch_threads))
    bundle = load_bundle(config)
    splits = server_data(config, bundle)
    model = new_model(config, bundle)
    robust_sets: dict[str, TensorSplit] = {}
    if config.pretrain_epochs or config.eval_attacks:
        from fedsec.attacks.params import parse_attack_names, parse_attack_params
        from fedsec.evaluation import adversarial_test_sets, pretrain

        pretrain(config, bundle, model)
        attacks = parse_attack_names(config.eval_attacks)
        if attacks:
            robust_sets = adversarial_test_sets(
                config,
                model,
                splits["test"],
                attacks,
                num_classes=bundle.num_classes,
                params=parse_attack_params(config.attack_params),
            )
    initial = copy.deepcopy(model)
    recorder = RunRecorder(
        out_dir=Path(config.out_dir) if config.out_dir else None,
        scenario=config.scenario,
        config=config.to_run_config(),
    )
    truth = ground_truth(config)
    strategy = build_strategy(
        config,
        initial_parameters=ndarrays_to_parameters(get_weights(model)),
        evaluate_fn=make_evaluate_fn(
            config,
            model,
            splits["test"],
            bundle.num_classes,
            recorder,
            robust_sets,
            attack_test_sets(config, bundle, splits["test"]),
        ),
        on_fit_config_fn=fit_config,
        recorder=recorder,
        truth=truth,
        accuracy_fn=validation_accuracy_fn(config, model, splits["validation"], bundle.num_classes),
    )
    logger.info(
        "fedsec: scenario %s, strategy %s, %s rounds", config.scenario, strategy, config.num_server_rounds
    )
    start_grid(
        grid=grid,
        config=ServerConfig(num_rounds=config.num_server_rounds, round_timeout=config.round_timeout or None),
        strategy=strategy,
        client_manager=SeededClientManager(
            seed=config.seed,
            malicious=truth.malicious,
            malicious_per_round=config.malicious_per_round or None,
            timeout=config.round_timeout or None,
        ),
    )
    tables = final_tables(
        config,
        bundle,
        test=splits["test"],
        model=model,
        initial=initial,
        robust_sets=robust_sets,
        rounds=recorder.rounds,
        malicious=truth.malicious,
    )
    summary = recorder.finish(tables=tables)
    logger.info("fedsec: final accuracy %s", summary["final"].get("accuracy"))
