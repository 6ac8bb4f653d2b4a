"""Run fedsec through Flower's own engines: Ray simulation, or SuperLink + SuperNodes.

Both paths start their own ``flower-superlink`` on a free loopback port with a
private ``FLWR_HOME`` (so a run never touches the user's Flower config), submit
the app with ``flwr run``, wait for the run to reach ``finished:*`` while
following ``metrics.jsonl`` for progress, fetch the run's log into the output
directory, check that the run completed, and stop every process they started —
including Ray's — on the way out, also when interrupted.

The session that starts and stops those processes is in :mod:`simulations.flower_session`;
their environment and the tag that finds every one of them, in :mod:`simulations.processes`.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsec.config import RunConfig
from simulations.flower_session import SUPERLINK, FlowerSession, ray_cluster_answers
from simulations.processes import APP_DIR, LaunchError, console_script, free_port

logger = logging.getLogger(__name__)

#: Seconds without a new round record after which the run's status is queried (progress comes from
#: metrics.jsonl; while rounds keep coming, Flower is not asked).
STATUS_INTERVAL = 30.0
#: Seconds the launcher waits for Flower to end a run after the ServerApp wrote its summary (Flower's
#: simulation engine otherwise waits for every client still running, however long it hangs).
FINISH_GRACE = 10.0
#: Default limit on one run's wall time, start-up included (``fedsec run --timeout``).
RUN_TIMEOUT = 6 * 3600.0


@dataclass
class RunOutcome:
    """What a finished run reports back to the CLI."""

    run_id: str
    status: str
    out_dir: Path
    log_file: Path
    seconds: float
    startup_seconds: float


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
    last_news = float("-inf")  # the last status query or new round record
    while True:
        # `flwr ls` costs 1-2 CPU-seconds per call, taken from the run's clients on a small machine.
        # The rounds in metrics.jsonl are the progress: ask Flower only when the ServerApp has written
        # its summary (the run is about to finish) or nothing was heard for STATUS_INTERVAL s (the
        # start, a long round, or a run that died without a summary).
        records = _read_new_rounds(out_dir, seen)
        for record in records:
            if first_round_at is None:
                first_round_at = time.monotonic()
            if on_round is not None:
                on_round(record)
        seen += len(records)
        if records:
            last_news = time.monotonic()
        summary_written = (out_dir / "summary.json").exists()
        if summary_written or time.monotonic() - last_news >= STATUS_INTERVAL:
            status = _run_status(session, run_id)
            last_news = time.monotonic()
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
                    console_script("flower-supernode"),
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
