"""Summaries of scenario sweeps (one run per value of one run-config key).

A sweep's directory holds one run directory per value (``KEY=VALUE/``) and a
``summary.json`` whose ``tables`` has one row per value and one column per
final metric: clean ``accuracy`` and, where the runs evaluated attacks, each
robust test set (e.g. FDA³'s Fig. 5: accuracy per test set against the number
of devices).
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


def write_sweep_summary(scenario: Scenario, base: Path, run_dirs: Sequence[Path]) -> dict[str, Any]:
    """Write ``base/summary.json`` for a finished sweep and return it."""
    assert scenario.sweep is not None
    summary = {
        "scenario": scenario.name,
        "sweep": {"key": scenario.sweep.key, "values": list(scenario.sweep.values)},
        "runs": [str(Path(d).relative_to(base)) for d in run_dirs],
        "tables": {scenario.sweep.table: sweep_table(scenario, run_dirs)},
    }
    (base / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
