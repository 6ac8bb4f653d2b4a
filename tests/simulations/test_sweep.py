"""Scenario sweeps: parsing, the per-value configs, and the merged summary tables."""

import pytest

from fedsec.errors import ConfigError
from fedsec.results import RunRecorder
from fedsec.roles import parse_roles
from simulations.scenarios import load_scenario
from simulations.sweep import write_sweep_summary


def scenario_file(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return load_scenario(str(path))


def test_sweep_values_are_parsed_typed_and_validated(tmp_path):
    scenario = scenario_file(tmp_path, '# s\nsweep = "num-clients=10,20"\nsweep-table = "Fig. 5"\n')
    assert scenario.sweep.key == "num-clients" and scenario.sweep.values == (10, 20)
    assert scenario.config({"num-clients": 20}).num_clients == 20
    with pytest.raises(ConfigError, match="'num-clients' must be >= 0"):
        scenario_file(tmp_path, '# s\nsweep = "num-clients=10,-1"\n')
    with pytest.raises(ConfigError, match="'sweep' must look like"):
        scenario_file(tmp_path, '# s\nsweep = "num-clients"\n')


def test_roles_all_follows_the_client_count():
    assert set(parse_roles("fda3-device:all", 30).values()) == {"fda3-device"}
    assert len(parse_roles("fda3-device:all", 30)) == 30


def _run(path, model, robust, table_value):
    recorder = RunRecorder(out_dir=path, scenario="s", config={"model": model})
    recorder.end_round(1, accuracy=0.9, loss=0.1, robust=robust)
    recorder.finish(tables={"Fig. 6": {"Clean": {model: table_value}}})
    return path


def test_sweep_summary_tables_rows_per_value_and_merges_run_tables(tmp_path):
    scenario = scenario_file(tmp_path, '# s\nsweep = "model=dipsen-basic,lenet"\nsweep-table = "by model"\n')
    runs = [
        _run(tmp_path / "model=dipsen-basic", "Basic CNN", {"FGSM": 0.2}, 0.97),
        _run(tmp_path / "model=lenet", "LeNet-5", {"FGSM": 0.3}, 0.95),
    ]
    summary = write_sweep_summary(scenario, tmp_path, runs)
    assert summary["tables"]["by model"] == {
        "model=dipsen-basic": {"accuracy": 0.9, "FGSM": 0.2},
        "model=lenet": {"accuracy": 0.9, "FGSM": 0.3},
    }
    assert summary["tables"]["Fig. 6"] == {"Clean": {"Basic CNN": 0.97, "LeNet-5": 0.95}}
    assert summary["runs"] == ["model=dipsen-basic", "model=lenet"]


def test_runs_filling_the_same_column_are_kept_apart_by_label(tmp_path):
    scenario = scenario_file(tmp_path, '# s\nsweep = "num-clients=2,3"\n')
    runs = [
        _run(tmp_path / "num-clients=2", "LeNet-5", {}, 0.91),
        _run(tmp_path / "num-clients=3", "LeNet-5", {}, 0.93),
    ]
    summary = write_sweep_summary(scenario, tmp_path, runs)
    assert summary["tables"]["Fig. 6"] == {
        "Clean": {"LeNet-5 [num-clients=2]": 0.91, "LeNet-5 [num-clients=3]": 0.93}
    }


# ---------------------------------------------------------------------------- variants and defenses


VARIANTS = """# s
sweep-table = "grid"
num-clients = 4
[variants.none]
roles = ""
[variants.flip]
roles = "label-flip:3"
[defenses.none]
strategy = "fedavg"
[defenses."fg+x"]
strategy = "foolsgold"
"""


def test_variants_cross_defenses_into_labelled_runs_with_their_overrides(tmp_path):
    scenario = scenario_file(tmp_path, VARIANTS)

    labels = [scenario.sweep.label(v) for v in scenario.sweep.values]
    config = scenario.config(scenario.sweep.overrides("flip/fg+x"))

    assert labels == ["none/none", "none/fg+x", "flip/none", "flip/fg+x"]
    assert (config.variant, config.defense, config.strategy, config.roles) == (
        "flip",
        "fg+x",
        "foolsgold",
        "label-flip:3",
    )


def test_a_bad_variant_value_is_refused_with_the_variant_named(tmp_path):
    with pytest.raises(ConfigError, match=r"none/none: config key 'strategy' must be a str"):
        scenario_file(tmp_path, VARIANTS.replace('strategy = "fedavg"', "strategy = 3"))
    with pytest.raises(ConfigError, match=r"\[defenses.\*\] needs \[variants.\*\]"):
        scenario_file(tmp_path, '# s\n[defenses.a]\nstrategy = "fedavg"\n')


def test_variant_runs_fill_distinct_rows_without_suffixes(tmp_path):
    scenario = scenario_file(tmp_path, "# s\n[variants.PK]\nroles = ''\n[variants.LK]\nroles = ''\n")
    runs = []
    for name, value in (("PK", 0.9), ("LK", 0.5)):
        recorder = RunRecorder(out_dir=tmp_path / name, scenario="s", config={})
        recorder.end_round(1, accuracy=0.9, loss=0.1, targeted_accuracy=value)
        recorder.finish(tables={"Table 2": {name: {"1": value}}})
        runs.append(tmp_path / name)

    summary = write_sweep_summary(scenario, tmp_path, runs)

    assert summary["tables"]["Table 2"] == {"PK": {"1": 0.9}, "LK": {"1": 0.5}}
    assert summary["tables"]["variants"]["PK"]["targeted_accuracy"] == 0.9


def _final_run(path, accuracy, asr, table_value):
    recorder = RunRecorder(out_dir=path, scenario="s", config={})
    recorder.end_round(1, accuracy=accuracy, loss=0.1, asr=asr)
    recorder.finish(tables={"grid": {"dba": {"ASR": table_value, "note": "x"}}})
    return path


def test_runs_at_several_seeds_are_summarised_as_mean_and_sample_std(tmp_path):
    scenario = scenario_file(
        tmp_path,
        '# s\n[variants.a]\nroles = ""\n[variants.b]\nroles = ""\n[paper."final".a]\naccuracy = 0.99\n',
    )
    runs = [
        _final_run(tmp_path / "a/seed=1", 0.90, 0.1, 0.2),
        _final_run(tmp_path / "a/seed=2", 0.80, 0.3, 0.4),
        _final_run(tmp_path / "b/seed=1", 0.50, 0.5, 0.6),
        _final_run(tmp_path / "b/seed=2", 0.70, 0.5, float("nan")),
    ]
    summary = write_sweep_summary(scenario, tmp_path, runs, seeds=(1, 2))

    a = summary["tables"]["variants"]["a"]["accuracy"]
    assert a["mean"] == pytest.approx(0.85) and a["std"] == pytest.approx(0.0707107, abs=1e-6)
    assert a["n"] == 2 and a["values"] == [0.9, 0.8]
    assert summary["tables"]["variants"]["b"]["asr"]["std"] == pytest.approx(0.0)
    # a non-finite value is kept in "values" but left out of the statistics
    grid = summary["tables"]["grid"]["dba"]  # both variants fill this cell: columns carry the label
    assert grid["note [a]"] == "x" and grid["ASR [a]"]["mean"] == pytest.approx(0.3)
    assert grid["ASR [b]"]["n"] == 1 and grid["ASR [b]"]["mean"] == pytest.approx(0.6)
    assert summary["seeds"] == [1, 2] and summary["runs"][0] == "a/seed=1"
    assert summary["paper"] == {"final": {"a": {"accuracy": 0.99}}}


def test_seed_cell_statistics_skip_missing_values_and_join_differing_text():
    from simulations.sweep import over_seeds, seed_cell

    cell = seed_cell([0.2, None, 0.6, float("inf")])
    assert (cell["mean"], cell["n"]) == (pytest.approx(0.4), 2)
    assert cell["std"] == pytest.approx(0.2828427, abs=1e-6)
    assert seed_cell(["kept", "kept"]) == "kept" and seed_cell(["a", "b"]) == "a / b"
    interval = seed_cell(
        [{"value": 0.5, "low": 0.4, "high": 0.6, "n": 100}, {"value": 0.7, "low": 0.6, "high": 0.8}]
    )
    assert interval["mean"] == pytest.approx(0.6) and interval["n"] == 2
    merged = over_seeds([{"t": {"r": {"x": 1.0}}}, {"t": {"r": {"x": 3.0, "y": 5.0}}}])
    assert merged["t"]["r"]["x"]["mean"] == 2.0 and merged["t"]["r"]["y"]["n"] == 1


def test_a_scenario_without_a_sweep_at_several_seeds_has_one_row(tmp_path):
    scenario = scenario_file(tmp_path, '# s\nseeds = "4,5"\n')
    assert scenario.seeds == (4, 5)
    runs = [_final_run(tmp_path / "seed=4", 0.6, 0.0, 0.1), _final_run(tmp_path / "seed=5", 0.8, 0.0, 0.1)]
    summary = write_sweep_summary(scenario, tmp_path, runs, seeds=scenario.seeds)
    assert summary["tables"]["final metrics"]["s"]["accuracy"]["mean"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="expected 2 run directories"):
        write_sweep_summary(scenario, tmp_path, runs[:1], seeds=scenario.seeds)


def test_seeds_and_paper_tables_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="non-negative integers"):
        scenario_file(tmp_path, '# s\nseeds = "1,x"\n')
    with pytest.raises(ConfigError, match=r"\[paper"):
        scenario_file(tmp_path, '# s\n[variants.a]\nroles = ""\n[paper."t".a]\nasr = "high"\n')
