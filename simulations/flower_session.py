"""A Flower session: a private ``FLWR_HOME``, a SuperLink, any SuperNodes and a Ray head node.

:class:`FlowerSession` starts ``flower-superlink`` on a free loopback port with a private
``FLWR_HOME`` (so a run never touches the user's Flower config), runs ``flwr`` commands
against it, and stops every process it started — including Ray's — on the way out, also
when interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulations.processes import (
    TAG_FILE,
    LaunchError,
    console_script,
    flower_environment,
    free_port,
    freeze_tagged,
    kill_tagged,
)

logger = logging.getLogger(__name__)

SUPERLINK_START_TIMEOUT = 60.0
#: Seconds a Ray head node started by ``ray start --head`` may take to answer ``ray status``.
RAY_START_TIMEOUT = 90.0
#: Process name of the Ray head node a session starts for a persistent federation.
RAY_HEAD = "ray-head"
#: Name of the SuperLink process in a session (its log is ``superlink.log``).
SUPERLINK = "superlink"


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
            console_script("ray"),
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
            console_script("flower-superlink"),
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
            [console_script("flwr"), *args],
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
            [console_script("ray"), "status", f"--address={address}"],
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
