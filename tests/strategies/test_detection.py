"""The detector wrapper on constructed updates: scaled/opposite/inaccurate updates flagged, benign kept."""

from __future__ import annotations

import numpy as np
import pytest

from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from fedsec.results import RunRecorder
from strategies import build_strategy
from strategies.wrapper import GroundTruth
from tests.flower_fakes import aggregate, configure, train_reply

GLOBAL = [np.zeros(4, np.float32)]
RNG = np.random.default_rng(0)
DIRECTION = np.array([1.0, 0.5, -0.5, 0.2], np.float32)


def benign(seed: int) -> list[np.ndarray]:
    noise = np.random.default_rng(seed).normal(0.0, 0.05, 4).astype(np.float32)
    return [DIRECTION + noise]


def make(recorder=None, truth=None, accuracy_fn=None, **overrides):
    config = RunConfig.from_run_config({"num-clients": 6, **overrides})
    strategy = build_strategy(
        config,
        initial_arrays=GLOBAL,
        recorder=recorder,
        truth=truth,
        accuracy_fn=accuracy_fn,
    )
    configure(strategy, 1, GLOBAL, nodes=6)
    return strategy


def run_round(strategy, server_round, updates):
    return aggregate(strategy, server_round, [train_reply(pid, arrays) for pid, arrays in enumerate(updates)])


def test_an_obviously_scaled_update_is_flagged_and_dropped_a_benign_one_is_not(tmp_path):
    recorder = RunRecorder(out_dir=tmp_path, scenario="t", config={})
    strategy = make(
        recorder, GroundTruth(malicious=frozenset({"5"})), detectors="l2", **{"l2-ratio-threshold": 3.0}
    )
    updates = [benign(s) for s in range(5)] + [[DIRECTION * 20]]

    aggregate = run_round(strategy, 1, updates)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)

    assert set(record["dropped"]) == {"5"} and "L2 norm" in record["dropped"]["5"]
    np.testing.assert_allclose(aggregate[0], np.mean([u[0] for u in updates[:5]], axis=0), rtol=1e-6)
    assert record["detection"]["detectors"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 5}
    assert record["update_stats"]["5"]["l2_ratio"] > 10


def test_an_opposite_update_fails_the_cosine_check():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    strategy = make(recorder, detectors="cosine", **{"cosine-gap": 0.5})
    updates = [benign(s) for s in range(5)] + [[-DIRECTION]]

    run_round(strategy, 1, updates)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)

    assert set(record["dropped"]) == {"5"} and "cosine" in record["dropped"]["5"]


def test_the_accuracy_check_flags_a_model_worse_on_validation_than_the_others():
    bad = np.full(4, 7.0, np.float32)

    def accuracy_fn(weights):  # the server's validation accuracy of a full model
        return 0.1 if np.allclose(weights[0], bad) else 0.9

    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    strategy = make(recorder, accuracy_fn=accuracy_fn, detectors="accuracy", **{"accuracy-gamma": 0.2})
    updates = [benign(s) for s in range(5)] + [[bad]]

    run_round(strategy, 1, updates)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)

    assert set(record["dropped"]) == {"5"}
    assert record["update_stats"]["5"]["accuracy_drop"] == pytest.approx(0.8)
    assert record["update_stats"]["0"]["accuracy_drop"] == pytest.approx(0.0)


def test_thresholds_calibrated_on_benign_rounds_then_flag_only_the_attacker():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    truth = GroundTruth(malicious=frozenset({"5"}), start_round=3)
    strategy = make(recorder, truth, detectors="l2,cosine", **{"calibration-rounds": 2})

    for server_round in (1, 2):
        run_round(strategy, server_round, [benign(10 * server_round + s) for s in range(6)])
        calibrating = recorder.end_round(server_round, accuracy=0.0, loss=0.0)
        assert "dropped" not in calibrating and calibrating["detection"]["detectors"]["tp"] == 0
    run_round(strategy, 3, [benign(30 + s) for s in range(5)] + [[DIRECTION * 5]])
    judged = recorder.end_round(3, accuracy=0.0, loss=0.0)

    assert calibrating["thresholds"]["l2"] is not None  # set at the end of calibration
    assert set(judged["dropped"]) == {"5"}
    assert judged["detection"]["detectors"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 5}


def test_flag_only_mode_keeps_every_update_but_records_who_was_flagged():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    strategy = make(recorder, detectors="l2", **{"l2-ratio-threshold": 3.0, "detectors-drop": False})
    updates = [benign(s) for s in range(5)] + [[DIRECTION * 20]]

    aggregate = run_round(strategy, 1, updates)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)

    np.testing.assert_allclose(aggregate[0], np.mean([u[0] for u in updates], axis=0), rtol=1e-6)
    assert record["flagged_by"] == {"5": ["l2"]} and "dropped" not in record


def test_detector_without_threshold_or_calibration_and_unknown_detector_are_config_errors():
    with pytest.raises(ConfigError, match="l2 have no threshold"):
        make(detectors="l2")
    with pytest.raises(ConfigError, match="unknown detector 'norm'"):
        make(detectors="norm", **{"calibration-rounds": 1})
    with pytest.raises(ConfigError, match="validation-size > 0"):
        make(detectors="accuracy", **{"calibration-rounds": 1})


def test_ground_truth_of_a_single_round_attack_names_the_attackers_in_that_round_only():
    truth = GroundTruth(malicious=frozenset({"3"}), start_round=5, end_round=5)
    open_ended = GroundTruth(malicious=frozenset({"3"}), start_round=5)

    assert [truth.at(r) for r in (4, 5, 6)] == [frozenset(), frozenset({"3"}), frozenset()]
    assert open_ended.at(9) == frozenset({"3"})
