"""The FDA³ experiment's table (Song et al., Figs. 2 and 4): rows = models, columns = test sets.

Builds the comparison models with :func:`fedsec.fda3_baselines.baseline_models`,
taking each device's natural/adversarial pairs from the same code and cache the
FDA³ devices used during the run (:class:`clients.adversarial.AdversarialClient`).

Every cell is an accuracy on a set of ``n`` held-out images; a parallel table
holds each cell's 95% Wilson score interval as ``{"value", "low", "high", "n"}``
so a report can print ``0.81 [0.77, 0.85]``.  The test sets were made against
the initial model, so its row (``None (white-box)``) is white-box and every
other row a transfer attack; with ``fda3-white-box`` the trained models also get
a ``"<row> (white-box)"`` row, each attack made against that model itself on
``fda3-white-box-size`` held-out images.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from clients import fda3_device
from clients.adversarial import AdversarialClient, weights_digest
from fedsec.attacks.evasion import ATTACKS, generate
from fedsec.attacks.monitor import AttackMonitor
from fedsec.attacks.params import display_name, parse_attack_names, parse_attack_params
from fedsec.config import RunConfig
from fedsec.data import DatasetBundle, TensorSplit
from fedsec.evaluation import attack_set_size, attack_subset
from fedsec.fda3 import AdversarialPairs
from fedsec.fda3_baselines import FL_ROW, NONE_ROW, baseline_models
from fedsec.metrics import wilson_interval
from fedsec.training import evaluate, get_weights

#: ``{row: {column: (accuracy, n)}}``.
Cells = dict[str, dict[str, tuple[float, int]]]


def fda3_tables(
    config: RunConfig,
    bundle: DatasetBundle,
    *,
    initial: nn.Module,
    final: nn.Module,
    sets: Mapping[str, TensorSplit],
    test: TensorSplit,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float | int]]]]:
    """``({row: {test set: accuracy}}, {row: {test set: {"value", "low", "high", "n"}}})``."""
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

    models = baseline_models(
        initial=initial,
        final=final,
        monitor=monitor,
        attacks=attacks,
        pairs_of=pairs_of,
        alpha=config.fda3_alpha,
        epochs=config.fda3_baseline_epochs,
        rounds=config.num_server_rounds,
        batch_size=config.fda3_batch_size,
        lr=config.server_learning_rate,
        betas=(config.server_beta1, config.server_beta2),
        seed=config.seed,
    )
    num_classes = bundle.num_classes
    cells: Cells = {
        row: {
            name: (evaluate(model, s.x, s.y, num_classes=num_classes).accuracy, len(s))
            for name, s in sets.items()
        }
        for row, model in models.items()
    }
    trained = [row for row in models if row != NONE_ROW]
    for row in {"none": [], "final": [FL_ROW], "all": trained}[config.fda3_white_box]:
        cells[f"{row} (white-box)"] = white_box_cells(config, models[row], test, num_classes=num_classes)
    return accuracy_table(cells), interval_table(cells)


def white_box_cells(
    config: RunConfig, model: nn.Module, test: TensorSplit, *, num_classes: int
) -> dict[str, tuple[float, int]]:
    """Accuracy under each ``eval-attacks`` attack made against ``model`` itself, with the set size.

    Each attack runs on the first ``min(fda3-white-box-size, its eval-attack-sizes entry)``
    images of the run's seeded draw of held-out test images.
    """
    params = parse_attack_params(config.attack_params)
    cells: dict[str, tuple[float, int]] = {}
    for index, attack in enumerate(parse_attack_names(config.eval_attacks)):
        size = min(config.fda3_white_box_size, attack_set_size(config, attack))
        subset = attack_subset(test, size=size, seed=config.seed)
        x = generate(
            attack,
            model,
            subset.x,
            subset.y,
            num_classes=num_classes,
            params=params.get(attack),
            seed=config.seed + 2000 + index,
        )
        accuracy = evaluate(model, x, subset.y, num_classes=num_classes).accuracy
        cells[display_name(attack)] = (accuracy, len(subset))
    return cells


def accuracy_table(cells: Cells) -> dict[str, dict[str, float]]:
    """``{row: {column: accuracy}}``."""
    return {row: {column: value for column, (value, _) in cells[row].items()} for row in cells}


def interval_table(cells: Cells) -> dict[str, dict[str, dict[str, float | int]]]:
    """``{row: {column: {"value", "low", "high", "n"}}}``: each cell's 95% Wilson score interval."""
    table: dict[str, dict[str, dict[str, float | int]]] = {}
    for row, row_cells in cells.items():
        for column, (value, n) in row_cells.items():
            low, high = wilson_interval(value, n)
            table.setdefault(row, {})[column] = {"value": value, "low": low, "high": high, "n": n}
    return table
