"""Every registered strategy rejects malformed updates and survives failures (in process)."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp.strategy import FedAvg, Krum

from fedsec.config import RunConfig
from fedsec.errors import UnknownNameError
from fedsec.results import RunRecorder
from strategies import STRATEGIES, GuardedStrategy, build_strategy
from strategies.robust import MatrixFedAvg
from tests.flower_fakes import FakeGrid, error_reply, partition_handler, train_reply

GLOBAL = [np.zeros((2, 2), np.float32), np.zeros(3, np.float32)]


def honest(value: float) -> list[np.ndarray]:
    return [np.full((2, 2), value, np.float32), np.full(3, value, np.float32)]


def grid(n: int = 7) -> FakeGrid:
    return FakeGrid({1000 + i: partition_handler(i) for i in range(n)})


def configured(guarded: GuardedStrategy, global_arrays=GLOBAL, nodes: int = 7) -> GuardedStrategy:
    list(guarded.configure_train(1, ArrayRecord(global_arrays), ConfigRecord(), grid(nodes)))
    return guarded


def make(strategy: str, recorder=None, nodes: int = 7, **overrides) -> GuardedStrategy:
    config = RunConfig.from_run_config({"strategy": strategy, "num-clients": nodes, **overrides})
    return configured(build_strategy(config, initial_arrays=GLOBAL, recorder=recorder), nodes=nodes)


def aggregate(guarded, replies):
    arrays, _ = guarded.aggregate_train(1, list(replies))
    return None if arrays is None else arrays.to_numpy_ndarrays()


def test_registry_names_flower_strategies_and_refuses_unknown_names():
    assert {"fedavg", "krum", "multikrum", "fedmedian", "fedtrimmedavg", "bulyan"} <= set(STRATEGIES)
    with pytest.raises(UnknownNameError, match="unknown strategy 'nope'; choose one of: bulyan"):
        make("nope")


def test_the_guard_wraps_flowers_own_message_api_strategies_and_refuses_anything_else():
    guarded = configured(GuardedStrategy(inner=FedAvg()))
    merged = aggregate(guarded, [train_reply(0, honest(1.0)), train_reply(1, honest(3.0))])
    np.testing.assert_allclose(merged[0], np.full((2, 2), 2.0))
    with pytest.raises(ValueError, match=r"must be a flwr\.serverapp\.strategy\.Strategy"):
        GuardedStrategy(inner=object())  # type: ignore[arg-type]

    class Legacy:
        def aggregate_fit(self, *args):
            return None

    with pytest.raises(ValueError, match=r"legacy flwr\.server\.strategy Legacy"):
        GuardedStrategy(inner=Legacy())  # type: ignore[arg-type]


def test_nan_update_is_rejected_logged_and_not_averaged_in(tmp_path, caplog):
    recorder = RunRecorder(out_dir=tmp_path, scenario="t", config={})
    guarded = make("fedavg", recorder)
    poisoned = honest(1.0)
    poisoned[1][0] = np.nan
    replies = [train_reply(0, honest(1.0)), train_reply(1, honest(3.0)), train_reply(2, poisoned)]
    merged = aggregate(guarded, replies)
    assert merged is not None
    np.testing.assert_allclose(merged[0], np.full((2, 2), 2.0))  # mean of the two good ones
    assert "rejected update from client 2" in caplog.text and "non-finite" in caplog.text
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)
    assert list(record["rejected"]) == ["2"] and record["received"] == 3 and record["aggregated"] is True


def _undecodable() -> ArrayRecord:
    bad = Array(dtype="float32", shape=(2, 2), stype="numpy.ndarray", data=b"not an array")
    return ArrayRecord({"0": bad, "1": Array(np.zeros(3, np.float32))})


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ([np.zeros((2, 2), np.float32)], "array keys"),
        ([np.zeros((4,), np.float32), np.zeros(3, np.float32)], "shape"),
        ([np.zeros((2, 2), np.float64), np.zeros(3, np.float32)], "dtype float64"),
        (_undecodable(), "could not be decoded"),
    ],
)
def test_structurally_malformed_updates_are_rejected(bad, reason):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("fedavg", recorder)
    merged = aggregate(guarded, [train_reply(0, honest(2.0)), train_reply(1, bad)])
    np.testing.assert_allclose(merged[1], np.full(3, 2.0))
    record = recorder.end_round(1, accuracy=0, loss=0)
    assert reason in record["rejected"]["1"]


@pytest.mark.parametrize(
    ("count", "reason"),
    [(0, "positive integer"), (-99, "positive integer"), (2.5, "positive integer"), (float("nan"), "finite")],
)
def test_sample_counts_that_are_not_positive_integers_are_rejected(count, reason):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("fedavg", recorder)
    merged = aggregate(
        guarded, [train_reply(0, honest(2.0)), train_reply(1, honest(9.0), num_examples=count)]
    )
    np.testing.assert_allclose(merged[0], np.full((2, 2), 2.0))
    assert reason in recorder.end_round(1, accuracy=0, loss=0)["rejected"]["1"]


def test_a_reply_claiming_another_nodes_partition_is_rejected():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("fedavg", recorder, **{"fraction-fit": 0.5})  # the sampler asked every node its partition
    liar = train_reply(0, honest(9.0), node_id=1003)  # node 1003 is partition 3
    merged = aggregate(guarded, [train_reply(0, honest(2.0)), liar])
    np.testing.assert_allclose(merged[0], np.full((2, 2), 2.0))
    assert "node 1003 is partition 3" in recorder.end_round(1, accuracy=0, loss=0)["rejected"]["0"]


def test_failures_are_counted_with_their_reasons_and_the_round_keeps_going(caplog):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("fedavg", recorder, nodes=2)
    merged = aggregate(guarded, [train_reply(0, honest(4.0)), error_reply(1001, "TimeoutError: timed out")])
    np.testing.assert_allclose(merged[0], np.full((2, 2), 4.0))
    assert "client 1 failed" in caplog.text and "TimeoutError: timed out" in caplog.text
    record = recorder.end_round(1, accuracy=0, loss=0)
    assert record["failures"] == 1 and "TimeoutError: timed out" in record["failed"]["1"]


def test_round_with_only_bad_updates_keeps_the_previous_model_and_says_why():
    bad = honest(1.0)
    bad[0][:] = np.inf
    guarded = make("fedavg", nodes=1)
    assert aggregate(guarded, [train_reply(0, bad)]) is None
    assert guarded.aggregated_rounds == 0 and "non-finite" in guarded.first_problem


def test_inner_strategy_declining_to_aggregate_keeps_the_previous_model():
    # Bulyan needs n >= 4f + 3; with f = 1 and three updates Flower's Bulyan returns no model.
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("bulyan", recorder, **{"num-malicious-clients": 1})
    assert aggregate(guarded, [train_reply(i, honest(float(i))) for i in range(3)]) is None
    record = recorder.end_round(1, accuracy=0, loss=0)
    assert record["aggregated"] is False and "Bulyan returned no model" in record["aggregation_error"]


def test_inner_aggregation_error_keeps_previous_model_instead_of_crashing(caplog):
    class Broken(FedAvg):
        def aggregate_train(self, server_round, replies):
            raise ArithmeticError("division by zero")

    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = configured(GuardedStrategy(inner=Broken(), recorder=recorder))
    assert aggregate(guarded, [train_reply(0, honest(1.0))]) is None
    assert "could not aggregate" in caplog.text
    assert (
        "ArithmeticError: division by zero" in recorder.end_round(1, accuracy=0, loss=0)["aggregation_error"]
    )


def test_a_non_finite_aggregate_is_refused_and_integer_buffers_stay_integers():
    with_buffer = [np.zeros(3, np.float32), np.array(4, np.int64)]

    class Overflowing(FedAvg):
        def aggregate_train(self, server_round, replies):
            return ArrayRecord([np.full(3, np.inf, np.float32), np.array(4.0)]), MetricRecord()

    guarded = configured(
        GuardedStrategy(inner=Overflowing(min_train_nodes=1, min_available_nodes=1)), with_buffer, 1
    )
    assert aggregate(guarded, [train_reply(0, [np.ones(3, np.float32), np.array(5, np.int64)])]) is None
    assert "not finite" in guarded.first_problem

    fedavg = configured(GuardedStrategy(inner=FedAvg(min_train_nodes=1, min_available_nodes=1)), with_buffer)
    replies = [train_reply(i, [np.full(3, float(i), np.float32), np.array(5, np.int64)]) for i in range(3)]
    merged = aggregate(fedavg, replies)
    assert merged[1].dtype == np.int64 and int(merged[1]) == 5  # Flower averages it as a float


def test_metric_records_are_reduced_to_the_shared_keys_so_flower_can_aggregate_them():
    guarded = configured(GuardedStrategy(inner=FedAvg()))
    replies = [
        train_reply(0, honest(1.0), metrics={"train-loss": 1.0, "attack-scale": 10.0}),
        train_reply(1, honest(3.0), metrics={"train-loss": 3.0}),
    ]
    arrays, metrics = guarded.aggregate_train(1, replies)
    assert arrays is not None and set(metrics) == {"train-loss", "partition-id"}
    assert metrics["train-loss"] == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["fedmedian", "krum", "multikrum", "fedtrimmedavg", "bulyan"])
def test_robust_aggregators_resist_one_huge_outlier_that_fedavg_follows(name):
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1000.0]
    replies = [train_reply(i, honest(v)) for i, v in enumerate(values)]
    unbounded = {"update-norm-bound": 0}  # what each aggregator does with everything the attacker sends
    fedavg = aggregate(make("fedavg", **unbounded), replies)
    robust = aggregate(make(name, **{"num-malicious-clients": 1}, **unbounded), replies)
    assert fedavg[0][0, 0] > 100  # the outlier drags the mean
    assert 0.85 < robust[0][0, 0] < 1.15


def test_the_guard_rejects_an_update_no_genuine_client_can_send_and_records_why():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1e38]
    merged = aggregate(make("fedavg", recorder), [train_reply(i, honest(v)) for i, v in enumerate(values)])
    assert 0.9 < merged[0][0, 0] < 1.1  # FedAvg of the six honest updates
    reason = recorder.end_round(1, accuracy=0, loss=0)["rejected"]["6"]
    assert "update norm" in reason and "exceeds 100×" in reason


def test_an_update_whose_difference_to_the_model_overflows_is_rejected_and_the_round_goes_on():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    near_max = [np.full((2, 2), -3e38, np.float32), np.zeros(3, np.float32)]
    guarded = configured(
        build_strategy(
            RunConfig.from_run_config({"num-clients": 7, "strategy": "fedavg"}),
            initial_arrays=near_max,
            recorder=recorder,
        ),
        global_arrays=near_max,
    )
    replies = [
        train_reply(0, [near_max[0].copy(), np.full(3, 1.0, np.float32)]),
        train_reply(1, [near_max[0].copy(), np.full(3, 3.0, np.float32)]),
        train_reply(2, [np.full((2, 2), 3e38, np.float32), np.full(3, 9.0, np.float32)]),  # w − global = inf
    ]
    merged = aggregate(guarded, replies)
    assert merged is not None  # one such update used to make the whole aggregate non-finite
    np.testing.assert_allclose(merged[1], np.full(3, 2.0))
    assert "overflows float32" in recorder.end_round(1, accuracy=0, loss=0)["rejected"]["2"]


class KeepsUpdates(MatrixFedAvg):
    """FedAvg that keeps every round's update matrix (a strategy may hold on to a batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[np.ndarray] = []

    def aggregate_batch(self, server_round, batch):
        self.kept.append(batch.updates.array())
        return super().aggregate_batch(server_round, batch)


def test_the_round_matrix_is_reused_only_when_no_strategy_holds_the_last_one():
    keeper = KeepsUpdates()
    guarded = configured(GuardedStrategy(inner=keeper))
    aggregate(guarded, [train_reply(i, honest(1.0 + i)) for i in range(3)])
    aggregate(guarded, [train_reply(i, honest(-5.0)) for i in range(3)])
    first, second = keeper.kept
    assert not np.shares_memory(first, second)  # round 2 did not overwrite the rows round 1 handed out
    np.testing.assert_array_equal(first[:, 0], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(second[:, 0], [-5.0, -5.0, -5.0])

    plain = configured(GuardedStrategy(inner=MatrixFedAvg()))
    addresses = []
    for value in (1.0, 2.0):
        aggregate(plain, [train_reply(i, honest(value)) for i in range(3)])
        assert plain._buffer is not None
        addresses.append(plain._buffer.__array_interface__["data"][0])
    assert addresses[0] == addresses[1]  # nothing held it: the same memory, no new pages


def test_a_lying_sample_count_is_clamped_or_rejected_and_cannot_carry_the_round():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = build_strategy(
        RunConfig.from_run_config({"num-clients": 7}),
        initial_arrays=GLOBAL,
        recorder=recorder,
        max_examples=500,
    )
    configured(guarded)
    honest_replies = [train_reply(i, honest(1.0), num_examples=10) for i in range(4)]
    inflated = train_reply(4, honest(5.0), num_examples=300)  # 30× the median: clamped to 100
    impossible = train_reply(5, honest(9.0), num_examples=10**12)  # more than the federation holds
    merged = aggregate(guarded, [*honest_replies, inflated, impossible])
    np.testing.assert_allclose(merged[0], np.full((2, 2), (4 * 10 * 1.0 + 100 * 5.0) / 140), rtol=1e-6)
    record = recorder.end_round(1, accuracy=0, loss=0)
    assert record["clamped_examples"] == {"4": [300, 100]}
    assert "exceeds the 500 training examples" in record["rejected"]["5"]


def test_flowers_krum_through_the_guard_keeps_a_single_honest_model():
    replies = [train_reply(i, honest(v)) for i, v in enumerate([1.0, 1.1, 0.9, 1000.0])]
    merged = aggregate(configured(GuardedStrategy(inner=Krum(num_malicious_nodes=1))), replies)
    assert merged[0][0, 0] in (1.0, np.float32(1.1), np.float32(0.9))


def test_the_aggregate_does_not_depend_on_the_order_the_engine_delivers_results_in():
    # float32 sums are not associative: (1e8 - 1e8) + 1 is 1, but (1 - 1e8) + 1e8 is 0.
    replies = [train_reply(0, honest(1e8)), train_reply(1, honest(-1e8)), train_reply(2, honest(1.0))]
    results = []
    for name in ("fedavg", "flower-fedavg"):
        for order in (replies, replies[::-1], replies[1:] + replies[:1]):
            results.append((name, aggregate(make(name, **{"update-norm-bound": 0}), order)[1]))
    # Always summed in partition order 0, 1, 2, so bitwise the same whatever the delivery order.
    for name in ("fedavg", "flower-fedavg"):
        same = [merged for label, merged in results if label == name]
        assert all(np.array_equal(same[0], other) for other in same[1:])
    # Flower's FedAvg sums array by array: the two large values cancel first, exactly
    np.testing.assert_allclose(results[-1][1], np.full(3, 1.0 / 3.0), rtol=1e-6)


def test_a_node_that_never_replies_is_a_failure_with_its_reason():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("fedavg", recorder)  # configure_train sent the round to all 7 nodes
    merged = aggregate(guarded, [train_reply(i, honest(1.0)) for i in range(6)])  # node 1006 is silent
    np.testing.assert_allclose(merged[0], np.full((2, 2), 1.0))
    record = recorder.end_round(1, accuracy=0, loss=0)
    assert record["failures"] == 1 and record["failed"] == {"6": "no reply within the round timeout"}


def test_an_error_the_superlink_sends_for_an_unreachable_node_is_booked_to_that_node():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("fedavg", recorder, nodes=2)
    for index, msg in enumerate(guarded._sent):  # as Flower's grid numbers them when it pushes them
        msg.metadata.__dict__["_message_id"] = f"m{index}"
    unreachable = next(m for m in guarded._sent if m.metadata.dst_node_id == 1001)
    error = error_reply(1001, "Node Unavailable")
    error.metadata.__dict__["_reply_to_message_id"] = unreachable.metadata.message_id
    error.metadata.__dict__["_src_node_id"] = 1  # the SuperLink answers in the node's stead
    honest_reply = train_reply(0, honest(1.0))
    honest_reply.metadata.__dict__["_reply_to_message_id"] = "m0" if unreachable is guarded._sent[1] else "m1"
    aggregate(guarded, [honest_reply, error])
    record = recorder.end_round(1, accuracy=0, loss=0)
    assert record["failed"] == {"1": "error code 2: Node Unavailable"} and record["failures"] == 1


def test_a_round_records_the_largest_dp_epsilon_among_the_aggregated_clients_only(tmp_path):
    recorder = RunRecorder(out_dir=tmp_path, scenario="t", config={})
    guarded = make("fedavg", recorder)
    rejected = honest(5.0)
    rejected[0][0, 0] = np.inf
    replies = [
        train_reply(0, honest(1.0), metrics={"dp-epsilon": 1.5}),
        train_reply(1, honest(3.0), metrics={"dp-epsilon": 2.5}),
        train_reply(2, rejected, metrics={"dp-epsilon": 9.0}),  # not aggregated: its ε is not the round's
    ]
    assert aggregate(guarded, replies) is not None
    assert recorder.end_round(1, accuracy=0.0, loss=0.0)["dp_epsilon"] == 2.5
    arrays, _ = guarded.aggregate_train(2, [train_reply(0, honest(1.0)), train_reply(1, honest(2.0))])
    second = recorder.end_round(2, accuracy=0.0, loss=0.0)
    assert arrays is not None and second["aggregated"] is True
    assert "dp_epsilon" not in second  # no DP-SGD client, no field


def test_a_round_records_the_seconds_its_aggregated_clients_spent_in_fit():
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make("fedavg", recorder)
    rejected = honest(5.0)
    rejected[0][0, 0] = np.nan
    replies = [
        train_reply(0, honest(1.0), metrics={"fit-seconds": 0.25}),
        train_reply(1, honest(3.0), metrics={"fit-seconds": 0.5}),
        train_reply(2, honest(2.0), metrics={"fit-seconds": float("nan")}),  # nonsense counts 0
        train_reply(3, rejected, metrics={"fit-seconds": 9.0}),  # not aggregated
    ]
    assert aggregate(guarded, replies) is not None
    assert recorder.end_round(1, accuracy=0.0, loss=0.0)["fit_seconds"] == 0.75
