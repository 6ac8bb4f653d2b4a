"""Run fedsec through Flower's own engines: Ray simulation, or SuperLink + SuperNodes.

Both paths start their own ``flower-superlink`` on a free loopback port with a
private ``FLWR_HOME`` (so a run never touches the user's Flower config), submit
the app with ``flwr run``, wait for the run to reach ``finished:*`` while
following ``metrics.jsonl`` for progress, fetch the run's log into the output
directory, check that the run completed, and stop every process they started —
including Ray's — on the way out, also when interrupted.

Every process started here carries ``FEDSEC_RUN_TAG=<uuid>`` in its environment,
which Ray's and Flower's child processes inherit; cleanup kills whatever still
carries the tag, so nothing is left behind even if a child detached itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsec.config import RunConfig
from fedsec.errors import FedsecError

logger = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent.parent
TAG_VARIABLE = "FEDSEC_RUN_TAG"
#: File in a run's log directory holding the tag its processes carry.
TAG_FILE = "run-tag"
SUPERLINK_START_TIMEOUT = 60.0
#: Seconds a Ray head node started by ``ray start --head`` may take to answer ``ray status``.
RAY_START_TIMEOUT = 90.0
#: Process name of the Ray head node a session starts for a persistent federation.
RAY_HEAD = "ray-head"
#: Seconds between run-status queries while a run is going (progress comes from metrics.jsonl).
STATUS_INTERVAL = 30.0
#: Seconds the launcher waits for Flower to end a run after the ServerApp wrote its summary (Flower's
#: simulation engine otherwise waits for every client still running, however long it hangs).
FINISH_GRACE = 10.0
#: Name of the SuperLink process in a session (its log is ``superlink.log``).
SUPERLINK = "superlink"
#: Default limit on one run's wall time, start-up included (``fedsec run --timeout``).
RUN_TIMEOUT = 6 * 3600.0


class LaunchError(FedsecError):
    """A Flower process could not be started, or the run did not complete."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
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


@dataclass
class RunOutcome:
    """What a finished run reports back to the CLI."""

    run_id: str
    status: str
    out_dir: Path
    log_file: Path
    seconds: float
    startup_seconds: float


@dataclass
class FlowerSession:
    """A private Flower home, a SuperLink, and any SuperNodes, all stopped on exit.

    Parameters
    ----------
    simulation
        Start the SuperLink with ``--simulation`` (Ray engine) or for deployment.
    log_dir
        Where the processes' logs go.
    """

    simulation: bool
    log_dir: Path
    certificates: Path | None = None
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: The private ``FLWR_HOME``; made in ``__enter__`` (and removed in :meth:`stop`) unless given.
    home: Path | None = None
    port: int = field(default_factory=free_port)
    #: Address of the Ray cluster the simulation runs on (``RAY_ADDRESS``); empty: Flower starts its own.
    ray_address: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: Name of each started process (``superlink``, ``supernode-0``, …), by PID.
    names: dict[int, str] = field(default_factory=dict)
    _own_home: bool = False
    _stopped: bool = False

    @property
    def env(self) -> dict[str, str]:
        env = flower_environment(self.private_home, self.tag)
        # Flower's Ray backend calls a bare ray.init(), which attaches to RAY_ADDRESS or else to the
        # cluster named in /tmp/ray/ray_current_cluster: any `ray start` on this machine, even one long
        # dead (ray.init then waits forever). "local" makes it start a Ray of its own.
        env["RAY_ADDRESS"] = self.ray_address or "local"
        return env

    @property
    def private_home(self) -> Path:
        if self.home is None:
            raise LaunchError("the Flower session has not started (use it as a context manager)")
        return self.home

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FlowerSession:
        try:
            if self.home is None:
                self.home = Path(tempfile.mkdtemp(prefix="fedsec-flwr-home-"))
                self._own_home = True
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / TAG_FILE).write_text(self.tag + "\n")
            if self.certificates is None:
                security = "insecure = true\n"
            else:
                security = f'root-certificates = "{self.certificates / "ca.crt"}"\n'
            federation = f'[superlink.fedsec]\naddress = "{self.address}"\n{security}'
            (self.home / "config.toml").write_text(f'[superlink]\ndefault = "fedsec"\n\n{federation}')
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.stop(graceful=exc_type is None)

    def spawn(
        self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a Flower process (environment :attr:`env` unless given) logging to ``log_dir/name.log``."""
        log = (self.log_dir / f"{name}.log").open("ab")  # a resumed run adds to the interrupted run's logs
        process = subprocess.Popen(
            list(args),
            env=self.env if env is None else env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        self.names[process.pid] = name
        return process

    def exited(self) -> list[str]:
        """Names of the started processes that have exited."""
        return [self.names.get(p.pid, str(p.args)) for p in self.processes if p.poll() is not None]

    def start_ray_head(self, *, num_cpus: int | None = None) -> str:
        """Start a Ray head node (``ray start --head --block``) for this session; return its address.

        Every simulation run of the session then attaches to it (Flower's Ray backend calls
        ``ray.init()``, which reads ``RAY_ADDRESS``), so a sweep starts Ray once. Call it before
        :meth:`start_superlink`: the SuperLink passes its environment to the simulations it starts.
        The head node carries the session's tag and is stopped with the session.
        """
        if any(self.names.get(p.pid) == SUPERLINK for p in self.processes):
            raise LaunchError("start the Ray head node before the SuperLink (it inherits RAY_ADDRESS)")
        port = free_port()
        args = [
            _bin("ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.private_home / 'ray'}",
        ]
        if num_cpus is not None:
            args.append(f"--num-cpus={num_cpus}")
        process = self.spawn(RAY_HEAD, args, env={k: v for k, v in self.env.items() if k != "RAY_ADDRESS"})
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + RAY_START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = self.log_dir / f"{RAY_HEAD}.log"
                raise LaunchError(f"`ray start --head` exited with code {process.returncode}; see {log}")
            if ray_cluster_answers(address, self.env):
                self.ray_address = address
                logger.info("Ray head node at %s", address)
                return address
            time.sleep(0.5)
        raise LaunchError(f"the Ray head node did not answer within {RAY_START_TIMEOUT:.0f}s")

    def start_superlink(self, extra: Sequence[str] = ()) -> None:
        """Start the SuperLink and wait until its HTTP API answers."""
        args = [
            _bin("flower-superlink"),
            *self.tls_args("superlink"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
            *extra,
        ]
        if self.simulation:
            args += ["--simulation", "--isolation", "subprocess"]
        process = self.spawn(SUPERLINK, args)
        deadline = time.monotonic() + SUPERLINK_START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = self.log_dir / "superlink.log"
                raise LaunchError(f"flower-superlink exited with code {process.returncode}; see {log}")
            if _healthy(self.port, self.certificates):
                return
            time.sleep(0.2)
        raise LaunchError(f"flower-superlink did not answer within {SUPERLINK_START_TIMEOUT:.0f}s")

    def tls_args(self, role: str) -> list[str]:
        """``--insecure``, or the TLS flags for ``role`` ("superlink" or "supernode")."""
        if self.certificates is None:
            return ["--insecure"]
        certs = self.certificates
        if role == "superlink":
            return [
                "--ssl-ca-certfile",
                str(certs / "ca.crt"),
                "--ssl-certfile",
                str(certs / "server.pem"),
                "--ssl-keyfile",
                str(certs / "server.key"),
            ]
        return ["--root-certificates", str(certs / "ca.crt")]

    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        """Run a ``flwr`` CLI command against this session's SuperLink; return stdout.

        It runs in this session's private Flower home, never in the user's working
        directory: there ``flwr ls fedsec`` would read a ``fedsec/`` folder with a
        ``pyproject.toml`` (the parent of a clone) as an app path.
        """
        completed = subprocess.run(
            [_bin("flwr"), *args],
            env=self.env,
            cwd=self.private_home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            message = (completed.stderr or completed.stdout).strip().splitlines()
            raise LaunchError(f"`flwr {args[0]}` failed: {message[-1] if message else completed.returncode}")
        return completed.stdout

    def flwr_json(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        """``flwr ARGS --format json`` as a dict; ``"success": false`` is a :class:`LaunchError`."""
        text = self.flwr(*args, "--format", "json", timeout=timeout)
        try:
            reply = json.loads(text)
        except json.JSONDecodeError:
            raise LaunchError(f"`flwr {args[0]}` did not answer in JSON: {text.strip()[:200]!r}") from None
        if not isinstance(reply, dict) or not reply.get("success", False):
            detail = reply.get("error-message") if isinstance(reply, dict) else None
            raise LaunchError(f"`flwr {args[0]}` failed: {detail or reply}")
        return reply

    def stop(self, *, graceful: bool = True) -> None:
        """Stop every process this session started (and their descendants); remove the private home.

        Idempotent, and not interruptible: SIGINT and SIGTERM are held back while it runs (a second
        Ctrl-C during cleanup would otherwise leave processes behind) and delivered when it is done.
        After a finished run the processes get SIGTERM and time to exit; otherwise (an interrupt, an
        error) every process of the session is frozen at once, so that an interrupted run writes
        nothing more, and then killed.
        """
        if self._stopped:
            return
        held = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        interrupted = False
        try:
            if not graceful:
                freeze_tagged(self.tag)
            self._stop(graceful=graceful)
            self._stopped = True
        finally:
            while signal.sigtimedwait(held, 0) is not None:  # signals that came during cleanup
                interrupted = True
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if interrupted and graceful:
            raise KeyboardInterrupt  # the run had finished; the user still asked to stop

    def _stop(self, *, graceful: bool) -> None:
        for process in self.processes:
            if process.poll() is None:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
        left = kill_tagged(self.tag, grace=8.0 if graceful else 0.0)
        if left:
            logger.info("stopped %s leftover Flower/Ray processes", left)
        if self._own_home and self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)


def ray_cluster_answers(address: str, env: dict[str, str] | None = None) -> bool:
    """Whether ``ray status --address ADDRESS`` reaches a running Ray cluster.

    A closed port answers at once (``ray status`` itself retries for about 40 s).
    """
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError):
        return False
    try:
        completed = subprocess.run(
            [_bin("ray"), "status", f"--address={address}"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return completed.returncode == 0


def _healthy(port: int, certificates: Path | None = None) -> bool:
    """Whether the SuperLink this session started answers its health endpoint (loopback only, no download)."""
    scheme, context = "http", None
    if certificates is not None:
        scheme, context = "https", ssl.create_default_context(cafile=str(certificates / "ca.crt"))
    try:
        url = f"{scheme}://127.0.0.1:{port}/health"
        with urllib.request.urlopen(url, timeout=0.5, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def run_config_text(config: RunConfig) -> str:
    """``config`` as the TOML override text ``flwr run --run-config`` reads."""
    import tomli_w

    return tomli_w.dumps(config.to_run_config())


def write_run_config(config: RunConfig, path: Path) -> Path:
    """Write ``config`` as the TOML override file ``flwr run --run-config`` reads."""
    path.write_text(run_config_text(config))
    return path


def submit(
    session: FlowerSession,
    app_dir: Path,
    run_config: Path | str,
    *,
    federation_config: str | None = None,
) -> str:
    """``flwr run APP_DIR fedsec --run-config RUN_CONFIG``; return the run id.

    ``run_config`` is a TOML file or Flower's ``"key=value ..."`` text.
    """
    args = ["run", str(app_dir), "fedsec", "--run-config", str(run_config)]
    if federation_config:
        args += ["--federation-config", federation_config]
    reply = session.flwr_json(*args)
    run_id = str(reply.get("run-id") or "")
    if not run_id:
        raise LaunchError(f"flwr run did not start a run: {reply}")
    logger.info("submitted run %s", run_id)
    return run_id


def wait_for_run(
    session: FlowerSession,
    run_id: str,
    out_dir: Path,
    *,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_lost: Callable[[str], None] | None = None,
    poll: float = 1.0,
    timeout: float = RUN_TIMEOUT,
) -> RunOutcome:
    """Follow ``out_dir/metrics.jsonl`` until run ``run_id`` is ``finished:*``; fetch its log.

    A SuperNode that exits is reported (``on_lost``) and the run goes on: its clients
    count as failures in the records. Only the SuperLink exiting ends the wait.

    Raises
    ------
    LaunchError
        If the run does not finish within ``timeout`` seconds, a Flower process
        dies, or the run ends other than ``finished:completed`` (the message
        carries the run's last exception line).
    """
    started = time.monotonic()
    seen = 0
    status = ""
    lost: set[str] = set()
    summary_seen: float | None = None
    first_round_at: float | None = None
    last_check = float("-inf")
    while True:
        # `flwr ls` costs a CPU-second per call: ask only every STATUS_INTERVAL s, or at once when
        # the ServerApp has written its summary (the run is about to finish).
        summary_written = (out_dir / "summary.json").exists()
        if summary_written or time.monotonic() - last_check >= STATUS_INTERVAL:
            status = _run_status(session, run_id)
            last_check = time.monotonic()
        records = _read_new_rounds(out_dir, seen)
        for record in records:
            if first_round_at is None:
                first_round_at = time.monotonic()
            if on_round is not None:
                on_round(record)
        seen += len(records)
        if status.startswith("finished"):
            break
        if summary_written:
            summary_seen = summary_seen or time.monotonic()
            if time.monotonic() - summary_seen > FINISH_GRACE:
                # The ServerApp is done; Flower's engine still waits for clients that missed their round
                # (a hung client). The records are final: end the run with the ServerApp's own status.
                status = _summary_status(out_dir)
                logger.warning("run %s: ServerApp done, engine still busy; stopping it (%s)", run_id, status)
                _stop_run(session, run_id)  # a session that runs more (a sweep) must not keep it busy
                break
        dead = session.exited()
        if SUPERLINK in dead:
            raise LaunchError(f"the SuperLink exited during the run; see {session.log_dir / 'superlink.log'}")
        for name in sorted(set(dead) - lost):
            lost.add(name)  # a SuperNode that dies is a client failure; the run goes on with the others
            logger.warning("%s exited during run %s; the run continues with the other nodes", name, run_id)
            if on_lost is not None:
                on_lost(name)
        if time.monotonic() - started > timeout:
            raise LaunchError(
                f"run {run_id} did not finish within {timeout:.0f}s (last status {status or 'unknown'!r}); "
                "raise it with --timeout"
            )
        time.sleep(poll)
    for record in _read_new_rounds(out_dir, seen):
        if on_round is not None:
            on_round(record)
    log_file = out_dir / "logs" / "run.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        log_file.write_text(session.flwr("log", run_id, "fedsec", "--show", timeout=60))
    except (LaunchError, subprocess.TimeoutExpired) as error:
        log_file.write_text(f"could not fetch the run's log: {error}\n")
    seconds = time.monotonic() - started
    startup = (first_round_at - started) if first_round_at is not None else seconds
    outcome = RunOutcome(run_id, status, out_dir, log_file, seconds, startup)
    if status != "finished:completed":
        cause = last_exception(log_file.read_text())
        raise LaunchError(f"run {run_id} ended with status {status}{cause}; see {log_file}")
    return outcome


def submit_and_wait(
    session: FlowerSession,
    config: RunConfig,
    *,
    federation_config: str | None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_lost: Callable[[str], None] | None = None,
    poll: float = 1.0,
    timeout: float = RUN_TIMEOUT,
    app_dir: Path = APP_DIR,
) -> RunOutcome:
    """Submit ``config`` to the app in ``app_dir`` and wait for it (:func:`submit`, :func:`wait_for_run`)."""
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_config = write_run_config(config, out_dir / "run_config.toml")
    run_id = submit(session, app_dir, run_config, federation_config=federation_config)
    return wait_for_run(
        session, run_id, out_dir, on_round=on_round, on_lost=on_lost, poll=poll, timeout=timeout
    )


def last_exception(log: str) -> str:
    """``" (ValueError: ...)"`` for the last exception line in a run log, or ``""``."""
    matches = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", log, flags=re.MULTILINE)
    return f" ({matches[-1][0]}: {matches[-1][1].strip()})" if matches else ""


def _summary_status(out_dir: Path) -> str:
    """``finished:<status>`` from the ServerApp's ``summary.json``."""
    try:
        status = json.loads((out_dir / "summary.json").read_text()).get("status", "completed")
    except (OSError, json.JSONDecodeError):
        status = "failed"
    return f"finished:{status}"


def _stop_run(session: FlowerSession, run_id: str) -> None:
    """``flwr stop RUN_ID``: Flower ends the run's simulation (best effort; logged when it fails)."""
    try:
        session.flwr("stop", run_id, "fedsec", timeout=60)
    except (LaunchError, subprocess.TimeoutExpired) as error:
        logger.warning("could not stop run %s: %s", run_id, error)


def _run_status(session: FlowerSession, run_id: str) -> str:
    runs = session.flwr_json("ls", "fedsec", "--run-id", run_id).get("runs") or []
    return str(runs[0].get("status", "")) if runs else ""


def _read_new_rounds(out_dir: Path, seen: int) -> list[dict[str, Any]]:
    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    complete = []
    for line in lines[seen:]:
        try:
            complete.append(json.loads(line))
        except json.JSONDecodeError:  # a line still being written
            break
    return complete


def simulation_federation(num_clients: int, num_gpus: float = 0.0) -> str:
    """``--federation-config`` for ``num_clients`` simulated SuperNodes, one CPU and ``num_gpus`` GPUs each.

    Flower passes ``client-resources-num-gpus`` to Ray as each client actor's
    ``num_gpus`` (a fraction shares a GPU); Ray hides the GPUs from an actor that
    asks for none.  ``num_gpus`` > 0 on a machine without a GPU leaves Ray unable
    to place any client, so :func:`simulations.validate.validate` refuses it first.
    """
    if num_gpus < 0:
        raise ValueError(f"num_gpus must be >= 0, got {num_gpus!r}")
    resources = f"client-resources-num-cpus=1 client-resources-num-gpus={num_gpus:g}"
    return f"num-supernodes={num_clients} {resources}"


@contextmanager
def simulation_session(
    log_dir: Path, *, ray_address: str = "", ray_head: bool = False
) -> Iterator[FlowerSession]:
    """A simulation SuperLink that serves one or more runs (a persistent federation), stopped on exit.

    ``ray_head``: the session starts its own Ray head node first, so that every run attaches to
    it instead of starting Ray (a sweep pays Ray's start-up once). ``ray_address``: the runs
    attach to that existing cluster (``ray start --head`` on one machine, ``ray start
    --address=...`` on the others). Neither: each run's simulation starts Ray itself.
    """
    if ray_address and ray_head:
        raise ValueError("give ray_address or ray_head, not both")
    if ray_address and not ray_cluster_answers(ray_address):
        raise LaunchError(
            f"no Ray cluster answers at {ray_address}; start one with `ray start --head` "
            "and give the address it prints (docs/deployment.md, 'On a Ray cluster')"
        )
    with FlowerSession(simulation=True, log_dir=log_dir, ray_address=ray_address) as session:
        if ray_head:
            session.start_ray_head()
        session.start_superlink()
        yield session


def run_simulation(
    config: RunConfig,
    *,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_lost: Callable[[str], None] | None = None,
    timeout: float = RUN_TIMEOUT,
    app_dir: Path = APP_DIR,
    session: FlowerSession | None = None,
) -> RunOutcome:
    """Run ``config`` (of the app in ``app_dir``) on Ray simulation, one SuperNode per client.

    In ``session`` (from :func:`simulation_session`) when given, else in a session of its own.
    """
    if session is None:
        with simulation_session(Path(config.out_dir) / "logs") as own:
            return run_simulation(
                config, on_round=on_round, on_lost=on_lost, timeout=timeout, app_dir=app_dir, session=own
            )
    federation = simulation_federation(config.num_clients, config.client_resources_num_gpus)
    return submit_and_wait(
        session,
        config,
        federation_config=federation,
        on_round=on_round,
        on_lost=on_lost,
        timeout=timeout,
        app_dir=app_dir,
    )


def check_certificates(certificates: Path, *, nodes: int, authenticate: bool) -> None:
    """Raise naming every file ``scripts/make_certificates.sh`` makes that is missing."""
    needed = ["ca.crt", "server.pem", "server.key"]
    if authenticate:
        needed += [f"supernode-{i}{suffix}" for i in range(nodes) for suffix in ("", ".pub")]
    missing = [name for name in needed if not (certificates / name).is_file()]
    if missing:
        raise LaunchError(
            f"{certificates} lacks {', '.join(missing)}; make them with "
            f"`bash scripts/make_certificates.sh {certificates} {nodes}`"
        )


def run_deployment(
    config: RunConfig,
    *,
    nodes: int,
    certificates: Path | None = None,
    authenticate: bool = False,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_lost: Callable[[str], None] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> RunOutcome:
    """Run ``config`` on Flower's deployment engine: a SuperLink and ``nodes`` SuperNodes on loopback.

    With ``certificates`` (a directory made by ``scripts/make_certificates.sh``) every
    connection uses TLS; with ``authenticate`` as well, the SuperLink admits only
    SuperNodes whose public keys were registered with ``flwr supernode register``.
    """
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    if authenticate and certificates is None:
        raise LaunchError("node authentication needs TLS: give the certificates directory too")
    if certificates is not None:
        certificates = certificates.resolve()
        check_certificates(certificates, nodes=nodes, authenticate=authenticate)
    out_dir = Path(config.out_dir)
    with FlowerSession(simulation=False, log_dir=out_dir / "logs", certificates=certificates) as session:
        session.start_superlink(["--enable-supernode-auth"] if authenticate else [])
        for index in range(nodes):
            auth: list[str] = []
            if authenticate and certificates is not None:
                key = certificates / f"supernode-{index}"
                session.flwr("supernode", "register", f"{key}.pub", "fedsec")
                auth = ["--auth-supernode-private-key", str(key)]  # Flower derives the public key from it
            session.spawn(
                f"supernode-{index}",
                [
                    _bin("flower-supernode"),
                    *session.tls_args("supernode"),
                    *auth,
                    "--superlink",
                    session.address,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    f"partition-id={index} num-partitions={nodes}",
                ],
            )
        return submit_and_wait(
            session, config, federation_config=None, on_round=on_round, on_lost=on_lost, timeout=timeout
        )
