"""``run_bench``: every section in turn, then the cross-section figures, the notes, the files and tables."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from fedsec.bench import SECTIONS, Budget, bench_document
from fedsec.errors import ConfigError
from simulations.bench.aggregation import bench_aggregation, fill_round_shares
from simulations.bench.attacks import bench_attacks
from simulations.bench.common import BENCH_FILE, MARKDOWN_FILE, BenchPlan, Context, machine
from simulations.bench.findings import findings
from simulations.bench.imports import bench_imports
from simulations.bench.memory import bench_memory, foreign_flower_processes
from simulations.bench.report import COLUMNS, markdown, print_tables
from simulations.bench.rounds import bench_simulation, round_reference
from simulations.bench.scale import bench_scale
from simulations.bench.startup import bench_startup

__all__ = ["run_bench"]

#: Flower's INFO lines and the defenses' per-client "dropped client" warnings (hundreds per
#: aggregate_train at 200 clients) would flood the console and time the logging, not the math.
QUIET = {"flwr": logging.WARNING, "strategies": logging.ERROR, "fedsec": logging.ERROR}


def run_bench(
    *, quick: bool, out: Path, console: Console, only: Collection[str] = SECTIONS
) -> dict[str, Any]:
    """Run the sections named in ``only`` (all by default), print the tables, write ``bench.json``
    and ``bench.md`` to ``out``; a section left out is empty there and named in the notes.

    Raises
    ------
    ConfigError
        If ``only`` is empty or names an unknown section (before anything runs or is written).
    """
    wanted = set(only)
    unknown = sorted(wanted - set(SECTIONS))
    if unknown or not wanted:
        raise ConfigError(f"bench sections must be some of: {', '.join(SECTIONS)}; got {sorted(wanted)}")
    out = out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = BenchPlan.for_mode(quick=quick)
    ctx = Context(plan=plan, out=out, console=console, budget=Budget(plan.deadline_seconds))
    levels = {name: logging.getLogger(name).level for name in QUIET}
    for name, quiet_level in QUIET.items():
        logging.getLogger(name).setLevel(quiet_level)
    foreign = foreign_flower_processes()
    if foreign:
        console.print(
            f"[yellow]warning:[/yellow] {len(foreign)} Flower/Ray processes of another run are alive; "
            "timings will be skewed"
        )
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    sections: dict[str, list[dict[str, Any]]] = {name: [] for name in COLUMNS}
    try:
        # Flower runs first: right after the caller checked that no other Flower run is alive.
        if wanted & {"simulation", "memory"}:  # the 10-client runs give both sections rows
            simulation, memory = bench_simulation(ctx)
            sections["simulation"] = simulation if "simulation" in wanted else []
            sections["memory"] = memory if "memory" in wanted else []
        if "startup" in wanted:
            sections["startup"] = bench_startup(ctx)
        if "memory" in wanted:
            sections["memory"] += bench_memory(ctx)
        if "imports" in wanted:
            sections["imports"] = bench_imports(ctx)
        if "scale" in wanted:
            sections["scale"] = bench_scale(ctx)
        if "aggregation" in wanted:
            sections["aggregation"] = bench_aggregation(ctx)
            # A defense's share of a round needs a round of its model: the simulation's, else its floor.
            models = sorted({row["model"] for row in sections["aggregation"] if row.get("ms") is not None})
            if ctx.budget.allows(30.0 * len(models)):
                round_reference(ctx, models)
        if "attacks" in wanted:
            sections["attacks"] = bench_attacks(ctx)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    fill_round_shares(sections["aggregation"], ctx)
    info["load_avg_end"] = round(os.getloadavg()[0], 2)
    if info["load_avg_start"] > 0.5 * (os.cpu_count() or 1):  # the end is loaded by the bench itself
        ctx.notes.append(
            f"the machine was busy with other work (1-minute load average {info['load_avg_start']} at the "
            f"start on {os.cpu_count()} cores): absolute times are inflated; the ratios, measured side by "
            "side, hold better."
        )
    skipped = [name for name in SECTIONS if name not in wanted]
    if skipped:
        ctx.notes.append(f"sections not run (`fedsec bench --sections`): {', '.join(skipped)}.")
    if foreign:
        ctx.notes.append(f"{len(foreign)} Flower/Ray processes of another run were alive at the start.")
    document = bench_document(
        date=date,
        machine=info,
        quick=quick,
        sections=sections,
        notes=[*findings(sections, plan), *ctx.notes],
        wall_seconds=time.perf_counter() - ctx.started,
    )
    (out / BENCH_FILE).write_text(json.dumps(document, indent=2) + "\n")
    (out / MARKDOWN_FILE).write_text(markdown(document))
    print_tables(console, document)
    console.print(f"wrote {out / BENCH_FILE} and {out / MARKDOWN_FILE} in {document['wall_seconds']:.0f}s")
    return document
