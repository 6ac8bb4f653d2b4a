"""Every registered strategy rejects malformed updates and survives failures (in process)."""

import numpy as np
import pytest
from flwr.common import Parameters, ndarrays_to_parameters, parameters_to_ndarrays

from fedsec.config import RunConfig
from fedsec.errors import UnknownNameError
from fedsec.results import RunRecorder
from strategies import STRATEGIES, build_strategy
from tests.flower_fakes import fit_result

GLOBAL = [np.zeros((2, 2), np.float32), np.zeros(3, np.float32)]


def honest(value: float) -> list[np.ndarray]:
    return [np.full((2, 2), value, np.float32), np.full(3, value, np.float32)]


def make(strategy: str, recorder=None, **overrides):
    config = RunConfig.from_run_config({"strategy": strategy, "num-clients": 7, **overrides})
    guarded = build_strategy(config, initial_parameters=ndarrays_to_parameters(GLOBAL), recorder=recorder)
    guarded.initialize_parameters(client_manager=None)  # type: ignore[arg-type]
    return guarded


def aggregate(guarded, results, failures=()):
    parameters, _ = guarded.aggregate_fit(1, list(results), list(failures))
    return None if parameters is None else parameters_to_ndarrays(parameters)


def test_registry_names_flower_strategies_and_refuses_unknown_names():
    assert {"fedavg", "krum", "multikrum", "fedmedian", "fedtrimmedavg", "bulyan"} <= set(STRATEGIES)
    with pytest.raises(UnknownNameError, match="unknown strategy 'nope'; choose one of: bulyan"):
        make("nope")


def test_nan_update_is_rejected_logged_and_not_averaged_in(tmp_path, caplog):
    recorder = RunRecorder(out_dir=tmp_path, scenario="t", config={})
    guarded = make("fedavg", recorder)
    poisoned = honest(1.0)
    poisoned[1][0] = np.nan
    results = [fit_result(0, honest(1.0)), fit_result(1, honest(3.0)), fit_result(2, poisoned)]
    merged = aggregate(guarded, results)
    assert merged is not None
    np.testing.assert_allclose(merged[0], np.full((2, 2), 2.0))  # mean of the two good ones
    assert "rejected update from client 2" in caplog.text and "non-finite" in caplog.text
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)
    assert list(record["rejected"]) == ["2"] and record["received"] == 3


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ([np.zeros((2, 2), np.float32)], "expected 2 arrays, got 1"),
        ([np.zeros((4,), np.float32), np.zeros(3, np.float32)], "shape"),
        ([np.zeros((2, 2), np.float64), np.zeros(3, np.float32)], "dtype float64"),
        (Parameters(tensors=[b"not an array", b"x"], tensor_type="numpy.ndarray"), "could not be decoded"),
    ],
)
def test_structurally_malformed_updates_are_rejected(bad, reason, tmp_path):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("fedavg", recorder)
    merged = aggregate(guarded, [fit_result(0, honest(2.0)), fit_result(1, bad)])
    np.testing.assert_allclose(merged[1], np.full(3, 2.0))
    record = recorder.end_round(1, accuracy=0, loss=0)
    assert reason in record["rejected"]["1"]


def test_failures_are_counted_and_round_keeps_going(caplog):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("fedavg", recorder)
    merged = aggregate(guarded, [fit_result(0, honest(4.0))], failures=[TimeoutError("client 5 timed out")])
    np.testing.assert_allclose(merged[0], np.full((2, 2), 4.0))
    assert "TimeoutError: client 5 timed out" in caplog.text
    assert recorder.end_round(1, accuracy=0, loss=0)["failures"] == 1


def test_round_with_only_bad_updates_keeps_the_previous_model():
    bad = honest(1.0)
    bad[0][:] = np.inf
    assert aggregate(make("fedavg"), [fit_result(0, bad)]) is None


def test_inner_aggregation_error_keeps_previous_model_instead_of_crashing(caplog):
    # Bulyan needs n >= 4f + 3; with f = 1 and three updates it raises inside Flower.
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("bulyan", recorder, **{"num-malicious-clients": 1})
    assert aggregate(guarded, [fit_result(i, honest(float(i))) for i in range(3)]) is None
    assert "could not aggregate" in caplog.text
    assert "4 * num_malicious + 3" in recorder.end_round(1, accuracy=0, loss=0)["aggregation_error"]


@pytest.mark.parametrize("name", ["fedmedian", "krum", "multikrum", "fedtrimmedavg", "bulyan"])
def test_robust_aggregators_resist_one_huge_outlier_that_fedavg_follows(name):
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1000.0]
    results = [fit_result(i, honest(v)) for i, v in enumerate(values)]
    fedavg = aggregate(make("fedavg"), results)
    robust = aggregate(make(name, **{"num-malicious-clients": 1}), results)
    assert fedavg[0][0, 0] > 100  # the outlier drags the mean
    assert 0.85 < robust[0][0, 0] < 1.15


def test_the_aggregate_does_not_depend_on_the_order_the_engine_delivers_results_in():
    # float32 sums are not associative: (1e8 - 1e8) + 1 is 1, but (1 - 1e8) + 1e8 is 0.
    def update(value: float) -> list[np.ndarray]:
        return [np.full((2, 2), value, np.float32), np.full(3, value, np.float32)]

    results = [fit_result(0, update(1e8)), fit_result(1, update(-1e8)), fit_result(2, update(1.0))]
    for order in (results, results[::-1], results[1:] + results[:1]):
        merged = aggregate(make("fedavg"), order)
        # Always summed in partition order 0, 1, 2: the two large values cancel first.
        np.testing.assert_allclose(merged[1], np.full(3, 1.0 / 3.0), rtol=1e-6)
