"""Memory of a simulation: every process's RSS/PSS sampled from /proc while ``flwr run`` runs.

:func:`simulate` runs a config on Flower's Ray simulation engine the way the
launcher does, with a :class:`MemorySampler` on its processes; the rounds,
memory and scale sections all measure through it.  :func:`bench_memory` is
section 4 beyond the 10-client runs the rounds section already sampled.
"""

from __future__ import annotations

import contextlib
import math
import resource
import shutil
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsec.bench import steady_fit_seconds, steady_round_seconds
from fedsec.config import RunConfig
from fedsec.config_values import ConfigValue
from fedsec.results import read_metrics
from simulations import launcher
from simulations.bench.common import Context, scenario_config
from simulations.flower_session import FlowerSession
from simulations.processes import LaunchError, tagged_pids

FLOWER_PROCESSES = ("flower-superlink", "flwr-simulation", "raylet")


def foreign_flower_processes(own_tag: str | None = None) -> list[int]:
    """PIDs of Flower/Ray processes that are not this bench's (they would skew its timings)."""
    own = set(tagged_pids(own_tag)) if own_tag else set()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            program = _program(_argv(int(entry.name)))
        except OSError:
            continue
        if program in FLOWER_PROCESSES:
            found.append(int(entry.name))
    return found


def _status_kb(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def _pss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return None


def _argv(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    return [part for part in raw.split("\0") if part]


def _program(argv: Sequence[str]) -> str:
    """The program a command line runs: its executable, or the script a Python interpreter runs."""
    if not argv:
        return ""
    first = Path(argv[0].split(" ")[0]).name
    if first.startswith("python") and len(argv) > 1:
        return Path(argv[1]).name
    return first


def _role(argv: Sequence[str]) -> str:
    program = _program(argv)
    if argv and argv[0].startswith("ray::ClientAppActor"):
        return "actor"
    return {"flower-superlink": "superlink", "flwr-simulation": "server", "flwr": "cli"}.get(program, "ray")


class MemorySampler:
    """Samples every tagged process's RSS (and PSS) from /proc every ``interval`` s in a thread.

    RSS comes from ``/proc/PID/status`` (microseconds).  PSS needs ``smaps_rollup``, which walks the
    process's page tables (about 15 ms for a process holding torch): read every 0.5 s for a dozen
    processes it took a fifth of a core from the simulation being timed.  So a process's PSS is
    re-read only when its RSS has grown by ``pss_growth`` since its last PSS reading (and on its
    first sample, and on ``sample(fresh_pss=True)``): during steady rounds, when RSS is flat, it
    costs nothing.
    """

    def __init__(self, tag: str, *, interval: float = 0.5, pss_growth: float = 0.05) -> None:
        self.tag = tag
        self.interval = interval
        self.pss_growth = pss_growth
        self._pss_at: dict[int, tuple[int, int]] = {}  # pid -> (RSS when PSS was read, that PSS)
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self.peak_by_pid: dict[int, int] = {}
        self.pss_by_pid: dict[int, int] = {}
        self.role_by_pid: dict[int, str] = {}
        self.peak_by_role: dict[str, int] = {}
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-memory", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self, *, fresh_pss: bool = False) -> None:
        """Read every tagged process's RSS (and its PSS where due; every PSS with ``fresh_pss``)."""
        rss_total = pss_total = 0
        roles: dict[str, int] = {}
        pids = tagged_pids(self.tag)
        for pid in pids:
            status = _status_kb(pid)
            if "VmRSS" not in status:
                continue
            with contextlib.suppress(OSError):  # re-read: Ray renames a worker once it hosts an actor
                self.role_by_pid[pid] = _role(_argv(pid))
            rss = status["VmRSS"]
            role = self.role_by_pid.get(pid, "ray")
            roles[role] = roles.get(role, 0) + rss
            pss = self._pss(pid, rss, fresh=fresh_pss)
            rss_total += rss
            pss_total += pss
            self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0), rss, status.get("VmHWM", 0))
            self.pss_by_pid[pid] = max(self.pss_by_pid.get(pid, 0), pss)
        for role, kb in roles.items():
            self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), kb)
        self.peak_rss_kb = max(self.peak_rss_kb, rss_total)
        self.peak_pss_kb = max(self.peak_pss_kb, pss_total)
        self.peak_processes = max(self.peak_processes, len(pids))

    def _pss(self, pid: int, rss: int, *, fresh: bool) -> int:
        """``pid``'s PSS (kB): re-read when due, else the last reading."""
        last = self._pss_at.get(pid)
        if fresh or last is None or rss > last[0] * (1.0 + self.pss_growth):
            pss = _pss_kb(pid) or rss
            self._pss_at[pid] = (rss, pss)
            return pss
        return last[1]

    def summary(self) -> dict[str, Any]:
        def mb(kb: float | None) -> float | None:
            return None if kb is None else round(kb / 1024, 1)

        actors = [pid for pid, role in self.role_by_pid.items() if role == "actor"]
        by_role = self.peak_by_role  # the largest concurrent sum per role over the samples
        return {
            "peak_rss_mb": mb(self.peak_rss_kb),
            "peak_pss_mb": mb(self.peak_pss_kb),
            "processes": self.peak_processes,
            "actors": len(actors),
            "actor_rss_mb": mb(statistics.mean(self.peak_by_pid[p] for p in actors)) if actors else None,
            "actor_pss_mb": mb(statistics.mean(self.pss_by_pid[p] for p in actors)) if actors else None,
            "server_rss_mb": mb(by_role.get("server")),
            "superlink_rss_mb": mb(by_role.get("superlink")),
            "ray_other_rss_mb": mb(by_role.get("ray")),
            "flwr_cli_rss_mb": mb(by_role.get("cli")),
        }


@dataclass
class MeteredSession(FlowerSession):
    """A FlowerSession that counts the ``flwr`` CLI calls it makes (polling) and their CPU time."""

    cli_calls: int = 0
    cli_cpu_seconds: float = 0.0

    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            return super().flwr(*args, timeout=timeout)
        finally:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.cli_calls += 1
            self.cli_cpu_seconds += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@dataclass
class SimulationResult:
    """One ``flwr run`` on the Ray engine, as the bench saw it."""

    status: str
    superlink_seconds: float
    startup_seconds: float
    total_seconds: float
    round1_seconds: float | None
    round_seconds: float | None
    fit_seconds: float | None  # the steady rounds' median of the clients' summed fit() seconds
    rounds: int
    memory: dict[str, Any]
    cli_calls: int
    cli_cpu_seconds: float
    foreign: int


def simulate(config: RunConfig, *, timeout: float = launcher.RUN_TIMEOUT) -> SimulationResult:
    """Run ``config`` like :func:`simulations.launcher.run_simulation`, sampling memory and timing startup.

    It opens the :class:`~simulations.flower_session.FlowerSession` itself (instead of calling
    ``run_simulation``) to know the session's process tag, which the memory sampler needs. A run
    that has not finished after ``timeout`` seconds is stopped and reported as failed.
    """
    out = Path(config.out_dir)
    shutil.rmtree(out, ignore_errors=True)  # stale metrics.jsonl would be read as this run's progress
    out.mkdir(parents=True)
    foreign = len(foreign_flower_processes())
    session = MeteredSession(simulation=True, log_dir=out / "logs")
    with session, MemorySampler(session.tag) as sampler:
        start = time.perf_counter()
        session.start_superlink()
        superlink = time.perf_counter() - start
        federation = launcher.simulation_federation(config.num_clients)
        try:
            outcome = launcher.submit_and_wait(session, config, federation_config=federation, timeout=timeout)
            status = outcome.status
            startup, total = outcome.startup_seconds, outcome.seconds
        except LaunchError as error:
            status, startup, total = f"failed: {error}", math.nan, time.perf_counter() - start
        sampler.sample(fresh_pss=True)  # every process's PSS as the run ends
    records = read_metrics(out) if (out / "metrics.jsonl").exists() else []
    first, steady = steady_round_seconds(records)
    return SimulationResult(
        status=status,
        superlink_seconds=superlink,
        startup_seconds=startup,
        total_seconds=total,
        round1_seconds=first,
        round_seconds=steady,
        fit_seconds=steady_fit_seconds(records),
        rounds=max((int(r["round"]) for r in records), default=0),
        memory=sampler.summary(),
        cli_calls=session.cli_calls,
        cli_cpu_seconds=session.cli_cpu_seconds,
        foreign=foreign,
    )


def sim_config(ctx: Context, name: str, overrides: dict[str, ConfigValue]) -> RunConfig:
    """The quickstart config for a bench run named ``name`` (its output under ``out/runs``)."""
    values: dict[str, ConfigValue] = {"out-dir": str(ctx.out / "runs" / name), **overrides}
    if ctx.plan.local_epochs is not None:
        values.setdefault("local-epochs", ctx.plan.local_epochs)
    return scenario_config(values)


def memory_row(model: str, clients: int, fraction: float, result: SimulationResult) -> dict[str, Any]:
    """A row of the memory section from one simulation."""
    return {
        "model": model,
        "clients": clients,
        "fraction_fit": fraction,
        **result.memory,
        "status": result.status,
    }


def bench_memory(ctx: Context) -> list[dict[str, Any]]:
    """Section 4 beyond the 10-client runs of section 1: a lenet simulation of each larger size."""
    rows: list[dict[str, Any]] = []
    for clients in ctx.plan.memory_clients:
        if clients == 10 and "lenet" in ctx.plan.sim_models:
            continue  # measured by the rounds section
        rounds = ctx.plan.memory_rounds
        config = sim_config(
            ctx,
            f"memory-lenet-{clients}",
            {"model": "lenet", "num-clients": clients, "num-server-rounds": rounds},
        )
        predicted = 60.0 + rounds * ctx.floor_seconds.get("lenet", 10.0) * 3
        if not ctx.budget.allows(predicted):
            rows.append(
                {"model": "lenet", "clients": clients, "fraction_fit": 1.0, "status": "skipped (budget)"}
            )
            continue
        ctx.say(f"memory: flwr run, lenet, {clients} clients, {rounds} rounds")
        rows.append(memory_row("lenet", clients, 1.0, simulate(config)))
    return rows
