"""Paper-style tables a run computes after its last round (``summary.json`` → ``tables``).

* ``Precision/recall/F1`` — macro scores of the final model on the test split
  (rows Accuracy, Precision, Recall, F1, Support; column = the model);
* ``Robust accuracy (Fig. 6)`` — with ``robust-attacks``: clean accuracy and
  accuracy under each attack made white-box against the final model on
  ``eval-attack-size`` held-out images, plus the noise-averaged (EOT) variant of
  each attack when ``robust-eot-samples`` > 1, per ``robust-harness`` (the
  paper's clipped-softmax rows are suffixed ``(paper harness: clipped softmax)``),
  and per harness the fraction of those images whose input gradient is exactly
  zero (``Zero input gradient (logits|paper)``);
* ``Training-step overhead`` — with ``measure-overhead``: milliseconds per SGD
  step of the model and of its counterpart (DiPSeN ↔ basic CNN), timed side by
  side in this run, and their ratio;
* ``Privacy (DP-SGD)`` — with ``dp-sgd-clip`` on DiPSeN clients: the ε a client
  has spent by the last round (Flower's RDP accountant);
* the FDA³ comparison table (:mod:`simulations.fda3_report`) with ``fda3-baselines``,
  and beside it ``FDA3 accuracy (Fig. 2/4) 95% CI``: the same cells as
  ``{"value", "low", "high", "n"}`` (Wilson score interval on ``n`` images);
* the poisoning tables (:mod:`simulations.poisoning_report`) when the round
  records hold update statistics (runs with attackers or detectors);
* the layered defense's step-1 count (:mod:`simulations.layered_report`) when
  the rounds record ``layered_step1``.

Column names are the models' paper names, so a sweep over ``model`` merges the
runs' tables into the paper's side-by-side layout.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from torch import nn

from fedsec.config import RunConfig
from fedsec.data import DatasetBundle, TensorSplit
from fedsec.device import resolve_device
from fedsec.experiment import client_partition_sizes, new_model
from fedsec.metrics import classification_scores
from fedsec.training import evaluate

MODEL_NAMES = {
    "dipsen": "DiPSeN",
    "dipsen-basic": "Basic CNN",
    "dipsen-paper": "DiPSeN (paper layout)",
    "dipsen-paper-basic": "Basic CNN (paper layout)",
    "lenet": "LeNet-5",
    "cnn": "CNN",
    "resnet18": "ResNet-18",
}
COUNTERPART = {
    "dipsen": "dipsen-basic",
    "dipsen-basic": "dipsen",
    "dipsen-paper": "dipsen-paper-basic",
    "dipsen-paper-basic": "dipsen-paper",
}
#: The basic CNN each DiPSeN model's overhead is measured against.
BASIC = {"dipsen": "dipsen-basic", "dipsen-paper": "dipsen-paper-basic"}
SCORES_TABLE = "Precision/recall/F1"
ROBUST_TABLE = "Robust accuracy (Fig. 6)"
OVERHEAD_TABLE = "Training-step overhead"
PRIVACY_TABLE = "Privacy (DP-SGD)"
FDA3_TABLE = "FDA3 accuracy (Fig. 2/4)"
#: Suffix of a table that holds another table's cells with their 95% intervals.
CI_SUFFIX = " 95% CI"
FDA3_CI_TABLE = FDA3_TABLE + CI_SUFFIX


def model_name(model: str) -> str:
    """The paper's name for a registered model."""
    return MODEL_NAMES.get(model, model)


def final_tables(
    config: RunConfig,
    bundle: DatasetBundle,
    *,
    test: TensorSplit,
    model: nn.Module,
    initial: nn.Module,
    robust_sets: Mapping[str, TensorSplit],
    rounds: Sequence[Mapping[str, Any]] = (),
    malicious: Collection[str] = (),
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every table ``config`` asks for, computed on the final global ``model`` and the round records."""
    column = model_name(config.model)
    result = evaluate(
        model, test.x, test.y, num_classes=bundle.num_classes, batch_size=config.eval_batch_size
    )
    scores = classification_scores(result.predictions, test.y.numpy(), num_classes=bundle.num_classes)
    tables: dict[str, dict[str, dict[str, Any]]] = {
        SCORES_TABLE: {name.capitalize() if name != "f1" else "F1": {column: v} for name, v in scores.items()}
    }
    if config.robust_attacks:
        from fedsec.attacks.params import parse_attack_names, parse_attack_params
        from fedsec.evaluation import attack_subset, white_box_robustness

        subset = attack_subset(test, size=config.eval_attack_size, seed=config.seed)
        clean = evaluate(model, subset.x, subset.y, num_classes=bundle.num_classes).accuracy
        robust = white_box_robustness(
            model,
            subset,
            parse_attack_names(config.robust_attacks, key="robust-attacks"),
            num_classes=bundle.num_classes,
            params=parse_attack_params(config.attack_params),
            seed=config.seed,
            eot_samples=config.robust_eot_samples,
            harnesses=[h.strip() for h in config.robust_harness.split(",")],
        )
        tables[ROBUST_TABLE] = {
            "Clean": {column: clean},
            **{name: {column: acc} for name, acc in robust.items()},
        }
    if config.dp_sgd_clip > 0 and "dipsen" in config.roles:
        from clients.privacy import privacy_table

        tables[PRIVACY_TABLE] = privacy_table(config, bundle, column=column)
    if config.measure_overhead and config.model in COUNTERPART:
        from fedsec.overhead import step_overhead

        other = config.replace(model=COUNTERPART[config.model])
        device = resolve_device(config.device)  # timed where the run trains
        models = {
            column: new_model(config, bundle).to(device),
            model_name(other.model): new_model(other, bundle).to(device),
        }
        batch = test.subset(range(min(config.batch_size, len(test))))
        basic = model_name(BASIC.get(config.model, config.model))
        timing = step_overhead(models, batch.x.to(device), batch.y.to(device), reference=basic)
        tables[OVERHEAD_TABLE] = {
            "ms per step": {name: t["ms_per_step"] for name, t in timing.items()},
            "ratio to Basic CNN": {name: t["ratio"] for name, t in timing.items()},
        }
    from simulations.poisoning_report import is_pdgan, poisoning_tables

    sizes = client_partition_sizes(config, bundle) if is_pdgan(config) else ()
    tables.update(poisoning_tables(config, rounds, malicious=set(malicious), partition_sizes=sizes))
    from simulations.layered_report import layered_tables

    tables.update(layered_tables(config, rounds))
    if config.fda3_baselines:
        from simulations.fda3_report import fda3_tables

        tables[FDA3_TABLE], tables[FDA3_CI_TABLE] = fda3_tables(
            config, bundle, initial=initial, final=model, sets=robust_sets, test=test
        )
    return tables
