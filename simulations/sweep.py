"""Summaries of scenario sweeps (one run per value of one run-config key).

A sweep's directory holds one run directory per value (``KEY=VALUE/``) and a
``summary.json`` whose ``tables`` hold the sweep table (one row per value, one
column per final metric: clean ``accuracy`` and each robust test set, e.g.
FDA³'s Fig. 5, accuracy per test set against the number of devices) and the
runs' own tables merged cell by cell (e.g. DiPSeN's Fig. 6, one column per model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedsec.results import SUMMARY_FILE, read_summary
from simulations.scenarios import Scenario


def sweep_table(scenario: Scenario, run_dirs: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """``{KEY=VALUE: {"accuracy": ..., <robust set>: ...}}`` from the runs' final records."""
    if scenario.sweep is None:
        raise ValueError(f"scenario {scenario.name} has no sweep")
    rows: dict[str, dict[str, Any]] = {}
    for value, run_dir in zip(scenario.sweep.values, run_dirs, strict=True):
        final = read_summary(run_dir)["final"]
        rows[scenario.sweep.label(value)] = {"accuracy": final.get("accuracy"), **final.get("robust", {})}
    return rows


def merged_tables(run_dirs: Sequence[Path]) -> dict[str, dict[str, dict[str, Any]]]:
    """The runs' own tables merged cell by cell (runs with distinct column names sit side by side).

    A cell that two runs both fill keeps the later run's value; give each run's
    column a distinct name (e.g. the model's) to compare them.
    """
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    for run_dir in run_dirs:
        for name, table in (read_summary(run_dir).get("tables") or {}).items():
            target = merged.setdefault(name, {})
            for row, cells in table.items():
                target.setdefault(row, {}).update(cells)
    return merged


def write_sweep_summary(scenario: Scenario, base: Path, run_dirs: Sequence[Path]) -> dict[str, Any]:
    """Write ``base/summary.json`` for a finished sweep and return it."""
    if scenario.sweep is None:
        raise ValueError(f"scenario {scenario.name} has no sweep")
    summary = {
        "scenario": scenario.name,
        "sweep": {"key": scenario.sweep.key, "values": list(scenario.sweep.values)},
        "runs": [str(Path(d).relative_to(base)) for d in run_dirs],
        "tables": {scenario.sweep.table: sweep_table(scenario, run_dirs), **merged_tables(run_dirs)},
    }
    (base / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
