"""Paper-style tables a run computes after its last round (``summary.json`` → ``tables``).

* ``Precision/recall/F1`` — macro scores of the final model on the test split
  (rows Accuracy, Precision, Recall, F1, Support; column = the model);
* ``Robust accuracy (Fig. 6)`` — with ``robust-attacks``: clean accuracy and
  accuracy under each attack made white-box against the final model on
  ``eval-attack-size`` held-out images, plus the noise-averaged (EOT) variant of
  each attack when ``robust-eot-samples`` > 1;
* ``Training-step overhead`` — with ``measure-overhead``: milliseconds per SGD
  step of the model and of its counterpart (DiPSeN ↔ basic CNN), timed side by
  side in this run, and their ratio;
* the FDA³ comparison table (:mod:`simulations.fda3_report`) with ``fda3-baselines``;
* the poisoning tables (:mod:`simulations.poisoning_report`) when the round
  records hold update statistics (runs with attackers or detectors).

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
from fedsec.experiment import new_model
from fedsec.metrics import classification_scores
from fedsec.training import evaluate

MODEL_NAMES = {
    "dipsen": "DiPSeN",
    "dipsen-basic": "Basic CNN",
    "lenet": "LeNet-5",
    "cnn": "CNN",
    "resnet18": "ResNet-18",
}
COUNTERPART = {"dipsen": "dipsen-basic", "dipsen-basic": "dipsen"}
SCORES_TABLE = "Precision/recall/F1"
ROBUST_TABLE = "Robust accuracy (Fig. 6)"
OVERHEAD_TABLE = "Training-step overhead"
FDA3_TABLE = "FDA3 accuracy (Fig. 2/4)"


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
        )
        tables[ROBUST_TABLE] = {
            "Clean": {column: clean},
            **{name: {column: acc} for name, acc in robust.items()},
        }
    if config.measure_overhead and config.model in COUNTERPART:
        from fedsec.overhead import step_overhead

        other = config.replace(model=COUNTERPART[config.model])
        device = resolve_device(config.device)  # timed where the run trains
        models = {
            column: new_model(config, bundle).to(device),
            model_name(other.model): new_model(other, bundle).to(device),
        }
        batch = test.subset(range(min(config.batch_size, len(test))))
        timing = step_overhead(
            models, batch.x.to(device), batch.y.to(device), reference=model_name("dipsen-basic")
        )
        tables[OVERHEAD_TABLE] = {
            "ms per step": {name: t["ms_per_step"] for name, t in timing.items()},
            "ratio to Basic CNN": {name: t["ratio"] for name, t in timing.items()},
        }
    from simulations.poisoning_report import poisoning_tables

    tables.update(poisoning_tables(config, rounds, malicious=set(malicious)))
    if config.fda3_baselines:
        from simulations.fda3_report import fda3_table

        tables[FDA3_TABLE] = fda3_table(config, bundle, initial=initial, final=model, sets=robust_sets)
    return tables
