"""The README's code runs: Python blocks are executed, type-checked and used; the device recipe runs.

* the "own Flower app" ServerApp runs against in-process fedsec nodes, one of them sending NaN and
  one a boosted poisoned update, and the global model learns;
* the "new strategy" block registers ``clipped-fedavg``, which then learns through the whole
  fedsec ServerApp;
* every Python block passes mypy with the project's settings;
* (slow) the real-device recipe's commands run on loopback: SuperLink, two SuperNodes, ``flwr run``.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedsec.config import RunConfig
from fedsec.experiment import load_bundle, new_model, server_data
from fedsec.results import read_metrics, read_summary
from fedsec.training import evaluate, set_weights
from simulations import server_app
from simulations.processes import TAG_VARIABLE, free_port, kill_tagged
from tests.flower_fakes import FakeGrid, app_nodes, server_context

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)


def python_block(marker: str) -> str:
    (block,) = [b for b in blocks("python") if marker in b]
    return block


def test_the_readme_starts_with_the_two_commands_and_stays_short():
    first = blocks("bash")[0]
    assert first.splitlines()[0].startswith("make run") and first.splitlines()[1].startswith("make test")
    assert len(README.splitlines()) <= 275  # with the speed table generated from the recorded bench


def test_every_python_block_passes_mypy_with_the_project_settings(tmp_path):
    for index, block in enumerate(blocks("python")):
        (tmp_path / f"readme_block_{index}.py").write_text(block)
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def nan_node(pid: int):
    def handle(msg: Message) -> Message:
        if msg.metadata.message_type == "query":
            return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)
        arrays = [np.full_like(a, np.nan) for a in msg.content.array_records["arrays"].to_numpy_ndarrays()]
        metrics = MetricRecord({"num-examples": 100, "partition-id": pid})
        return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)

    return handle


def test_the_own_flower_app_example_rejects_nan_drops_the_booster_and_learns(caplog):
    namespace: dict[str, Any] = {}
    exec(compile(python_block("app = ServerApp()"), "README.md", "exec"), namespace)
    run_config = {"dataset": "mnist-5k", "model": "lenet", "roles": "boosted:3"}
    nodes = app_nodes(run_config, 5)
    nodes[7004] = nan_node(4)
    grid = FakeGrid(nodes)

    with caplog.at_level(logging.INFO):
        namespace["app"](grid, server_context({}))

    assert "rejected update from client 4" in caplog.text and "non-finite" in caplog.text
    dropped = re.findall(r"round (\d): layered dropped client 3", caplog.text)
    assert dropped == ["1", "2", "3"]
    # the global model the server sent in round 3 (after two aggregations) against the one of round 1
    config = RunConfig.from_run_config(run_config)
    bundle = load_bundle(config)
    test = server_data(config, bundle)["test"]
    model = new_model(config, bundle)
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    accuracy = []
    for message in (train[0], train[-1]):
        weights = message.content.array_records["arrays"].to_numpy_ndarrays()
        assert all(np.isfinite(w).all() for w in weights)
        set_weights(model, weights)
        accuracy.append(evaluate(model, test.x, test.y, num_classes=10).accuracy)
    assert accuracy[0] < 0.2 and accuracy[1] > 0.5, accuracy


def test_the_new_strategy_example_learns_through_the_fedsec_server_app(tmp_path):
    from strategies import STRATEGIES

    if "clipped-fedavg" not in STRATEGIES:
        exec(compile(python_block("class ClippedFedAvg"), "README.md", "exec"), {})
    config = {
        "dataset": "mnist-5k",
        "model": "lenet",
        "strategy": "clipped-fedavg",
        "num-server-rounds": 3,
        "node-wait": 0.2,
        "local-epochs": 1,
        "out-dir": str(tmp_path),
    }
    server_app.app(FakeGrid(app_nodes(config, 3)), server_context(config))
    rounds = read_metrics(tmp_path)
    assert read_summary(tmp_path)["config"]["strategy"] == "clipped-fedavg"
    assert rounds[0]["accuracy"] < 0.2 and rounds[-1]["accuracy"] > 0.8


def recipe_commands() -> list[list[str]]:
    """The real-device recipe's commands, for SERVER = this machine, on free ports."""
    (block,) = [b for b in blocks("bash") if "flower-superlink" in b]
    port = str(free_port())
    commands = []
    for line in block.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        line = line.replace("SERVER", "127.0.0.1").replace("8000", port)
        commands.append(
            shlex.split(line, posix=True) if not line.startswith("printf") else ["sh", "-c", line]
        )
    return commands


@pytest.mark.slow
@pytest.mark.extended
def test_the_real_device_recipe_runs_on_loopback(tmp_path):
    superlink, supernode, federation, run = recipe_commands()
    assert (
        superlink[0] == "flower-superlink"
        and supernode[0] == "flower-supernode"
        and run[:2] == ["flwr", "run"]
    )
    tag = uuid.uuid4().hex
    env = {
        **os.environ,
        "FLWR_HOME": str(tmp_path / "home"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        TAG_VARIABLE: tag,
    }
    (tmp_path / "home").mkdir()
    out = tmp_path / "records"
    logs = open(tmp_path / "processes.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        subprocess.Popen(superlink, env=env, stdout=logs, stderr=subprocess.STDOUT)
        time.sleep(3)
        for partition in range(2):
            node = [arg.replace("partition-id=0", f"partition-id={partition}") for arg in supernode]
            node += ["--port", str(free_port())]  # two SuperNodes on one machine need their own ports
            subprocess.Popen(node, env=env, stdout=logs, stderr=subprocess.STDOUT)
        subprocess.run(federation, env=env, check=True, timeout=30)
        run = [
            arg.replace("/srv/fedsec/runs/devices", str(out)).replace(
                "num-clients=2", "num-clients=2 num-server-rounds=2"
            )
            for arg in run
        ]
        completed = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        kill_tagged(tag)
        logs.close()
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = read_summary(out)
    assert summary["status"] == "completed" and summary["config"]["num-clients"] == 2
    assert [r["round"] for r in read_metrics(out)] == [0, 1, 2]
    assert summary["final"]["accuracy"] > 0.7
