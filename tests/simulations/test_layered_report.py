"""The layered defense's step-1 table from constructed round records: "applied in X of Y rounds"."""

import pytest

from fedsec.config import RunConfig
from fedsec.results import RunRecorder
from simulations.layered_report import STEP1_TABLE, layered_tables, step1_counts


def step1(status, negative, updates=10):
    return {"status": status, "applied": status == "applied", "negative": negative, "updates": updates}


ROUNDS = [
    {"round": 1, "accuracy": 0.5, "layered_step1": step1("no-reference", None)},
    {"round": 2, "accuracy": 0.7, "layered_step1": step1("applied", 2)},
    {"round": 3, "accuracy": 0.8, "layered_step1": step1("applied", 0)},
    {"round": 4, "accuracy": 0.8, "layered_step1": step1("skipped-stale", 7)},
    {"round": 5, "accuracy": 0.9, "layered_step1": step1("skipped-stale", 9)},
]


def test_step1_is_counted_over_the_rounds_that_had_a_reference():
    assert step1_counts(ROUNDS) == {"applied": 2, "rounds": 4, "negative": (2 + 0 + 7 + 9) / 4}


def test_grid_runs_get_a_row_per_attack_and_columns_per_defense():
    config = RunConfig.from_run_config({"variant": "dba", "defense": "layered-paper", "strategy": "layered"})

    tables = layered_tables(config, ROUNDS)

    assert tables == {
        STEP1_TABLE: {
            "dba": {
                "layered-paper step 1 applied": 2,
                "layered-paper step 1 rounds": 4,
                "layered-paper negative updates (mean)": pytest.approx(4.5),
            }
        }
    }


def test_a_plain_run_is_labelled_by_its_strategy_and_step_off_counts_no_round():
    config = RunConfig.from_run_config({"scenario": "s", "strategy": "layered"})
    rounds = [{"round": r, "layered_step1": step1("off", 3)} for r in (1, 2)]

    tables = layered_tables(config, rounds)

    assert tables[STEP1_TABLE] == {
        "s": {
            "layered step 1 applied": 0,
            "layered step 1 rounds": 0,
            "layered negative updates (mean)": None,
        }
    }


def test_runs_without_the_layered_strategy_get_no_table():
    config = RunConfig.from_run_config({"variant": "dba", "defense": "flame"})

    assert layered_tables(config, [{"round": 1, "accuracy": 0.9}]) == {}


def test_the_record_survives_the_metrics_line():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    recorder.note(2, layered_step1=step1("skipped-stale", 6))
    record = recorder.end_round(2, accuracy=0.5, loss=1.0)

    assert step1_counts([record]) == {"applied": 0, "rounds": 1, "negative": 6.0}
