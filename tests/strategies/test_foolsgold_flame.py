"""FoolsGold and FLAME strategies, in process: sybils lose their weight, outliers are filtered and clipped."""

import numpy as np
import pytest

from fedsec.results import RunRecorder
from strategies import weighted_metrics
from strategies.flame import Flame
from strategies.foolsgold import FoolsGold
from strategies.wrapper import GroundTruth, ServerEnv
from tests.flower_fakes import configure, train_reply

D = 12
A = np.r_[np.ones(6), np.zeros(6)]
B = np.r_[np.zeros(6), np.ones(6)]
GLOBAL = np.linspace(-1.0, 1.0, D)  # a non-zero global model: updates are client minus global


def arrays(vector: np.ndarray) -> list[np.ndarray]:
    return [vector[:6].reshape(2, 3).astype(np.float32), vector[6:].astype(np.float32)]


def vector(record) -> np.ndarray:
    return np.concatenate([a.astype(np.float64).ravel() for a in record.to_numpy_ndarrays()])


def results_for(updates, start=GLOBAL):
    return [
        train_reply(i, arrays(start + u), num_examples=10 * (i + 1), metrics={"loss": float(i)})
        for i, u in enumerate(updates)
    ]


def recorder_env(malicious=()):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    return recorder, ServerEnv(recorder=recorder, truth=GroundTruth(malicious=frozenset(malicious)))


def started(cls, **kwargs):
    strategy = cls(**kwargs, train_metrics_aggr_fn=weighted_metrics)
    configure(strategy, 1, arrays(GLOBAL))
    return strategy


# ---------------------------------------------------------------- FoolsGold


def honest_updates(seed):
    return list(np.random.default_rng(seed).normal(0.0, 1.0, (4, D)))


def test_foolsgold_zeroes_identical_sybils_and_follows_the_honest_mean(tmp_path):
    recorder = RunRecorder(out_dir=tmp_path, scenario="t", config={})
    env = ServerEnv(recorder=recorder, truth=GroundTruth(malicious=frozenset({"4", "5", "6"})))
    strategy = started(FoolsGold, kappa=1.0, env=env)
    honest = honest_updates(0)
    sybil = 3.0 * B
    parameters, metrics = strategy.aggregate_train(1, results_for([*honest, sybil, sybil, sybil]))
    merged = vector(parameters) - GLOBAL
    np.testing.assert_allclose(merged, np.mean(honest, axis=0), atol=1e-2)
    plain_mean = np.mean([*honest, sybil, sybil, sybil], axis=0)
    assert np.linalg.norm(plain_mean - np.mean(honest, axis=0)) > 1.0  # FedAvg would be dragged off
    record = recorder.end_round(1, accuracy=0, loss=0)
    weights = record["foolsgold_weights"]
    assert all(weights[s] < 1e-6 for s in ("4", "5", "6"))
    assert all(weights[h] > 0.5 for h in ("0", "1", "2", "3"))
    assert record["dropped"] == {s: "FoolsGold weight 0" for s in ("4", "5", "6")}
    assert record["kept"]["foolsgold"] == ["0", "1", "2", "3"]
    assert record["detection"]["foolsgold"] == {"tp": 3, "fp": 0, "fn": 0, "tn": 4}
    # metrics of the kept (weighted) clients only: losses 0..3 weighted by 10..40 examples
    assert metrics["loss"] == pytest.approx((0 * 10 + 1 * 20 + 2 * 30 + 3 * 40) / 100)


def test_foolsgold_remembers_history_across_rounds():
    recorder, env = recorder_env()
    strategy = started(FoolsGold, kappa=1.0, env=env)
    # round 1: the sybils' updates differ slightly, but they repeat the same goal every round
    rng = np.random.default_rng(1)
    sybils = [3.0 * B + rng.normal(0.0, 0.05, D) for _ in range(3)]
    strategy.aggregate_train(1, results_for([*honest_updates(1), *sybils]))
    configure(strategy, 2, arrays(GLOBAL))
    sybils = [3.0 * B + rng.normal(0.0, 0.05, D) for _ in range(3)]
    parameters, _ = strategy.aggregate_train(2, results_for([*honest_updates(2), *sybils]))
    assert parameters is not None
    weights = recorder.end_round(2, accuracy=0, loss=0)["foolsgold_weights"]
    assert all(weights[s] < 1e-6 for s in ("4", "5", "6"))
    assert len(strategy.history) == 7


def test_foolsgold_keeps_the_previous_model_when_every_weight_is_zero(caplog):
    recorder, env = recorder_env()
    strategy = started(FoolsGold, kappa=1.0, env=env)
    same = 2.0 * np.eye(D)[0]  # exactly parallel (cosine exactly 1): every client looks like a sybil
    assert strategy.aggregate_train(1, results_for([same, same, same])) == (None, None)
    assert "keeping the previous model" in caplog.text
    assert recorder.end_round(1, accuracy=0, loss=0)["kept"]["foolsgold"] == []


def test_foolsgold_validates_kappa():
    with pytest.raises(ValueError, match="kappa"):
        FoolsGold(kappa=0.0, env=ServerEnv())


# ---------------------------------------------------------------- FLAME


def flame_round(noise, seed=7, server_round=1, env=None):
    rng = np.random.default_rng(3)
    honest = [A + rng.normal(0.0, 0.1, D) for _ in range(6)]
    malicious = 10.0 * (B + 0.2 * A)
    strategy = started(Flame, noise_lambda=noise, seed=seed, env=env or ServerEnv())
    parameters, metrics = strategy.aggregate_train(server_round, results_for([*honest, malicious]))
    return vector(parameters) - GLOBAL, honest, malicious, metrics


def test_flame_filters_the_scaled_outlier_and_bounds_the_aggregate_by_the_median_norm():
    recorder, env = recorder_env(malicious={"6"})
    update, honest, malicious, metrics = flame_round(0.0, env=env)
    norms = np.linalg.norm([*honest, malicious], axis=1)
    record = recorder.end_round(1, accuracy=0, loss=0)
    assert "6" in record["dropped"] and "HDBSCAN" in record["dropped"]["6"]
    assert "6" not in record["kept"]["flame"] and len(record["kept"]["flame"]) >= 4
    assert record["detection"]["flame"]["tp"] == 1 and record["detection"]["flame"]["fn"] == 0
    assert record["flame"] == {"clip_norm": pytest.approx(np.median(norms)), "noise_std": 0.0}
    assert np.linalg.norm(update) <= np.median(norms) + 1e-5
    assert update @ B / np.linalg.norm(update) < 0.1  # the malicious direction stayed out
    kept = [int(label) for label in record["kept"]["flame"]]
    clip = np.median(norms)
    expected = np.mean([honest[i] * min(1.0, clip / np.linalg.norm(honest[i])) for i in kept], axis=0)
    np.testing.assert_allclose(update, expected, atol=1e-5)
    assert "loss" in metrics and metrics["loss"] < 6  # client 6's metrics are not averaged in


def test_flame_noise_is_seeded_per_round():
    first, *_ = flame_round(0.01, seed=7)
    again, *_ = flame_round(0.01, seed=7)
    other_seed, *_ = flame_round(0.01, seed=8)
    other_round, *_ = flame_round(0.01, seed=7, server_round=2)
    quiet, *_ = flame_round(0.0, seed=7)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, quiet, atol=1e-6)
    assert not np.allclose(first, other_seed, atol=1e-6)
    assert not np.allclose(first, other_round, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"noise_lambda": -1.0, "seed": 0}, "noise_lambda"), ({"noise_lambda": 0.0, "seed": -1}, "seed")],
)
def test_flame_validates_its_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Flame(**kwargs, env=ServerEnv())
