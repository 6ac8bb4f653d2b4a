"""The launcher's and Flower session's ``flwr`` calls, with ``subprocess.run`` stubbed (no Flower process)."""

import json
from pathlib import Path

import pytest

from simulations import flower_session, launcher, processes
from simulations.flower_session import FlowerSession
from simulations.processes import LaunchError


class FakeCompleted:
    def __init__(self, stdout: str, returncode: int = 0) -> None:
        self.stdout, self.stderr, self.returncode = stdout, "", returncode


@pytest.fixture
def calls(monkeypatch):
    """Every ``subprocess.run`` of the Flower session, answered from the reply texts in ``calls[1]``."""
    record: list[dict] = []

    def run(args, **kwargs):
        record.append({"args": args, **kwargs})
        return FakeCompleted(replies.pop(0))

    replies: list[str] = []
    monkeypatch.setattr(flower_session.subprocess, "run", run)
    monkeypatch.setattr(flower_session, "console_script", lambda name: name)
    return record, replies


def test_flwr_runs_in_the_private_home_never_in_the_users_directory(tmp_path, calls):
    record, replies = calls
    replies.append(json.dumps({"success": True, "runs": [{"status": "running"}]}))
    session = FlowerSession(simulation=True, log_dir=tmp_path / "logs", home=tmp_path / "home")
    assert launcher._run_status(session, "7") == "running"
    assert record[0]["cwd"] == tmp_path / "home"
    assert record[0]["args"][:3] == ["flwr", "ls", "fedsec"]


def test_a_flwr_reply_without_success_is_an_error_not_an_empty_status(tmp_path, calls):
    _, replies = calls
    replies.append(json.dumps({"success": False, "error-message": "fedsec is an app path"}))
    session = FlowerSession(simulation=True, log_dir=tmp_path / "logs", home=tmp_path / "home")
    with pytest.raises(LaunchError, match="`flwr ls` failed: fedsec is an app path"):
        launcher._run_status(session, "7")
    replies.append("Traceback (most recent call last): ...")
    with pytest.raises(LaunchError, match="did not answer in JSON"):
        launcher._run_status(session, "7")


def test_waiting_for_a_run_has_an_overall_timeout(tmp_path, calls, monkeypatch):
    _, replies = calls
    replies.extend(json.dumps({"success": True, "runs": [{"status": "running"}]}) for _ in range(50))
    session = FlowerSession(simulation=True, log_dir=tmp_path / "logs", home=tmp_path / "home")
    monkeypatch.setattr(launcher, "STATUS_INTERVAL", 0.0)
    with pytest.raises(LaunchError, match="did not finish within 0s"):
        launcher.wait_for_run(session, "7", tmp_path, poll=0.01, timeout=0.05)


def test_every_flower_process_gets_the_app_and_the_working_directory_on_its_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = processes.flower_environment(tmp_path / "home", "tag")
    paths = env["PYTHONPATH"].split(":")
    assert paths[:2] == [str(processes.APP_DIR), str(Path.cwd())]
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1" and env[processes.TAG_VARIABLE] == "tag"


class SimulatedRun:
    """time.monotonic/time.sleep for the launcher: each 1 s sleep brings a round record until ``rounds``,
    then the ServerApp's summary."""

    def __init__(self, out: Path, rounds: int) -> None:
        self.now, self.out, self.rounds, self.written = 0.0, out, rounds, 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.written < self.rounds:
            with (self.out / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps({"round": self.written, "seconds": 1.0}) + "\n")
            self.written += 1
        else:
            (self.out / "summary.json").write_text("{}")


def test_while_rounds_keep_coming_flower_is_not_asked_for_the_status(tmp_path, calls, monkeypatch):
    record, replies = calls
    running = json.dumps({"success": True, "runs": [{"status": "running"}]})
    finished = json.dumps({"success": True, "runs": [{"status": "finished:completed"}]})
    replies.extend([running, finished, "the run's log"])
    clock = SimulatedRun(tmp_path, rounds=100)  # 100 s of rounds, a record every second
    monkeypatch.setattr(launcher, "time", clock)
    session = FlowerSession(simulation=True, log_dir=tmp_path / "logs", home=tmp_path / "home")
    seen = []
    outcome = launcher.wait_for_run(session, "7", tmp_path, on_round=seen.append, poll=1.0)
    asked = [call["args"][1] for call in record]
    assert asked == ["ls", "ls", "log"]  # at the start, then once the summary is written; none in between
    assert outcome.status == "finished:completed" and len(seen) == 100


def test_a_run_that_stops_reporting_rounds_is_asked_about_every_status_interval(tmp_path, calls, monkeypatch):
    record, replies = calls
    running = json.dumps({"success": True, "runs": [{"status": "running"}]})
    failed = json.dumps({"success": True, "runs": [{"status": "finished:failed"}]})
    replies.extend([running, running, running, failed, "Traceback ...\nValueError: boom"])
    clock = SimulatedRun(tmp_path, rounds=0)
    clock.sleep = lambda seconds: setattr(clock, "now", clock.now + seconds)  # no records, no summary
    monkeypatch.setattr(launcher, "time", clock)
    session = FlowerSession(simulation=True, log_dir=tmp_path / "logs", home=tmp_path / "home")
    with pytest.raises(LaunchError, match=r"finished:failed \(ValueError: boom\)"):
        launcher.wait_for_run(session, "7", tmp_path, poll=1.0)
    assert [call["args"][1] for call in record] == ["ls", "ls", "ls", "ls", "log"]
    assert clock.now == pytest.approx(3 * launcher.STATUS_INTERVAL)
