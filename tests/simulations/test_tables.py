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
            "robust-harness": "logits,paper",
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
    paper = " (paper harness: clipped softmax)"
    assert list(robust) == [
        "Clean",
        "FGSM",
        "BIM",
        "FGSM (EOT×4)",
        "BIM (EOT×4)",
        "FGSM" + paper,
        "BIM" + paper,
        "Zero input gradient (logits)",
        "Zero input gradient (paper)",
    ]
    assert all(set(row) == {"DiPSeN"} for row in robust.values())
    assert robust["BIM"]["DiPSeN"] < robust["Clean"]["DiPSeN"]
    # the same seeded noise draw: an input whose logit-loss gradient is zero has p_y = 1, which the
    # paper's clip also cuts, so the paper harness has at least as many zero gradients
    zero_logits, zero_paper = (robust[f"Zero input gradient ({h})"]["DiPSeN"] for h in ("logits", "paper"))
    assert 0.0 <= zero_logits <= zero_paper <= 1.0
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


def test_paper_numbers_sit_beside_ours_and_seed_cells_read_mean_std_n():
    from simulations.report import format_value, paper_table

    table = {
        "PK": {"accuracy": 0.9, "asr": {"mean": 0.5, "std": 0.1, "n": 3, "values": []}},
        "LK": {"asr": 0.2},
    }
    text = paper_table(table, {"PK": {"asr": 0.97}})
    header, _, pk, lk = text.splitlines()
    assert header == "|  | accuracy | asr | asr (paper) |"
    assert pk == "| PK | 0.9000 | 0.5000 ± 0.1000 (n=3) | 0.9700 |"
    assert lk == "| LK | – | 0.2000 | – |"
    assert format_value({"mean": 1.0, "std": 0.0, "n": 1}) == "1.0000 ± 0.0000 (n=1)"
    assert format_value({"value": 0.5, "low": 0.4038, "high": 0.5962, "n": 100}) == "0.5000 [0.4038, 0.5962]"


def test_fda3_table_names_white_box_rows_and_holds_a_95_percent_interval_per_cell(tmp_path):
    from fedsec.attacks.params import parse_attack_params
    from fedsec.evaluation import adversarial_test_sets
    from fedsec.metrics import wilson_interval
    from simulations.tables import FDA3_CI_TABLE, FDA3_TABLE

    config = RunConfig.from_run_config(
        {
            "dataset": "synthetic",
            "model": "lenet",
            "num-clients": 2,
            "validation-size": 0,
            "pretrain-size": 300,
            "roles": "fda3-device:0-1",
            "fda3-assign": "even:fgsm",
            "fda3-buffer-size": 10,
            "fda3-batch-size": 10,
            "fda3-baselines": True,
            "fda3-baseline-epochs": 3,
            "num-server-rounds": 2,
            "eval-attacks": "fgsm",
            "eval-attack-size": 60,
            "eval-attack-sizes": "fgsm=40",
            "fda3-white-box": "final",
            "fda3-white-box-size": 30,
            "cache-dir": str(tmp_path / "cache"),
        }
    )
    bundle = load_bundle(config)
    test = server_data(config, bundle)["test"]
    initial = new_model(config, bundle)
    final = new_model(config.replace(seed=config.seed + 1), bundle)
    sets = adversarial_test_sets(
        config, initial, test, ["fgsm"], num_classes=10, params=parse_attack_params(config.attack_params)
    )
    assert (len(sets["Nature"]), len(sets["FGSM"])) == (60, 40)
    tables = final_tables(config, bundle, test=test, model=final, initial=initial, robust_sets=sets)
    table, intervals = tables[FDA3_TABLE], tables[FDA3_CI_TABLE]
    assert list(table) == [
        "None (white-box)",
        "FGSM+AdvTrain",  # 3 epochs over 10 pairs at batch 10: 3 steps ...
        "FGSM+AdvTrain (2 steps)",  # ... and one step per round beside it
        "ALL+AdvTrain",
        "ALL+AdvTrain (2 steps)",
        "FL+AdvTrain",
        "FL+AdvTrain (white-box)",
    ]
    assert (
        table["None (white-box)"]["FGSM"]
        == evaluate(initial, sets["FGSM"].x, sets["FGSM"].y, num_classes=10).accuracy
    )
    assert set(table["FL+AdvTrain (white-box)"]) == {"FGSM"}  # attacks only, made against the final model
    assert intervals["FL+AdvTrain (white-box)"]["FGSM"]["n"] == 30
    assert intervals["FL+AdvTrain"]["Nature"]["n"] == 60 and intervals["FL+AdvTrain"]["FGSM"]["n"] == 40
    for row, cells in table.items():
        for column, value in cells.items():
            cell = intervals[row][column]
            assert cell["value"] == value
            assert (cell["low"], cell["high"]) == wilson_interval(value, cell["n"])
            assert cell["low"] <= value <= cell["high"]


def test_pdgan_table_states_the_runs_images_per_client_from_its_partitions():
    from fedsec.experiment import client_data, server_split_sizes
    from simulations.poisoning_report import PDGAN_TABLE

    config = RunConfig.from_run_config(
        {"scenario": "pdgan-x", "variant": "GAN", "dataset": "synthetic", "model": "lenet", "num-clients": 7}
    )
    bundle = load_bundle(config)
    model = new_model(config, bundle)
    test = server_data(config, bundle)["test"]
    rounds = [{"round": 1, "accuracy": 0.5}]
    tables = final_tables(
        config, bundle, test=test, model=model, initial=model, robust_sets={}, rounds=rounds
    )
    sizes = [len(client_data(config, bundle, partition_id=i, num_partitions=7)) for i in range(7)]
    assert tables[PDGAN_TABLE]["GAN"]["images per client"] == pytest.approx(sum(sizes) / 7)
    assert sum(sizes) == len(bundle.train) - sum(server_split_sizes(config).values())
    other = config.replace(num_clients=14)
    fewer = final_tables(other, bundle, test=test, model=model, initial=model, robust_sets={}, rounds=rounds)
    assert fewer[PDGAN_TABLE]["GAN"]["images per client"] == pytest.approx(sum(sizes) / 14)
