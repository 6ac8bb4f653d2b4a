"""Section 6, start-up: what a run of a sweep costs before its first round, alone and in a shared federation.

The same small runs (``lenet``, 2 clients, 1 round, seeds 1..k) go through Flower twice:

* **alone**: each run starts its own SuperLink, and Flower's simulation starts its own Ray
  (``fedsec run`` of one scenario);
* **shared**: one SuperLink and one Ray head node serve every run (``fedsec run`` of a sweep or
  grid, :func:`simulations.launcher.simulation_session` with ``ray_head=True``).

A run's start-up is the time from the moment fedsec starts on it (its session, or its submission
in a shared session) to its round-0 record; the first shared run also pays the head node and the
SuperLink.  Ray's client actors are still created per run (Flower's backend builds its actor pool
for each run), so an extra run does not start free.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from fedsec.config import RunConfig
from fedsec.config_values import ConfigValue
from simulations import launcher
from simulations.bench.common import Context, rounded
from simulations.bench.memory import sim_config


def _configs(ctx: Context, mode: str, runs: int) -> list[RunConfig]:
    configs = []
    for seed in range(1, runs + 1):
        overrides: dict[str, ConfigValue] = {
            "model": "lenet",
            "num-clients": 2,
            "num-server-rounds": 1,
            "local-epochs": 1,
            "seed": seed,
        }
        config = sim_config(ctx, f"startup-{mode}-{seed}", overrides)
        shutil.rmtree(config.out_dir, ignore_errors=True)
        configs.append(config)
    return configs


def _to_first_record(started: float, outcome: launcher.RunOutcome) -> float:
    """Seconds from ``started`` to the run's round-0 record (the outcome times its wait only)."""
    waited_from = time.perf_counter() - outcome.seconds
    return (waited_from - started) + outcome.startup_seconds


def startup_rows(alone: list[float], shared: list[float], totals: dict[str, float]) -> list[dict[str, Any]]:
    """The section's two rows from the measured start-ups (seconds per run, in run order)."""
    rows = []
    for mode, values in (("alone", alone), ("shared", shared)):
        extra = values[1:]
        rows.append(
            {
                "mode": mode,
                "runs": len(values),
                "first_startup_s": rounded(values[0], 1) if values else None,
                "extra_startup_s": rounded(statistics.fmean(extra), 1) if extra else None,
                "total_s": rounded(totals.get(mode), 1),
            }
        )
    return rows


def bench_startup(ctx: Context) -> list[dict[str, Any]]:
    """Section 6: start-up per run and per extra run, alone and in a shared federation."""
    runs = ctx.plan.startup_runs
    if runs < 2 or not ctx.budget.allows(60.0 * runs):
        return [{"mode": "skipped", "runs": runs, "status": "skipped (time budget)"}]
    alone: list[float] = []
    shared: list[float] = []
    totals: dict[str, float] = {}
    ctx.say(f"startup: {runs} one-round runs, each alone")
    began = time.perf_counter()
    for config in _configs(ctx, "alone", runs):
        started = time.perf_counter()
        outcome = launcher.run_simulation(config)
        alone.append(_to_first_record(started, outcome))
    totals["alone"] = time.perf_counter() - began
    ctx.say(f"startup: the same {runs} runs in one federation (one SuperLink, one Ray head)")
    began = time.perf_counter()
    logs = Path(ctx.out) / "runs" / "startup-shared-logs"
    shutil.rmtree(logs, ignore_errors=True)
    with launcher.simulation_session(logs, ray_head=True) as session:
        started = began
        for config in _configs(ctx, "shared", runs):
            outcome = launcher.run_simulation(config, session=session)
            shared.append(_to_first_record(started, outcome))
            started = time.perf_counter()
    totals["shared"] = time.perf_counter() - began
    return startup_rows(alone, shared, totals)
