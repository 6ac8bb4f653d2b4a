"""The fedsec Flower ServerApp (Message API): builds the strategy from the run config and runs the rounds.

``@app.main()`` waits for the federation's nodes (``num-clients = 0`` takes
every node the grid reports; otherwise that many must be there, or the run
stops within seconds with one line saying how to start them), builds the
strategy stack of :func:`strategies.build_strategy` and runs it with Flower's
``Strategy.start(grid=...)``.  After every round it evaluates the global model
on the server's held-out test split — and, when ``eval-attacks`` names attacks,
on adversarial test sets made against the initial model — and appends the
round to ``metrics.jsonl`` under ``out-dir`` (default ``runs/<scenario>-<time>``
under the directory the SuperLink runs in; the path is logged).  At the end it
writes ``summary.json`` and the plots, logs the per-round table, and fails the
run (so ``flwr`` reports it failed) when no round aggregated anything.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedsec.checkpoint import CHECKPOINT_DIR, load_checkpoint, save_checkpoint
from fedsec.config import RunConfig
from fedsec.contexts import seeded, torch_threads
from fedsec.data import DatasetBundle, TensorSplit
from fedsec.device import model_device, resolve_device
from fedsec.errors import ConfigError
from fedsec.experiment import client_data, derive_seed, load_bundle, new_model, server_data
from fedsec.results import RunRecorder
from fedsec.roles import parse_roles
from fedsec.training import evaluate, get_weights, set_weights
from simulations.tables import final_tables
from simulations.validate import validate
from strategies import GuardedStrategy, build_strategy
from strategies.grids import PollingGrid
from strategies.sampling import wait_for_nodes
from strategies.wrapper import GroundTruth, restore_strategy_state, strategy_state

logger = logging.getLogger(__name__)

app = ServerApp()

#: Loggers whose INFO lines go to Flower's log (``flwr log`` / ``flwr run --stream``).
APP_LOGGERS = ("fedsec", "strategies", "simulations", "clients")


#: The key that derives the server evaluation's random stream from the run seed (ASCII "eval").
EVALUATION_STREAM = 0x6576616C


class RunFailed(RuntimeError):
    """No round of the run aggregated an update (every client failed or was rejected)."""


def make_evaluate_fn(
    config: RunConfig,
    model: torch.nn.Module,
    test: TensorSplit,
    num_classes: int,
    recorder: RunRecorder,
    robust_sets: Mapping[str, TensorSplit] | None = None,
    attack_sets: Mapping[str, TensorSplit] | None = None,
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Server-side evaluation on the held-out test split (and robust/attack sets); closes each round's record.

    ``attack_sets`` maps a record key to a test set whose accuracy is recorded
    each round (see :func:`attack_test_sets`).  The evaluation runs on
    ``eval-threads`` intra-op threads (every usable core by default), since the
    clients are idle while the server evaluates.  LeNet, the CNN and DiPSeN
    record bitwise the same accuracy and loss at 1 and 2 threads (tested);
    ``eval-threads = 1`` keeps the evaluation on the one thread the rest of the
    ServerApp uses.
    """

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        set_weights(model, arrays.to_numpy_ndarrays())
        extra: dict[str, Any] = {}
        # a model with a random forward pass (DiPSeN's noise layer) scores the same at the same seed and
        # round, whatever ran before in this process (a resumed run included)
        with (
            torch_threads(config.eval_threads),
            seeded(derive_seed(config.seed, EVALUATION_STREAM, server_round), model_device(model)),
        ):
            result = evaluate(
                model, test.x, test.y, num_classes=num_classes, batch_size=config.eval_batch_size
            )
            for name, split in (attack_sets or {}).items():
                extra[name] = evaluate(
                    model, split.x, split.y, num_classes=num_classes, batch_size=config.eval_batch_size
                ).accuracy
            if robust_sets:
                from fedsec.evaluation import accuracy_on

                extra["robust"] = accuracy_on(model, robust_sets, num_classes=num_classes)
        recorder.end_round(server_round, accuracy=result.accuracy, loss=result.loss, **extra)
        return MetricRecord({"accuracy": float(result.accuracy), "loss": float(result.loss)})

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
    from clients import MALICIOUS_ROLES
    from clients.malicious import global_trigger, targeted_examples
    from fedsec.data.poisoning import targeted_subset
    from fedsec.data.triggers import backdoor_test_set

    roles = set(parse_roles(config.roles, config.num_clients).values())
    objectives = {MALICIOUS_ROLES[r] for r in roles if r in MALICIOUS_ROLES}
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
    return GroundTruth(
        malicious=frozenset(str(i) for i in ids),
        start_round=config.attack_start_round,
        end_round=config.attack_end_round,
    )


def validation_accuracy_fn(
    config: RunConfig, model: torch.nn.Module, validation: TensorSplit, num_classes: int
) -> Callable[[list[np.ndarray]], float] | None:
    """Accuracy of full model weights on the server's validation split (for the accuracy detector)."""
    if len(validation) == 0:
        return None
    scratch = copy.deepcopy(model)

    def accuracy(weights: list[np.ndarray]) -> float:
        set_weights(scratch, weights)
        return evaluate(
            scratch, validation.x, validation.y, num_classes=num_classes, batch_size=config.eval_batch_size
        ).accuracy

    return accuracy


def default_out_dir(config: RunConfig, *, now: float | None = None) -> Path:
    """``runs/<scenario>-<time>`` under the working directory (absolute)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return (Path.cwd() / "runs" / f"{config.scenario}-{stamp}").resolve()


def resolve(config: RunConfig, grid: Grid) -> RunConfig:
    """The run config with ``num-clients`` and ``out-dir`` filled in from the federation.

    Raises
    ------
    ConfigError
        For a scenario with a sweep, variants or seeds (those run through ``fedsec run``).
    strategies.sampling.NodeWaitError
        If the federation does not hold the nodes the run needs.
    """
    if config.sweep or config.variants or config.seeds:
        raise ConfigError(
            f"scenario {config.scenario} runs several variants or seeds; "
            f"run it with `fedsec run {config.scenario}` "
            "(or pick one with `fedsec run ... --only NAME`)"
        )
    nodes = wait_for_nodes(grid, expected=config.num_clients or None, settle=config.node_wait)
    if config.num_clients == 0:
        config = config.replace(num_clients=len(nodes))
    if not config.out_dir:
        config = config.replace(out_dir=str(default_out_dir(config)))
    return config


def route_logs() -> None:
    """Send fedsec's INFO lines to Flower's log handlers (this process only)."""
    flower = logging.getLogger("flwr")
    for name in APP_LOGGERS:
        target = logging.getLogger(name)
        target.setLevel(INFO)
        for handler in flower.handlers:
            if handler not in target.handlers:
                target.addHandler(handler)
        target.propagate = False


def round_table(rounds: Sequence[Mapping[str, Any]]) -> list[str]:
    """The per-round table as text lines: round, accuracy, loss, seconds, failures, rejected."""
    lines = [f"{'round':>5} {'accuracy':>9} {'loss':>9} {'seconds':>8} {'failures':>8} {'rejected':>8}"]
    for record in rounds:
        loss = record.get("loss")
        lines.append(
            f"{record['round']:>5} {record['accuracy']:>9.4f} "
            f"{(f'{loss:.4f}' if isinstance(loss, int | float) else '-'):>9} "
            f"{record.get('seconds', 0.0):>8.1f} {record.get('failures', 0):>8} "
            f"{len(record.get('rejected', {})):>8}"
        )
    return lines


def checkpointing(
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord],
    *,
    strategy: GuardedStrategy,
    directory: Path,
    config: RunConfig,
    after: int = 0,
) -> Callable[[int, ArrayRecord], MetricRecord | None]:
    """``evaluate_fn`` for a run resumed after round ``after``, writing a checkpoint after every round.

    Flower's ``start`` numbers the rounds it runs from 1; a resumed run's round
    ``r`` is round ``after + r``, and its round 0 (the model it resumed with)
    was already evaluated and recorded.
    """

    def evaluate_and_checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if after and server_round == 0:
            return None
        metrics = evaluate_fn(after + server_round, arrays)
        save_checkpoint(
            directory,
            round=after + server_round,
            arrays=arrays.to_numpy_ndarrays(),
            state=strategy_state(strategy),
            meta={"config": config.to_run_config()},
        )
        return metrics

    return evaluate_and_checkpoint


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds of the configured strategy and write the records.

    With ``resume = true`` the run continues from the checkpoint in ``out-dir``
    after its last complete round, and ends where the uninterrupted run ends.
    Replies are collected within milliseconds of arriving (:class:`~strategies.grids.PollingGrid`),
    not at Flower's fixed pull interval (3 s under the deployment engine).
    """
    route_logs()
    grid = PollingGrid(grid)
    config = resolve(RunConfig.from_run_config(context.run_config), grid)
    log(
        INFO,
        "fedsec: scenario %s on %s nodes; records → %s",
        config.scenario,
        config.num_clients,
        config.out_dir,
    )
    validate(config)
    torch.set_num_threads(max(1, config.torch_threads))
    out = Path(config.out_dir)
    checkpoint = load_checkpoint(out / CHECKPOINT_DIR) if config.resume else None
    after = checkpoint.round if checkpoint is not None else 0
    bundle = load_bundle(config)
    client_data(config, bundle, partition_id=0, num_partitions=config.num_clients)  # caches every partition
    splits = server_data(config, bundle)
    # The server's model (evaluation, pre-training, attacks, detectors' accuracy) runs on `device`.
    model = new_model(config, bundle).to(resolve_device(config.device))
    robust_sets = initial_model_and_sets(config, bundle, model, splits["test"])
    initial = copy.deepcopy(model)
    recorder = RunRecorder(
        out_dir=out,
        scenario=config.scenario,
        config=config.to_run_config(),
        resume_after=after if checkpoint is not None else None,
    )
    truth = ground_truth(config)
    weights = checkpoint.arrays if checkpoint is not None else get_weights(model)
    strategy = build_strategy(
        config,
        initial_arrays=get_weights(initial),
        recorder=recorder,
        truth=truth,
        accuracy_fn=validation_accuracy_fn(config, model, splits["validation"], bundle.num_classes),
        max_examples=len(bundle.train) - sum(len(split) for name, split in splits.items() if name != "test"),
    )
    if checkpoint is not None:
        restore_strategy_state(strategy, checkpoint.state)
        strategy.resume_after(after)
        set_weights(model, weights)
        log(INFO, "fedsec: resuming after round %s of %s", after, config.num_server_rounds)
    evaluate_fn = make_evaluate_fn(
        config,
        model,
        splits["test"],
        bundle.num_classes,
        recorder,
        robust_sets,
        attack_test_sets(config, bundle, splits["test"]),
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(weights),
        num_rounds=config.num_server_rounds - after,
        timeout=config.round_timeout or None,  # type: ignore[arg-type]  # None: no limit
        train_config=ConfigRecord(),
        evaluate_config=ConfigRecord(),
        evaluate_fn=checkpointing(
            evaluate_fn, strategy=strategy, directory=out / CHECKPOINT_DIR, config=config, after=after
        ),
    )
    finish(config, bundle, splits["test"], model, initial, robust_sets, recorder, strategy, truth)


def initial_model_and_sets(
    config: RunConfig, bundle: DatasetBundle, model: torch.nn.Module, test: TensorSplit
) -> dict[str, TensorSplit]:
    """Pre-train ``model`` in place (``pretrain-epochs``; cached) and make the ``eval-attacks`` test sets."""
    if not (config.pretrain_epochs or config.eval_attacks):
        return {}
    from fedsec.attacks.params import parse_attack_names, parse_attack_params
    from fedsec.evaluation import adversarial_test_sets, pretrain

    pretrain(config, bundle, model)
    attacks = parse_attack_names(config.eval_attacks)
    if not attacks:
        return {}
    return adversarial_test_sets(
        config,
        model,
        test,
        attacks,
        num_classes=bundle.num_classes,
        params=parse_attack_params(config.attack_params),
    )


def finish(
    config: RunConfig,
    bundle: DatasetBundle,
    test: TensorSplit,
    model: torch.nn.Module,
    initial: torch.nn.Module,
    robust_sets: Mapping[str, TensorSplit],
    recorder: RunRecorder,
    strategy: GuardedStrategy,
    truth: GroundTruth,
) -> None:
    """The end-of-run tables, ``summary.json`` and the logged table; fail the run if nothing aggregated."""
    tables = final_tables(
        config,
        bundle,
        test=test,
        model=model,
        initial=initial,
        robust_sets=robust_sets,
        rounds=recorder.rounds,
        malicious=truth.malicious,
    )
    failed = strategy.aggregated_rounds == 0
    reason = (
        f"no round aggregated an update: {strategy.first_problem or 'no client replied'}" if failed else ""
    )
    status = {"status": "failed", "reason": reason} if failed else {"status": "completed"}
    summary = recorder.finish(tables=tables, **status)
    for line in round_table(recorder.rounds):
        log(INFO, "fedsec: %s", line)
    log(INFO, "fedsec: final accuracy %s; records in %s", summary["final"].get("accuracy"), config.out_dir)
    if failed:
        raise RunFailed(reason)
