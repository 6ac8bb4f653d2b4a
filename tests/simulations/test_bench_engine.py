"""The bench's empty Flower App (Flower's engine alone) and the row it adds to the rounds section."""

import importlib.util
import io
import json

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from rich.console import Console

from fedsec.bench import Budget
from simulations.bench import common, rounds
from simulations.bench.engine import ENGINE_APP, EngineRound
from tests.flower_fakes import FakeGrid


def engine_module():
    spec = importlib.util.spec_from_file_location("engine_floor", ENGINE_APP / "engine_floor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def context(run_config, node_id=0):
    return Context(run_id=1, node_id=node_id, node_config={}, state=RecordDict(), run_config=run_config)


def test_an_empty_client_sends_back_exactly_the_arrays_it_received():
    app = engine_module()
    sent = ArrayRecord([np.arange(7, dtype=np.float32), np.ones((2, 3), dtype=np.float32)])
    msg = Message(RecordDict({"arrays": sent, "config": ConfigRecord()}), dst_node_id=3, message_type="train")
    reply = app.client(msg, context({}, node_id=3))
    got = reply.content["arrays"].to_numpy_ndarrays()
    assert [a.tolist() for a in got] == [a.tolist() for a in sent.to_numpy_ndarrays()]
    assert reply.content["metrics"]["num-examples"] == 1


def test_the_empty_app_runs_flowers_fedavg_on_every_node_and_writes_each_rounds_seconds(tmp_path):
    app = engine_module()
    received: list[int] = []

    def node(node_id):
        def handle(msg):
            received.append(node_id)
            return app.client(msg, context({}, node_id=node_id))

        return handle

    grid = FakeGrid({10 + i: node(10 + i) for i in range(3)})
    config = {"num-server-rounds": 4, "parameters": 11, "out-dir": str(tmp_path)}
    app.server(grid, context(config))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["nodes"] == 3
    assert len(summary["round_seconds"]) == 4 and all(s >= 0 for s in summary["round_seconds"])
    assert sorted(received) == sorted([10, 11, 12] * 4)


def test_the_steady_engine_round_is_the_median_after_round_one():
    assert EngineRound("ok", (9.0, 0.2, 0.1, 0.4)).steady_seconds == pytest.approx(0.2)
    assert EngineRound("ok", (9.0,)).steady_seconds is None
    assert EngineRound("failed: x", ()).steady_seconds is None


def bench_context(tmp_path, seconds_left=3600.0):
    plan = common.BenchPlan.for_mode(quick=True)
    return common.Context(
        plan=plan, out=tmp_path, console=Console(file=io.StringIO()), budget=Budget(seconds_left)
    )


def row(**values):
    return {"model": "lenet", "round_s": 1.0, "actor_fit_s": 0.6, **values}


def test_the_engine_cell_adds_the_bound_and_what_fedsec_spends_beyond_fit_and_engine(tmp_path, monkeypatch):
    asked = {}

    def fake(out, *, clients, parameters, rounds):
        asked.update(clients=clients, parameters=parameters, rounds=rounds, out=out)
        return EngineRound("ok", (5.0, 0.1, 0.3, 0.2))

    monkeypatch.setattr(rounds, "engine_round", fake)
    cell = row()
    rounds.engine_cell(bench_context(tmp_path), cell, clients=10, parameters=62006, rounds=2, floor_s=0.8)
    assert asked["clients"] == 10 and asked["parameters"] == 62006 and asked["rounds"] == 3
    assert asked["out"].is_relative_to(tmp_path)
    assert cell["engine_status"] == "ok"
    assert cell["engine_round_s"] == pytest.approx(0.2)
    assert cell["ratio_bound"] == pytest.approx(1.25)
    assert cell["rest_s"] == pytest.approx(1.0 - 0.6 - 0.2)


def test_a_failed_or_unaffordable_engine_run_leaves_the_numbers_empty_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(rounds, "engine_round", lambda out, **kw: EngineRound("failed: boom", ()))
    cell = row()
    rounds.engine_cell(bench_context(tmp_path), cell, clients=10, parameters=10, rounds=3, floor_s=0.8)
    assert cell["engine_status"] == "failed: boom" and "engine_round_s" not in cell

    def must_not_run(out, **kw):
        raise AssertionError("ran past the budget")

    monkeypatch.setattr(rounds, "engine_round", must_not_run)
    cell = row()
    rounds.engine_cell(bench_context(tmp_path, 1.0), cell, clients=10, parameters=10, rounds=3, floor_s=0.8)
    assert cell["engine_status"].startswith("skipped (budget")


def test_engine_round_refuses_sizes_it_cannot_measure(tmp_path):
    from simulations.bench.engine import engine_round

    with pytest.raises(ValueError, match="rounds >= 2"):
        engine_round(tmp_path, clients=2, parameters=10, rounds=1)


@pytest.mark.slow
def test_the_empty_app_runs_through_flwr_run_on_the_simulation_engine(tmp_path):
    """``flwr run`` packages the empty app, runs it on 4 simulated nodes and the bench reads its rounds."""
    from simulations.bench.engine import engine_round

    engine = engine_round(tmp_path / "engine", clients=4, parameters=1000, rounds=3, timeout=300)
    assert engine.status == "ok"
    assert len(engine.round_seconds) == 3
    assert engine.steady_seconds is not None and 0 < engine.steady_seconds < 30
    assert (tmp_path / "engine" / "logs").is_dir()
