"""Poisoning tables from constructed round records: rows by variant, cells by iteration."""

import pytest

from fedsec.config import RunConfig
from simulations.poisoning_report import (
    COSINE_TABLE,
    DETECTION_TABLE,
    GRID_TABLE,
    L2_TABLE,
    PDGAN_TABLE,
    SUMMARY_TABLE,
    TARGETED_TABLE,
    poisoning_tables,
)


def stats(cos, l2):
    return {"cosine": cos, "max_l2_benign": l2, "l2_ratio": 1.0, "norm": 1.0}


ROUNDS = [
    {"round": 1, "accuracy": 0.5, "update_stats": {"0": stats(0.9, 1.0), "1": stats(0.8, 2.0)}},
    {
        "round": 2,
        "accuracy": 0.8,
        "targeted_accuracy": 1.0,
        "update_stats": {"0": stats(0.7, 1.5), "1": stats(0.1, 9.0)},
        "flagged_by": {"1": ["l2"], "0": ["cosine"]},
    },
]


def test_attackers_rows_average_cosine_and_take_max_l2_only_in_attack_rounds():
    config = RunConfig.from_run_config(
        {"variant": "PK", "attack-start-round": 2, "detectors": "l2,cosine", "calibration-rounds": 1}
    )

    tables = poisoning_tables(config, ROUNDS, malicious={"1"})

    assert tables[COSINE_TABLE] == {"PK": {"2": 0.1}}
    assert tables[L2_TABLE] == {"PK": {"2": 9.0}}
    assert tables[DETECTION_TABLE]["PK"] == {
        "rounds judged": 1,
        "l2 on attackers": 1,
        "l2 on benign": 0,
        "cosine on attackers": 0,
        "cosine on benign": 1,
    }


def test_a_run_without_attackers_reports_the_benign_reference_row():
    config = RunConfig.from_run_config({"variant": "none"})

    tables = poisoning_tables(config, ROUNDS, malicious=set())

    assert tables[COSINE_TABLE]["none"]["1"] == (0.9 + 0.8) / 2
    assert tables[L2_TABLE]["none"]["2"] == 9.0


def test_grid_runs_put_asr_and_clean_accuracy_under_their_defense():
    config = RunConfig.from_run_config({"variant": "dba", "defense": "flame"})
    rounds = [{"round": 1, "accuracy": 0.9, "asr": 0.05, "update_stats": {}}]

    tables = poisoning_tables(config, rounds, malicious={"3"})

    assert tables == {GRID_TABLE: {"dba": {"flame ASR": 0.05, "flame clean accuracy": 0.9}}}


def test_pdgan_table_counts_detection_over_the_audited_rounds_only():
    config = RunConfig.from_run_config({"scenario": "pdgan-mnist", "variant": "GAN", "audit-start-round": 2})
    counts = {"tp": 3, "fp": 1, "fn": 0, "tn": 6}
    rounds = [
        {
            "round": 1,
            "accuracy": 0.5,
            "targeted_accuracy": 0.9,
            "detection": {"audit": {"tp": 0, "fp": 0, "fn": 3, "tn": 7}},
        },
        {"round": 2, "accuracy": 0.9, "targeted_accuracy": 0.05, "detection": {"audit": counts}},
    ]

    row = poisoning_tables(config, rounds, malicious={"7"})[PDGAN_TABLE]["GAN"]

    assert row["overall accuracy"] == 0.9 and row["poisoning accuracy"] == 0.05
    assert row["overall accuracy, last 2 rounds"] == 0.7
    assert row["poisoning accuracy, last 2 rounds"] == pytest.approx(0.475)
    assert (
        row["detection recall"] == 1.0 and row["false-positive rate"] == 1 / 7 and row["audited rounds"] == 1
    )


def test_pdgan_table_states_images_per_client_and_starts_at_the_d_iter_round():
    """gan-d-iter 250 at 100 GAN steps a round audits from round 3 (audit-start-round 1 is overridden);
    images per client is the mean of the partition sizes given."""
    config = RunConfig.from_run_config(
        {
            "scenario": "pdgan-fmnist",
            "variant": "paper",
            "audit": "gan",
            "audit-start-round": 1,
            "gan-d-iter": 250,
            "gan-steps": 100,
        }
    )
    caught = {"tp": 3, "fp": 0, "fn": 0, "tn": 7}
    rounds = [
        {"round": r, "accuracy": 0.8, "detection": {"audit": {"tp": 0, "fp": 0, "fn": 3, "tn": 7}}}
        for r in (1, 2)
    ] + [{"round": r, "accuracy": 0.8, "detection": {"audit": caught}} for r in (3, 4)]

    row = poisoning_tables(config, rounds, malicious={"7"}, partition_sizes=[593, 593, 594, 590])[PDGAN_TABLE]

    assert row["paper"]["audited rounds"] == 2 and row["paper"]["detection recall"] == 1.0
    assert row["paper"]["images per client"] == pytest.approx(592.5)
    without = poisoning_tables(config, rounds, malicious={"7"})[PDGAN_TABLE]["paper"]
    assert "images per client" not in without


def test_a_single_round_attack_counts_only_its_round_and_only_attackers_that_took_part():
    config = RunConfig.from_run_config(
        {
            "variant": "PK-single",
            "attack-start-round": 2,
            "attack-end-round": 2,
            "detectors": "l2,cosine",
            "calibration-rounds": 1,
        }
    )
    rounds = [
        *ROUNDS,
        {
            "round": 3,
            "accuracy": 0.9,
            "targeted_accuracy": 0.4,
            "update_stats": {"0": stats(0.6, 1.0), "1": stats(0.5, 1.2)},
            "flagged_by": {"1": ["l2"]},
        },
        {"round": 4, "accuracy": 0.9, "targeted_accuracy": 0.3, "update_stats": {"0": stats(0.6, 1.0)}},
    ]

    tables = poisoning_tables(config, rounds, malicious={"1", "7"})  # 7 was not sampled in round 2

    assert tables[COSINE_TABLE] == {"PK-single": {"2": 0.1}}  # round 3: client 1 is honest again
    assert tables[L2_TABLE] == {"PK-single": {"2": 9.0}}
    assert tables[DETECTION_TABLE]["PK-single"]["l2 on attackers"] == 1  # round 2 only
    assert tables[DETECTION_TABLE]["PK-single"]["l2 on benign"] == 1  # round 3 flagged an honest client 1
    assert tables[SUMMARY_TABLE]["PK-single"]["attack rounds"] == 1
    assert tables[TARGETED_TABLE]["PK-single"] == {"2": 1.0, "3": 0.4, "4": 0.3}
