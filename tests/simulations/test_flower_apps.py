"""fedsec the way Flower users run it, through Flower's Ray simulation engine (slow: tens of seconds each).

* ``flwr run`` of fedsec's app with Flower's default local federation (2 nodes) and a fresh ``FLWR_HOME``;
* a Flower App that is not fedsec's, whose ServerApp wraps Flower's own FedAvg in fedsec's guard and
  layered defense, with a boosted attacker and a NaN client among its 4 nodes;
* ``fedsec run`` with a plugin module of the user's own, from a working directory that holds a
  ``fedsec/pyproject.toml`` decoy (which made ``flwr ls fedsec`` read an app path and poll forever).
"""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from fedsec.results import read_metrics, read_summary
from simulations.flower_session import FlowerSession
from simulations.launcher import simulation_federation, submit, wait_for_run
from simulations.processes import TAG_VARIABLE, kill_tagged, tagged_pids

ROOT = Path(__file__).resolve().parents[2]
FOREIGN_APP = Path(__file__).resolve().parent / "foreign_app"

pytestmark = pytest.mark.slow


def offline_env(home: Path, tag: str) -> dict[str, str]:
    """What the README tells a user to export before ``flwr run``, plus a tag to find the processes."""
    return {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_ADDRESS": "local",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        TAG_VARIABLE: tag,
    }


def test_flwr_run_of_the_app_with_flowers_default_federation_completes_and_says_where_records_are(tmp_path):
    tag = uuid.uuid4().hex
    env = offline_env(tmp_path / "flwr-home", tag)
    try:
        completed = subprocess.run(
            [str(Path(sys.executable).parent / "flwr"), "run", str(ROOT), "--stream"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        kill_tagged(tag)  # `flwr run` leaves its local SuperLink running
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert "fedsec: scenario quickstart on 2 nodes; records →" in output
    line = next(line for line in output.splitlines() if "fedsec: final accuracy" in line)
    out = Path(line.rsplit("records in ", 1)[1].strip())
    assert out.parent == tmp_path / "runs"  # under the directory `flwr run` was started in
    summary = read_summary(out)
    assert summary["status"] == "completed" and summary["config"]["num-clients"] == 2
    assert summary["final"]["accuracy"] > 0.8
    assert [r["round"] for r in read_metrics(out)] == list(range(6))
    assert "fedsec:     5" in output  # the per-round table
    assert tagged_pids(tag) == []


def test_a_foreign_flower_app_wraps_flowers_fedavg_in_fedsecs_guard_and_layered_defense(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(FOREIGN_APP, app)
    out = tmp_path / "records"
    with FlowerSession(simulation=True, log_dir=tmp_path / "logs") as session:
        session.start_superlink()
        run_id = submit(session, app, f"out='{out}'", federation_config=simulation_federation(4))
        wait_for_run(session, run_id, out, timeout=600)
    rounds = read_metrics(out)[1:]
    assert len(rounds) == 3
    assert all("non-finite" in r["rejected"]["3"] for r in rounds)  # the guard rejects the NaN update
    # the booster never gets in: the layered defense drops it, or (once honest updates have become small)
    # the guard already rejects it as 100× their median norm
    for r in rounds:
        if "2" in r["rejected"]:
            assert "update norm" in r["rejected"]["2"] and r["kept"]["layered"] == ["0", "1"]
        else:
            assert "2" in r["dropped"] and r["kept"]["layered"] == ["0", "1"]
            assert r["detection"]["layered"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 2}
    assert any("2" in r.get("dropped", {}) for r in rounds)  # the layered defense itself acted
    final = np.array(json.loads((out / "done.json").read_text())["final"])
    assert np.isfinite(final).all()
    assert np.linalg.norm(final - [1.0, -2.0, 0.5, 3.0]) < 0.5 * np.linalg.norm([1.0, -2.0, 0.5, 3.0])


PLUGIN = '''
"""A user's own model, registered from outside fedsec."""
from torch import nn

from fedsec.models import MODELS


def wide_mlp(*, input_shape, num_classes):
    channels, height, width = input_shape
    hidden = nn.Linear(channels * height * width, 64)
    return nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), nn.Linear(64, num_classes))


MODELS.register("wide-mlp", wide_mlp)
'''


@pytest.mark.extended  # the plugins key is crossed in process (tests/examples/test_extension.py)
def test_fedsec_run_with_a_users_plugin_from_a_directory_holding_a_fedsec_app_decoy(tmp_path):
    (tmp_path / "fedsec").mkdir()
    (tmp_path / "fedsec" / "pyproject.toml").write_text("[project]\nname = 'decoy'\n")
    (tmp_path / "my_models.py").write_text(PLUGIN)
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "run", "quickstart", "--clients", "2", "--rounds", "2",
         "--set", "plugins=my_models", "--set", "model=wide-mlp", "--out", str(out), "--timeout", "300"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=400,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = read_summary(out)
    assert summary["config"]["model"] == "wide-mlp" and summary["final"]["accuracy"] > 0.7


# crossed in process: test_server_app.test_a_run_whose_every_client_fails_ends_failed_with_the_first_reason
@pytest.mark.extended
def test_a_run_in_which_every_client_fails_exits_non_zero_with_the_reason(tmp_path):
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "run", "quickstart", "--clients", "2", "--rounds", "2",
         "--set", "plugins=tests.fault_roles", "--set", "roles=crash:0-1", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=400,
    )  # fmt: skip
    assert completed.returncode == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "finished:failed" in completed.stderr and "MemoryError: client" in completed.stderr
    summary = read_summary(out)
    assert summary["status"] == "failed" and "no round aggregated an update" in summary["reason"]
    assert all(r["failures"] == 2 for r in read_metrics(out)[1:])
