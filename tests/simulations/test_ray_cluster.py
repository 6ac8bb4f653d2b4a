"""Runs that share one Ray: a session's own head node, and a cluster the user started (``--ray-address``).

The slow tests start real Ray head nodes (``ray start --head``) with short private temp dirs (Ray's
socket paths must fit in 107 bytes) and stop them afterwards.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedsec.errors import FedsecError
from simulations import cli, launcher, processes
from simulations.flower_session import ray_cluster_answers
from simulations.launcher import simulation_session
from simulations.processes import TAG_FILE, LaunchError, tagged_pids

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def test_one_run_starts_its_own_ray_several_share_a_head_and_an_address_is_used_as_given(
    monkeypatch, tmp_path
):
    asked: list[dict[str, object]] = []

    class Session:
        def __init__(self, logs, **kwargs):
            asked.append({"logs": logs, **kwargs})

        def __enter__(self):
            return "session"

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(launcher, "simulation_session", Session)
    federation = cli._federation  # the choice the run command makes
    with federation(argparse.Namespace(ray_address=None), tmp_path, runs=1) as session:
        assert session is None
    with federation(argparse.Namespace(ray_address=None), tmp_path, runs=3) as session:
        assert session == "session"
    with federation(argparse.Namespace(ray_address="10.0.0.1:6379"), tmp_path, runs=1) as session:
        assert session == "session"
    assert asked == [
        {"logs": tmp_path / "logs", "ray_address": "", "ray_head": True},
        {"logs": tmp_path / "logs", "ray_address": "10.0.0.1:6379", "ray_head": False},
    ]


def test_an_address_where_no_ray_answers_is_refused_before_anything_starts(tmp_path):
    refused = pytest.raises(LaunchError, match=r"no Ray cluster answers at 127\.0\.0\.1:9; start one with")
    with refused, simulation_session(tmp_path, ray_address="127.0.0.1:9"):
        pass
    assert not (tmp_path / "superlink.log").exists()
    both = pytest.raises(ValueError, match="ray_address or ray_head, not both")
    with both, simulation_session(tmp_path, ray_address="127.0.0.1:9", ray_head=True):
        pass
    assert issubclass(LaunchError, FedsecError)


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, Path]]:
    """A Ray head node as a user starts one (``ray start --head``); its address and temp dir."""
    with tempfile.TemporaryDirectory(prefix="rc", dir="/tmp") as temp:
        port = processes.free_port()
        env = {**os.environ, "RAY_TMPDIR": temp}
        start = [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp}/ray",
        ]
        started = subprocess.run(
            [*start, "--include-dashboard=false", "--disable-usage-stats"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        try:
            yield f"127.0.0.1:{port}", Path(temp) / "ray"
        finally:
            # not `ray stop`: it stops every Ray cluster of the user on this machine, other runs' included
            assert stop_cluster_under(f"{temp}/ray") == []


def _pids_under(directory: str) -> list[int]:
    """Processes whose command line names ``directory`` (a Ray cluster's temp dir: its GCS, raylet,
    monitors and workers all do)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue  # exited meanwhile
            if directory.encode() in command:
                pids.append(int(entry.name))
    return pids


def stop_cluster_under(directory: str, *, grace: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL, the processes of the Ray cluster under ``directory``; the ones left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids_under(directory):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _pids_under(directory) and time.monotonic() < deadline:
            time.sleep(0.2)
    return _pids_under(directory)


@pytest.mark.slow
@pytest.mark.extended
def test_a_sweep_on_a_users_ray_cluster_runs_every_client_there_with_one_superlink(tmp_path, ray_cluster):
    address, ray_temp = ray_cluster
    out = tmp_path / "sweep"
    run = ["run", "quickstart", "--clients", "2", "--rounds", "1", "--set", "sweep=seed=1,2"]
    completed = subprocess.run(
        [sys.executable, "-m", "simulations.cli", *run, "--ray-address", address, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.stdout.count("finished:completed") == 2
    runs = sorted(p for p in out.iterdir() if (p / "summary.json").is_file())
    assert [p.name for p in runs] == ["seed=1", "seed=2"]
    for run in runs:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["round"] for r in records] == [0, 1] and records[1]["received"] == 2
        assert (run / "logs" / "run.log").is_file() and not (run / "logs" / "superlink.log").exists()
    # one SuperLink for both runs, and no Ray of its own: the clients ran as actors of the user's cluster,
    # one Ray job per run
    assert (out / "logs" / "superlink.log").is_file() and not (out / "logs" / "ray-head.log").exists()
    actors = [
        path.name
        for path in ray_temp.glob("session_*/logs/worker-*.out")
        if ":actor_name:ClientAppActor" in path.read_text(errors="replace")
    ]
    jobs = {name.split("-")[2] for name in actors}
    assert len(actors) >= 2 and len(jobs) == 2
    tag = (out / "logs" / TAG_FILE).read_text().strip()
    assert tagged_pids(tag) == []
    assert ray_cluster_answers(address)  # the user's cluster outlives the runs
