"""End-of-run paper tables, computed in process on a tiny model: names, rows and columns."""

import pytest

from fedsec.config import RunConfig
from fedsec.experiment import load_bundle, new_model, server_data
from fedsec.training import evaluate
from simulations.tables import OVERHEAD_TABLE, ROBUST_TABLE, SCORES_TABLE, final_tables


@pytest.fixture(scope="module")
def trained():
    config = RunConfig.from_run_config(
        {
            "dataset": "synthetic",
            "model": "dipsen",
            "validation-size": 0,
            "robust-attacks": "fgsm,bim",
            "robust-eot-samples": 4,
            "attack-params": "bim.max_iter=5,bim.eps_step=0.06",
            "eval-attack-size": 20,
        }
    )
    bundle = load_bundle(config)
    model = new_model(config, bundle)
    from fedsec.training import make_optimizer, train

    optimizer = make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9)
    train(
        model,
        bundle.train.x,
        bundle.train.y,
        epochs=3,
        batch_size=32,
        optimizer=optimizer,
        generator=__import__("torch").Generator().manual_seed(0),
    )
    return config, bundle, model


def test_tables_have_the_paper_rows_and_the_model_as_column(trained):
    config, bundle, model = trained
    test = server_data(config, bundle)["test"]
    tables = final_tables(config, bundle, test=test, model=model, initial=model, robust_sets={})
    scores = tables[SCORES_TABLE]
    assert list(scores) == ["Accuracy", "Precision", "Recall", "F1", "Support"]
    assert scores["Support"] == {"DiPSeN": len(test)}
    assert 0.5 < scores["Accuracy"]["DiPSeN"] <= 1.0
    robust = tables[ROBUST_TABLE]
    assert list(robust) == ["Clean", "FGSM", "BIM", "FGSM (EOT×4)", "BIM (EOT×4)"]
    assert all(set(row) == {"DiPSeN"} for row in robust.values())
    assert robust["BIM"]["DiPSeN"] < robust["Clean"]["DiPSeN"]
    assert OVERHEAD_TABLE not in tables  # only with measure-overhead


def test_basic_model_column_is_named_as_in_the_paper(trained):
    config, bundle, _ = trained
    basic = config.replace(model="dipsen-basic", robust_attacks="", measure_overhead=False)
    model = new_model(basic, bundle)
    test = server_data(basic, bundle)["test"]
    tables = final_tables(basic, bundle, test=test, model=model, initial=model, robust_sets={})
    assert set(tables) == {SCORES_TABLE}
    accuracy = evaluate(model, test.x, test.y, num_classes=10).accuracy
    assert tables[SCORES_TABLE]["Accuracy"] == {"Basic CNN": accuracy}
