"""Layered backdoor defense, server side, in process: cosine drop, HDBSCAN majority, distillation."""

import numpy as np
import pytest
from flwr.app import MetricRecord
from flwr.serverapp.strategy import FedAvg

from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from fedsec.experiment import load_bundle, new_model
from fedsec.results import RunRecorder
from fedsec.training import get_weights
from strategies import build_strategy
from strategies.layered import LayeredDefense, ServerDistillation
from strategies.registry import layered_defense, server_distillation
from strategies.wrapper import GroundTruth, ServerEnv
from tests.flower_fakes import aggregate, configure, train_reply

SHAPES = [(2, 3), (6,)]
D = 12
A = np.r_[np.ones(6), np.zeros(6)]  # the honest direction
B = np.r_[np.zeros(6), np.ones(6)]  # the outliers' direction (orthogonal to A)


def arrays(vector: np.ndarray) -> list[np.ndarray]:
    return [vector[:6].reshape(2, 3).astype(np.float32), vector[6:].astype(np.float32)]


def vector(weights) -> np.ndarray:
    return np.concatenate([a.astype(np.float64).ravel() for a in weights])


def layered(recorder=None, truth=None, **flags):
    inner = FedAvg(min_train_nodes=1, min_available_nodes=1)
    return LayeredDefense(inner=inner, recorder=recorder, truth=truth, **flags)


def run_round(strategy, server_round, global_vector, updates, examples=None):
    """configure_train with ``global_vector``, then aggregate ``global + updates[i]``."""
    configure(strategy, server_round, arrays(global_vector))
    examples = examples or [10] * len(updates)
    replies = [
        train_reply(i, arrays(global_vector + u), num_examples=n)
        for i, (u, n) in enumerate(zip(updates, examples, strict=True))
    ]
    merged = aggregate(strategy, server_round, replies)
    return None if merged is None else vector(merged)


def noisy(direction, count, seed):
    rng = np.random.default_rng(seed)
    return [direction + rng.normal(0.0, 0.1, D) for _ in range(count)]


def test_round_two_drops_updates_against_the_previous_global_update_and_records_why():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    truth = GroundTruth(malicious=frozenset({"7", "8", "9"}))
    strategy = layered(recorder, truth, cluster=False)
    g0 = np.zeros(D)
    g1 = run_round(strategy, 1, g0, noisy(A, 10, 0))
    assert strategy.previous_global_update is None  # nothing to compare with in round 1
    recorder.end_round(1, accuracy=0, loss=0)

    updates = [*noisy(A, 7, 1), -A, -A - 0.1 * B, -2 * A]
    g2 = run_round(strategy, 2, g1, updates)
    np.testing.assert_allclose(strategy.previous_global_update, g1 - g0, atol=1e-6)
    record = recorder.end_round(2, accuracy=0, loss=0)
    assert sorted(record["dropped"]) == ["7", "8", "9"]
    assert all("negative" in reason for reason in record["dropped"].values())
    assert record["kept"]["layered"] == [str(i) for i in range(7)]
    assert record["detection"]["layered"] == {"tp": 3, "fp": 0, "fn": 0, "tn": 7}
    assert all(record["layered_cosine"][str(i)] < 0 for i in (7, 8, 9))
    assert all(record["layered_cosine"][str(i)] > 0.9 for i in range(7))
    np.testing.assert_allclose(g2, g1 + np.mean(updates[:7], axis=0), atol=1e-5)
    assert record["layered_step1"] == {"status": "applied", "applied": True, "negative": 3, "updates": 10}


def test_every_round_records_whether_step_1_ran_and_how_many_updates_were_negative():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    strategy = layered(recorder, cluster=False)
    g1 = run_round(strategy, 1, np.zeros(D), noisy(A, 5, 10))
    first = recorder.end_round(1, accuracy=0, loss=0)
    assert first["layered_step1"] == {
        "status": "no-reference",
        "applied": False,
        "negative": None,
        "updates": 5,
    }

    # 3 of 5 against the previous global update: the majority, so step 1 is skipped and all are kept
    updates = [*noisy(A, 2, 11), -A, -A, -2 * A]
    merged = run_round(strategy, 2, g1, updates)
    second = recorder.end_round(2, accuracy=0, loss=0)
    assert second["layered_step1"] == {
        "status": "skipped-stale",
        "applied": False,
        "negative": 3,
        "updates": 5,
    }
    assert "dropped" not in second and second["kept"]["layered"] == ["0", "1", "2", "3", "4"]
    np.testing.assert_allclose(merged, g1 + np.mean(updates, axis=0), atol=1e-5)


def test_round_one_skips_the_negative_step():
    strategy = layered(cluster=False)
    updates = [*noisy(A, 7, 2), -A, -A, -A]
    merged = run_round(strategy, 1, np.zeros(D), updates)
    np.testing.assert_allclose(merged, np.mean(updates, axis=0), atol=1e-5)


def test_hdbscan_drops_planted_outliers_and_fedavg_averages_the_kept_ones():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    strategy = layered(recorder, drop_negative=False)
    updates = noisy(A, 7, 3) + noisy(B, 3, 4)
    examples = [10, 20, 30, 40, 50, 60, 70, 15, 25, 35]
    merged = run_round(strategy, 1, np.zeros(D), updates, examples)
    record = recorder.end_round(1, accuracy=0, loss=0)
    assert {"7", "8", "9"} <= set(record["dropped"])
    assert all("HDBSCAN" in record["dropped"][label] for label in ("7", "8", "9"))
    kept = [int(label) for label in record["kept"]["layered"]]
    assert len(kept) >= 5 and set(kept) <= set(range(7))
    weights = np.array([examples[i] for i in kept], dtype=np.float64)
    expected = (weights[:, None] * np.stack([updates[i] for i in kept])).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(merged, expected, atol=1e-5)
    assert merged[6:].max() < 0.1  # none of the outliers' direction got in


def test_both_steps_off_keep_everyone_even_against_the_previous_update():
    strategy = layered(drop_negative=False, cluster=False)
    strategy.previous_global_update = A.copy()
    updates = [*noisy(A, 5, 5), -A, -A, *noisy(B, 3, 6)]
    merged = run_round(strategy, 1, np.zeros(D), updates)
    np.testing.assert_allclose(merged, np.mean(updates, axis=0), atol=1e-5)
    np.testing.assert_array_equal(strategy.previous_global_update, A)  # round 1 keeps what was set


def test_a_round_that_kept_the_model_does_not_erase_the_reference_direction():
    strategy = layered(cluster=False)
    run_round(strategy, 1, np.zeros(D), noisy(A, 3, 7))
    configure(strategy, 2, arrays(A))
    configure(strategy, 3, arrays(A))  # round 2 kept the model
    np.testing.assert_allclose(strategy.previous_global_update, A, atol=1e-6)


def test_clipping_shrinks_a_scaled_update_in_the_majority_to_the_median_norm_and_records_it():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    strategy = layered(recorder, drop_negative=False, cluster=False, clip=True)
    honest = noisy(A, 9, 8)
    scaled = 20 * honest[0]  # same direction as the majority, 20x the norm (constrain-and-scale)
    updates = [*honest, scaled]
    merged = run_round(strategy, 1, np.zeros(D), updates)
    record = recorder.end_round(1, accuracy=0, loss=0)
    bound = float(np.median(np.linalg.norm(np.stack(updates), axis=1)))
    assert record["layered_clip_norm"] == pytest.approx(bound, rel=1e-5)
    assert record["layered_clipped"]["9"] == pytest.approx(bound / np.linalg.norm(scaled), rel=1e-5)
    clipped = [u * min(1.0, bound / np.linalg.norm(u)) for u in updates]
    np.testing.assert_allclose(merged, np.mean(clipped, axis=0), atol=1e-5)
    unclipped = layered(drop_negative=False, cluster=False)
    # without clipping the scaled update drags the mean far beyond any honest update
    assert np.linalg.norm(run_round(unclipped, 1, np.zeros(D), updates)) > 2 * bound
    assert np.linalg.norm(merged) <= bound + 1e-6


def test_constructor_validates_flags():
    with pytest.raises(ValueError, match="cluster"):
        LayeredDefense(inner=FedAvg(), cluster="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip"):
        LayeredDefense(inner=FedAvg(), clip=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_samples"):
        LayeredDefense(inner=FedAvg(), min_samples=0)


def test_layered_min_samples_key_zero_means_the_cluster_size():
    env = ServerEnv()
    default = layered_defense(RunConfig.from_run_config({}), FedAvg(), env)
    single = layered_defense(RunConfig.from_run_config({"layered-min-samples": 1}), FedAvg(), env)
    assert (default.min_samples, single.min_samples) == (None, 1)
    with pytest.raises(ConfigError, match="layered-min-samples"):
        RunConfig.from_run_config({"layered-min-samples": -1})


# ---------------------------------------------------------------- registry


def registry_config(**overrides):
    return RunConfig.from_run_config({"num-clients": 4, **overrides})


@pytest.mark.parametrize("name", ["layered", "foolsgold", "flame"])
def test_registry_builds_the_defenses_guarded(name):
    config = registry_config(strategy=name, **{"flame-noise": 0.0})
    guarded = build_strategy(config, initial_arrays=arrays(np.zeros(D)))
    assert type(guarded).__name__ == "GuardedStrategy"
    configure(guarded, 1, arrays(np.zeros(D)), nodes=4)
    replies = [train_reply(i, arrays(u)) for i, u in enumerate([*noisy(A, 3, 8), A + B])]
    weights = aggregate(guarded, 1, replies)
    assert weights is not None
    merged = vector(weights)
    assert merged[:6].mean() > 0.3  # moved in the honest direction


# ---------------------------------------------------------------- server distillation


def distill_config(**overrides):
    return RunConfig.from_run_config(
        {
            "strategy": "fedavg",
            "num-clients": 2,
            "dataset": "synthetic",
            "model": "lenet",
            "clean-size": 50,
            "validation-size": 0,
            "batch-size": 25,
            "server-distill": True,
            "distill-learning-rate": 0.05,
            **overrides,
        }
    )


def distill_round(config, recorder):
    initial = get_weights(new_model(config, load_bundle(config)))
    guarded = build_strategy(config, initial_arrays=initial, recorder=recorder)
    assert isinstance(guarded.inner, ServerDistillation)
    configure(guarded, 1, initial, nodes=2)
    rng = np.random.default_rng(0)
    clients = [[w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in initial] for _ in range(2)]
    distilled = aggregate(guarded, 1, [train_reply(i, c) for i, c in enumerate(clients)])
    fedavg = [np.mean([c[k] for c in clients], axis=0) for k in range(len(initial))]
    return distilled, fedavg


def test_server_distillation_fine_tunes_the_aggregate_and_records_its_loss():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    config = distill_config()
    distilled, fedavg = distill_round(config, recorder)
    assert [a.shape for a in distilled] == [a.shape for a in fedavg]
    assert [a.dtype for a in distilled] == [a.dtype for a in fedavg]
    change = max(float(np.abs(d - f).max()) for d, f in zip(distilled, fedavg, strict=True))
    assert change > 1e-4
    loss = recorder.end_round(1, accuracy=0, loss=0)["server_distill_loss"]
    assert np.isfinite(loss) and loss > 0
    again, _ = distill_round(config, None)  # same seed, same result
    for a, b in zip(distilled, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_server_distillation_passes_through_a_round_without_an_aggregate():
    class Nothing(FedAvg):
        def aggregate_train(self, server_round, replies):
            return None, MetricRecord({"why": 1.0})

    config = distill_config()
    wrapper = server_distillation(config, Nothing(), ServerEnv())
    assert wrapper.aggregate_train(1, []) == (None, MetricRecord({"why": 1.0}))


@pytest.mark.parametrize("name", ["krum", "layered", "foolsgold", "flame"])
def test_server_distill_wraps_any_strategy(name):
    config = distill_config(strategy=name)
    initial = get_weights(new_model(config, load_bundle(config)))
    guarded = build_strategy(config, initial_arrays=initial)
    assert isinstance(guarded.inner, ServerDistillation)
    assert (
        type(guarded.inner.inner).__name__
        == {
            "krum": "MatrixKrum",
            "layered": "LayeredDefense",
            "foolsgold": "FoolsGold",
            "flame": "Flame",
        }[name]
    )


def test_server_distillation_needs_a_clean_set():
    with pytest.raises(ConfigError, match="clean-size > 0"):
        build_strategy(distill_config(**{"clean-size": 0}), initial_arrays=arrays(np.zeros(D)))


def test_server_distill_epochs_overrides_distill_epochs_on_the_server_only():
    shared = server_distillation(distill_config(**{"distill-epochs": 2}), FedAvg(), ServerEnv())
    own = server_distillation(
        distill_config(**{"distill-epochs": 2, "server-distill-epochs": 5}), FedAvg(), ServerEnv()
    )
    assert (shared.epochs, own.epochs) == (2, 5)
    with pytest.raises(ConfigError, match="server-distill-epochs"):
        distill_config(**{"server-distill-epochs": -1})
