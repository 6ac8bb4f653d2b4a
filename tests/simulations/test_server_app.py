"""The whole ServerApp (``@app.main``) in process, against fedsec's ClientApp on a local grid (no Ray)."""

import json

import pytest
from flwr.app import Message

from fedsec.errors import ConfigError, FedsecError
from fedsec.results import read_metrics, read_summary
from simulations import server_app
from simulations.server_app import RunFailed, default_out_dir, round_table
from strategies.sampling import NodeWaitError
from tests.flower_fakes import FakeGrid, app_nodes, server_context

SMALL = {
    "dataset": "synthetic",
    "model": "cnn",
    "num-server-rounds": 2,
    "validation-size": 30,
    "node-wait": 0.2,
}


def test_num_clients_zero_takes_every_node_and_the_run_learns_and_records(tmp_path):
    config = {**SMALL, "num-clients": 0, "out-dir": str(tmp_path)}
    grid = FakeGrid(app_nodes(config, 3))

    server_app.app(grid, server_context(config))

    rounds = read_metrics(tmp_path)
    summary = read_summary(tmp_path)
    assert [r["round"] for r in rounds] == [0, 1, 2] and all(r["received"] == 3 for r in rounds[1:])
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"] + 0.3
    assert summary["status"] == "completed" and summary["config"]["num-clients"] == 3
    assert grid.count("query") == 3 and grid.count("train") == 6


def test_a_run_whose_every_client_fails_ends_failed_with_the_first_reason(tmp_path):
    config = {**SMALL, "num-clients": 2, "out-dir": str(tmp_path)}

    def crash(msg: Message) -> Message:
        raise MemoryError("the device ran out of memory")

    with pytest.raises(RunFailed, match="no round aggregated an update: error code 2: MemoryError"):
        server_app.app(FakeGrid({1: crash, 2: crash}), server_context(config))
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed" and "MemoryError" in summary["reason"]
    assert all(r["failures"] == 2 and r["aggregated"] is False for r in read_metrics(tmp_path)[1:])


def test_a_scenario_with_variants_points_to_fedsec_run():
    config = {**SMALL, "scenario": "layered-mnist", "variants": "layered-mnist.variants.toml"}
    with pytest.raises(ConfigError, match="run it with `fedsec run layered-mnist`"):
        server_app.app(FakeGrid({}), server_context(config))


def test_more_clients_than_nodes_fails_within_seconds_saying_how_to_start_them():
    config = {**SMALL, "num-clients": 5}
    with pytest.raises(NodeWaitError, match="num-supernodes=5"):
        server_app.app(FakeGrid(app_nodes(config, 3)), server_context(config))


def test_the_default_records_directory_is_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from fedsec.config import RunConfig

    path = default_out_dir(RunConfig.from_run_config({"scenario": "quickstart"}), now=0.0)
    assert path.parent == tmp_path / "runs" and path.name.startswith("quickstart-19")


def test_the_round_table_prints_missing_and_non_finite_losses_as_a_dash():
    lines = round_table([{"round": 1, "accuracy": 0.5, "loss": None, "seconds": 1.0, "rejected": {"3": "x"}}])
    assert lines[1].split() == ["1", "0.5000", "-", "1.0", "0", "1"]
    assert json.dumps(lines)  # plain text


def test_same_seed_same_run_bitwise_whatever_node_ids_and_delivery_order(tmp_path):
    config = {**SMALL, "num-clients": 4, "fraction-fit": 0.5}
    runs = []
    for index, (first_node, reverse) in enumerate(((7000, False), (123456, True))):
        out = tmp_path / f"run{index}"
        run = {**config, "out-dir": str(out)}
        nodes = app_nodes(run, 4, first_node=first_node)
        grid = FakeGrid(dict(reversed(nodes.items())) if reverse else nodes)
        server_app.app(grid, server_context(run))
        runs.append(read_metrics(out))
    first, second = runs
    assert [r["loss"] for r in first] == [r["loss"] for r in second]
    assert [r.get("accepted") for r in first] == [r.get("accepted") for r in second]
    assert all(len(r["accepted"]) == 2 for r in first[1:])  # half of the 4 nodes trained each round


def test_a_run_killed_after_round_two_resumes_from_its_checkpoint_and_ends_bitwise_like_the_whole_run(
    tmp_path,
):
    config = {**SMALL, "num-clients": 3, "num-server-rounds": 3, "fraction-fit": 0.6}
    whole = tmp_path / "whole"
    server_app.app(FakeGrid(app_nodes(config, 3)), server_context({**config, "out-dir": str(whole)}))

    killed = tmp_path / "killed"
    nodes = app_nodes(config, 3)

    def dies_in_round_three(handler):
        def handle(msg: Message) -> Message:
            if msg.metadata.message_type == "train" and msg.content["config"]["server-round"] == 3:
                raise SystemExit("the server process is killed")
            return handler(msg)

        return handle

    grid = FakeGrid({node: dies_in_round_three(handler) for node, handler in nodes.items()})
    with pytest.raises(SystemExit):
        server_app.app(grid, server_context({**config, "out-dir": str(killed)}))
    assert [r["round"] for r in read_metrics(killed)] == [0, 1, 2] and not (killed / "summary.json").exists()

    resumed_grid = FakeGrid(app_nodes(config, 3, first_node=90_000))  # new node ids, as after a restart
    server_app.app(resumed_grid, server_context({**config, "out-dir": str(killed), "resume": True}))

    expected, got = read_metrics(whole), read_metrics(killed)
    assert [r["round"] for r in got] == [0, 1, 2, 3]
    assert [r["loss"] for r in got] == [r["loss"] for r in expected]  # bitwise, round by round
    assert [r.get("accepted") for r in got] == [r.get("accepted") for r in expected]
    assert read_summary(killed)["status"] == "completed"
    assert resumed_grid.count("train") == 2  # only round 3 ran again, on the same 2 of 3 nodes


def test_resuming_needs_a_checkpoint_and_an_unfinished_run(tmp_path):
    from fedsec.checkpoint import CheckpointError

    config = {**SMALL, "num-clients": 2, "num-server-rounds": 1, "out-dir": str(tmp_path / "none")}
    with pytest.raises(CheckpointError, match="no checkpoint"):
        server_app.app(FakeGrid(app_nodes(config, 2)), server_context({**config, "resume": True}))
    done = {**config, "out-dir": str(tmp_path / "done")}
    server_app.app(FakeGrid(app_nodes(done, 2)), server_context(done))
    with pytest.raises(FedsecError, match="already finished"):
        server_app.app(FakeGrid(app_nodes(done, 2)), server_context({**done, "resume": True}))


def test_a_noisy_model_scores_the_same_at_a_round_whatever_ran_before_and_leaves_the_rng_alone(tmp_path):
    """DiPSeN draws fresh noise in each forward pass; the server evaluation draws it from seed and round."""
    import torch
    from flwr.app import ArrayRecord

    from fedsec.config import RunConfig
    from fedsec.experiment import load_bundle, new_model, server_data
    from fedsec.results import RunRecorder
    from fedsec.training import get_weights
    from simulations.server_app import make_evaluate_fn

    config = RunConfig.from_run_config(
        {"dataset": "synthetic", "model": "dipsen", "dipsen-sigma": 2.0, "validation-size": 30}
    )
    bundle = load_bundle(config)
    model = new_model(config, bundle)
    arrays = ArrayRecord(get_weights(model))
    test = server_data(config, bundle)["test"]

    def score(server_round: int, torch_seed: int) -> tuple[float, float]:
        recorder = RunRecorder(out_dir=tmp_path / str(len(list(tmp_path.iterdir()))), scenario="t", config={})
        torch.manual_seed(torch_seed)  # a different history of global draws before the evaluation
        before = torch.random.get_rng_state()
        metrics = make_evaluate_fn(config, model, test, bundle.num_classes, recorder)(server_round, arrays)
        assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched
        return float(metrics["accuracy"]), float(metrics["loss"])

    assert score(1, 0) == score(1, 123)
    losses = {score(r, 0)[1] for r in (1, 2, 3)}
    assert len(losses) == 3  # each round draws its own noise (the layer is not switched off)


@pytest.mark.parametrize("model_name", ["lenet", "cnn", "dipsen"])
def test_the_server_evaluates_on_eval_threads_and_records_the_same_at_one_and_two(tmp_path, model_name):
    """``eval-threads`` sets the evaluation's intra-op threads (restored after); the records do not change."""
    import torch
    from flwr.app import ArrayRecord

    from fedsec.config import RunConfig
    from fedsec.experiment import load_bundle, new_model, server_data
    from fedsec.results import RunRecorder
    from fedsec.training import get_weights
    from simulations.server_app import make_evaluate_fn

    base = {"dataset": "synthetic", "model": model_name, "validation-size": 30}
    bundle = load_bundle(RunConfig.from_run_config(base))
    torch.manual_seed(3)
    model = new_model(RunConfig.from_run_config(base), bundle)
    arrays = ArrayRecord(get_weights(model))
    test = server_data(RunConfig.from_run_config(base), bundle)["test"]
    seen: list[int] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))

    def score(threads: int) -> tuple[float, float]:
        config = RunConfig.from_run_config({**base, "eval-threads": threads})
        recorder = RunRecorder(out_dir=tmp_path / f"t{threads}", scenario="t", config={})
        seen.clear()
        before = torch.get_num_threads()
        metrics = make_evaluate_fn(config, model, test, bundle.num_classes, recorder)(1, arrays)
        assert torch.get_num_threads() == before
        assert seen and set(seen) == {threads}
        return float(metrics["accuracy"]), float(metrics["loss"])

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert score(1) == score(2)
    finally:
        torch.set_num_threads(previous)
