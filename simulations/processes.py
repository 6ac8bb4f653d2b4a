"""The processes fedsec starts for Flower and Ray: their environment, tag, ports and executables.

Every process started for a run carries ``FEDSEC_RUN_TAG=<uuid>`` in its environment,
which Ray's and Flower's child processes inherit; cleanup kills whatever still
carries the tag, so nothing is left behind even if a child detached itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path

from fedsec.errors import FedsecError

APP_DIR = Path(__file__).resolve().parent.parent
TAG_VARIABLE = "FEDSEC_RUN_TAG"
#: File in a run's log directory holding the tag its processes carry.
TAG_FILE = "run-tag"


class LaunchError(FedsecError):
    """A Flower process could not be started, or the run did not complete."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def console_script(name: str) -> str:
    """Path of a console script installed next to this interpreter (the venv's bin/)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise LaunchError(f"`{name}` not found; install fedsec's dependencies (make install)")
    return found


def flower_environment(home: Path, tag: str) -> dict[str, str]:
    """Environment for Flower processes: offline, private FLWR_HOME, tagged."""
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            # A client that asks Ray for no GPU (client-resources-num-gpus=0) sees none, so device=auto
            # puts it on the CPU; it never shares a GPU that Ray did not give it.
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1",
            "RAY_DEDUP_LOGS": "0",
            "PYTHONUNBUFFERED": "1",
            TAG_VARIABLE: tag,
        }
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # The app's packages, and plugin modules next to the user (working directory), must import in
    # every Flower process, wherever it runs.
    paths = (str(APP_DIR), str(Path.cwd()), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def tagged_pids(tag: str) -> list[int]:
    """PIDs of live processes whose environment carries ``FEDSEC_RUN_TAG=tag`` (Linux /proc)."""
    marker = f"{TAG_VARIABLE}={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def freeze_tagged(tag: str) -> int:
    """SIGSTOP every tagged process (they never run again: they are killed next); return the count."""
    pids = tagged_pids(tag)
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGSTOP)
    return len(pids)


def kill_tagged(tag: str, *, grace: float = 8.0) -> int:
    """SIGTERM every tagged process, then SIGKILL what is left after ``grace`` s; return the count.

    With ``grace`` 0 every tagged process is killed at once (frozen ones stay frozen until they die).
    """
    pids = tagged_pids(tag)
    if grace > 0:
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)  # a frozen process handles SIGTERM only once it runs again
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and tagged_pids(tag):
            time.sleep(0.2)
    for pid in tagged_pids(tag):
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and tagged_pids(tag):
        time.sleep(0.1)
    return len(pids)
