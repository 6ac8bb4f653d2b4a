"""FedAvg through Flower's own round loop, the real ClientApp and strategy stack, in process (no Ray).

``Strategy.start`` runs exactly as in the ServerApp, against a :class:`FakeGrid`
whose nodes are the ClientApp's ``train``/``query`` functions, plus one node
that sends NaNs and one that crashes.
"""

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedsec.config import RunConfig
from fedsec.experiment import load_bundle, new_model, server_data
from fedsec.results import RunRecorder, read_metrics, read_summary
from fedsec.training import get_weights
from simulations import client_app
from simulations.server_app import make_evaluate_fn
from strategies import build_strategy
from tests.flower_fakes import FakeGrid, node_context

RUN_CONFIG = {
    "dataset": "synthetic",
    "model": "cnn",
    "num-clients": 5,
    "validation-size": 30,
    "local-epochs": 2,
}


def fedsec_node(context: Context, rounds_seen: list[int]):
    def handle(msg: Message) -> Message:
        if msg.metadata.message_type == "query":
            return client_app.query(msg, context)
        rounds_seen.append(int(msg.content["config"]["server-round"]))
        return client_app.train(msg, context)

    return handle


def nan_node(pid: int):
    """A node whose every update is NaN (and which says it holds 10,000 examples)."""

    def handle(msg: Message) -> Message:
        if msg.metadata.message_type == "query":
            return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)
        arrays = [np.full_like(a, np.nan) for a in msg.content["arrays"].to_numpy_ndarrays()]
        metrics = MetricRecord({"num-examples": 10_000, "partition-id": pid})
        return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)

    return handle


def crashing_node(pid: int):
    def handle(msg: Message) -> Message:
        if msg.metadata.message_type == "query":
            return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)
        raise RuntimeError("out of memory")

    return handle


def test_three_rounds_of_fedavg_raise_server_accuracy_and_drop_a_nan_client_and_a_crashed_one(tmp_path):
    config = RunConfig.from_run_config(RUN_CONFIG)
    bundle = load_bundle(config)
    recorder = RunRecorder(out_dir=tmp_path, scenario="in-process", config=config.to_run_config())
    model = new_model(config, bundle)
    test_split = server_data(config, bundle)["test"]
    weights = get_weights(model)
    strategy = build_strategy(config, initial_arrays=weights, recorder=recorder)
    seen: list[int] = []
    nodes = {7000 + pid: fedsec_node(node_context(RUN_CONFIG, pid, 5), seen) for pid in range(3)}
    nodes[7003] = nan_node(3)
    nodes[7004] = crashing_node(4)
    grid = FakeGrid(nodes)

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(weights),
        num_rounds=3,
        timeout=None,  # type: ignore[arg-type]
        train_config=ConfigRecord(),
        evaluate_fn=make_evaluate_fn(config, model, test_split, bundle.num_classes, recorder),
    )

    summary = recorder.finish()
    rounds = read_metrics(tmp_path)
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert rounds[0]["accuracy"] < 0.3 and rounds[-1]["accuracy"] > 0.8
    assert all(np.isfinite(w).all() for w in result.arrays.to_numpy_ndarrays())
    assert all(list(r["rejected"]) == ["3"] and "non-finite" in r["rejected"]["3"] for r in rounds[1:])
    assert all(r["failed"] == {"4": "error code 2: RuntimeError: out of memory"} for r in rounds[1:])
    assert read_summary(tmp_path)["rejected_updates"] == 3 == summary["rejected_updates"]
    assert summary["failures"] == 3
    assert grid.count("query") == 5  # each node asked its partition once
    assert seen == [1, 1, 1, 2, 2, 2, 3, 3, 3]  # the fit config carries the round
