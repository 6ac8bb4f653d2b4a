"""End-to-end runs through Flower's engines (slow: tens of seconds each).

``fedsec run`` on the Ray simulation engine: seeded sampling, FDA³ and the colluders'
perfect-knowledge hook, each checked for completed status, learning, the record files, and no
Flower or Ray process left behind. Deployments (TLS, node authentication, a real network
interface) are in ``test_network_deployment.py`` and ``test_faults.py``.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from simulations.processes import TAG_FILE, tagged_pids

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def leftover_processes(out: Path) -> list[int]:
    """Processes still carrying the run's tag (Flower, Ray and their children)."""
    tag = (out / "logs" / TAG_FILE).read_text().strip()
    return tagged_pids(tag)


def fedsec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "simulations.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def check_run(out: Path, completed: subprocess.CompletedProcess[str], rounds: int, clients: int) -> None:
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "finished:completed" in completed.stdout
    assert "final accuracy" in completed.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == list(range(rounds + 1))
    assert all(r["received"] == clients and r["rejected"] == {} for r in records[1:])
    assert records[-1]["accuracy"] > records[0]["accuracy"] + 0.4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == rounds and summary["final"]["accuracy"] == records[-1]["accuracy"]
    assert (out / "accuracy.png").stat().st_size > 1000
    assert f"report: {out / 'report.html'}" in " ".join(completed.stdout.split())
    assert "<polyline" in (out / "report.html").read_text()
    assert leftover_processes(out) == []


@pytest.mark.extended
def test_ray_run_samples_what_the_seeded_sampler_draws_with_one_attacker_per_round(tmp_path):
    from fedsec.config import RunConfig
    from strategies.sampling import SeededSampler
    from tests.strategies.test_sampling import grid_with, sampled_partitions

    out = tmp_path / "run"
    settings = ["fraction-fit=0.5", "roles=label-flip:4-5", "malicious-per-round=1"]
    sets = [arg for setting in settings for arg in ("--set", setting)]
    # A Ray cluster recorded by an old `ray start` that is gone: a bare ray.init() would attach to it
    # and wait forever. (A short private temp dir: Ray's socket paths must fit in 107 bytes.)
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as ray_tmp:
        Path(ray_tmp, "ray", "ray_current_cluster").parent.mkdir()
        Path(ray_tmp, "ray", "ray_current_cluster").write_text("127.0.0.1:9\n")
        env = {"RAY_TMPDIR": ray_tmp}
        run = ("run", "quickstart", "--clients", "6", "--rounds", "3", *sets, "--out", str(out))
        completed = fedsec(*run, env=env)
    check_run(out, completed, rounds=3, clients=3)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    sampled = [sorted(int(pid) for pid in r["update_stats"]) for r in records[1:]]

    # the same draws in process, from the same seed, whatever node ids Ray gave the clients
    seed = RunConfig.from_run_config({}).seed
    sampler = SeededSampler(seed=seed, fraction_train=0.5, malicious={"4", "5"}, malicious_per_round=1)
    assert sampled == sampled_partitions(grid_with({1000 + p: p for p in range(6)}), sampler, rounds=3)
    assert all(len(set(s) & {4, 5}) == 1 for s in sampled)


# FDA³'s rounds are crossed in process (tests/strategies/test_fda3.py, tests/clients/test_adversarial.py)
@pytest.mark.extended
def test_fda3_through_flower_improves_robust_accuracy_and_writes_its_table(tmp_path):
    out = tmp_path / "fda3"
    completed = fedsec(
        "run",
        "fda3-mnist",
        "--only",
        "paper",
        "--clients",
        "4",
        "--rounds",
        "8",
        "--set",
        "roles=fda3-device:0-3",
        "--set",
        "fda3-assign=even:fgsm+bim",
        "--set",
        "eval-attacks=fgsm,bim",
        "--set",
        "pretrain-epochs=2",
        "--set",
        "server-learning-rate=0.003",
        "--set",
        f"cache-dir={tmp_path / 'cache'}",
        "--out",
        str(out),
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    records = [json.loads(line) for line in (out / "paper" / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0]["robust"], records[-1]["robust"]
    # Adversarial training through Flower makes both trained attacks' examples less effective ...
    assert last["FGSM"] >= first["FGSM"] + 0.1 and last["BIM"] >= first["BIM"] + 0.1
    # ... at a cost in clean accuracy smaller than the robust gain: FGSM/BIM-only devices on their
    # own 450 images each, disjoint from the 2,000 the model was pre-trained on, with a short, fast
    # schedule, trade clean accuracy for robustness (here 0.90 → 0.73 against +0.27 / +0.32)
    robust_gain = (last["FGSM"] - first["FGSM"] + last["BIM"] - first["BIM"]) / 2
    assert first["Nature"] - last["Nature"] < robust_gain and last["Nature"] >= 0.6
    tables = json.loads((out / "paper" / "summary.json").read_text())["tables"]
    table = tables["FDA3 accuracy (Fig. 2/4)"]
    assert list(table) == [
        "None (white-box)",
        "FGSM+AdvTrain",  # 50 epochs over 100 pairs: 50 steps, and the one-step-per-round model beside it
        "FGSM+AdvTrain (8 steps)",
        "BIM+AdvTrain",
        "BIM+AdvTrain (8 steps)",
        "ALL+AdvTrain",
        "ALL+AdvTrain (8 steps)",
        "FL+AdvTrain",
        "FL+AdvTrain (white-box)",
    ]
    assert list(table["None (white-box)"]) == ["Nature", "FGSM", "BIM"]
    assert table["None (white-box)"] == first and table["FL+AdvTrain"] == last
    intervals = tables["FDA3 accuracy (Fig. 2/4) 95% CI"]
    assert (
        intervals["FL+AdvTrain"]["FGSM"]["n"] == 1000
        and intervals["FL+AdvTrain (white-box)"]["BIM"]["n"] == 100
    )
    assert leftover_processes(out / "paper") == []  # one run of the variants: its own session and logs


def test_colluders_with_the_pk_hook_and_detectors_through_flower(tmp_path):
    out = tmp_path / "mp"
    completed = fedsec(
        "run", "multiparty-mnist", "--only", "PK,SAnoDC", "--out", str(out), "--rounds", "3",
        "--set", "model=lenet", "--set", "attack-start-round=2",
        "--set", "calibration-rounds=1", "--set", "local-epochs=1",
    )  # fmt: skip

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == ["PK", "SAnoDC"]
    cosine = summary["tables"]["Cosine similarity per iteration (Table 2)"]
    assert set(cosine) == {"PK", "SAnoDC"} and set(cosine["PK"]) == {"2", "3"}
    for name, attackers in (("PK", {"8", "9"}), ("SAnoDC", {"9"})):
        records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert all(r["failures"] == 0 for r in records[1:])
        judged = records[2:]
        assert all(attackers <= set(r["update_stats"]) and "flagged_by" in r for r in judged)
        assert all(sum(r["detection"]["detectors"].values()) == 10 for r in judged)
        assert "targeted_accuracy" in records[-1]
        assert (out / name / "logs" / "run.log").is_file()
    # both runs shared one SuperLink and one Ray head (logs and process tag in OUT/logs), all stopped
    assert (out / "logs" / "ray-head.log").is_file() and not (out / "PK" / "logs" / "superlink.log").exists()
    assert leftover_processes(out) == []
    max_l2 = summary["tables"]["Max L2 distance per iteration (Table 3)"]
    assert max(max_l2["SAnoDC"].values()) > max(max_l2["PK"].values())
