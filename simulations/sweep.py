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

from fedsec.config import ConfigValue
from fedsec.results import SUMMARY_FILE, read_summary
from simulations.scenarios import Scenario

#: Per-round attack metrics a sweep table shows next to accuracy when runs record them.
ATTACK_METRICS = ("targeted_accuracy", "class_flip_rate", "other_class_accuracy", "asr")


def sweep_table(
    scenario: Scenario, run_dirs: Sequence[Path], values: Sequence[ConfigValue] | None = None
) -> dict[str, dict[str, Any]]:
    """``{KEY=VALUE or variant: {"accuracy": ..., <robust set>/<attack metric>: ...}}`` from final records.

    ``values`` are the sweep values the runs were made for (default: all of them, in order).
    """
    if scenario.sweep is None:
        raise ValueError(f"scenario {scenario.name} has no sweep")
    rows: dict[str, dict[str, Any]] = {}
    for value, run_dir in zip(values or scenario.sweep.values, run_dirs, strict=True):
        final = read_summary(run_dir)["final"]
        row = {"accuracy": final.get("accuracy"), **final.get("robust", {})}
        row.update({key: final[key] for key in ATTACK_METRICS if key in final})
        rows[scenario.sweep.label(value)] = row
    return rows


def merged_tables(run_dirs: Sequence[Path], labels: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """The runs' own tables merged cell by cell, runs side by side.

    Runs that fill distinct cells (one model's column each, or one variant's row
    each) keep their names; if two runs fill the same cell of a table, that
    table's columns are suffixed with each run's label
    (``"LeNet-5 [num-clients=10]"``), so no run's value overwrites another's.
    """
    per_run = [read_summary(d).get("tables") or {} for d in run_dirs]
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    for name in dict.fromkeys(n for tables in per_run for n in tables):
        cells = [{(r, c) for r, row in tables.get(name, {}).items() for c in row} for tables in per_run]
        clash = any(a & b for i, a in enumerate(cells) for b in cells[i + 1 :])
        target = merged.setdefault(name, {})
        for tables, label in zip(per_run, labels, strict=True):
            for row, cells in tables.get(name, {}).items():
                renamed = {f"{c} [{label}]" if clash else c: v for c, v in cells.items()}
                target.setdefault(row, {}).update(renamed)
    return merged


def write_sweep_summary(
    scenario: Scenario, base: Path, run_dirs: Sequence[Path], values: Sequence[ConfigValue] | None = None
) -> dict[str, Any]:
    """Write ``base/summary.json`` for a finished sweep (or the ``values`` of it that ran) and return it."""
    if scenario.sweep is None:
        raise ValueError(f"scenario {scenario.name} has no sweep")
    ran = list(values or scenario.sweep.values)
    summary = {
        "scenario": scenario.name,
        "sweep": {"key": scenario.sweep.key, "values": ran},
        "runs": [str(Path(d).relative_to(base)) for d in run_dirs],
        "tables": {
            scenario.sweep.table: sweep_table(scenario, run_dirs, ran),
            **merged_tables(run_dirs, [scenario.sweep.label(v) for v in ran]),
        },
    }
    (base / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
