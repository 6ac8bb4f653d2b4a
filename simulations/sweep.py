"""Summaries of scenario sweeps (one run per value of one run-config key).

A sweep's directory holds one run directory per value (``KEY=VALUE/``) and a
``summary.json`` whose ``tables`` hold the sweep table (one row per value, one
column per final metric: clean ``accuracy`` and each robust test set, e.g.
FDA³'s Fig. 5, accuracy per test set against the number of devices) and the
runs' own tables merged cell by cell (e.g. DiPSeN's Fig. 6, one column per model).
Runs repeated at several seeds (``OUT/LABEL/seed=S/``) are summarised cell by cell
as mean ± std over the seeds, with n and each seed's value kept.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedsec.config_values import ConfigValue
from fedsec.errors import FedsecError
from fedsec.results import SUMMARY_FILE, read_summary
from simulations.scenarios import Scenario

#: Per-round attack metrics a sweep table shows next to accuracy when runs record them.
ATTACK_METRICS = ("targeted_accuracy", "class_flip_rate", "other_class_accuracy", "asr")


def final_row(run_dir: Path) -> dict[str, Any]:
    """A run's final metrics as a sweep-table row: clean ``accuracy``, each robust set, attack metrics."""
    final = read_summary(run_dir)["final"]
    row = {"accuracy": final.get("accuracy"), **final.get("robust", {})}
    row.update({key: final[key] for key in ATTACK_METRICS if key in final})
    return row


def sweep_table(
    scenario: Scenario, run_dirs: Sequence[Path], values: Sequence[ConfigValue] | None = None
) -> dict[str, dict[str, Any]]:
    """``{KEY=VALUE or variant: {"accuracy": ..., <robust set>/<attack metric>: ...}}`` from final records.

    ``values`` are the sweep values the runs were made for (default: all of them, in order).
    """
    if scenario.sweep is None:
        raise ValueError(f"scenario {scenario.name} has no sweep")
    labels = [scenario.sweep.label(v) for v in (values or scenario.sweep.values)]
    return {label: final_row(d) for label, d in zip(labels, run_dirs, strict=True)}


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


Tables = dict[str, dict[str, dict[str, Any]]]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def seed_cell(values: Sequence[Any]) -> Any:
    """One table cell over seeds: ``{"mean", "std", "n", "values"}`` for numbers (sample std, ddof 1;
    missing and non-finite values are left out of the statistics but kept in ``values``), the value
    itself when every seed gave the same non-number, else the seeds' values joined by " / "."""
    # a cell holding an interval ({"value", "low", "high", "n"}) counts as its value
    values = [v["value"] if isinstance(v, dict) and "value" in v else v for v in values]
    numbers = [float(v) for v in values if _is_number(v)]
    if numbers:
        return {
            "mean": statistics.fmean(numbers),
            "std": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
            "n": len(numbers),
            "values": list(values),
        }
    distinct = list(dict.fromkeys(repr(v) for v in values))
    return values[0] if len(distinct) == 1 else " / ".join(str(v) for v in values)


def over_seeds(per_seed: Sequence[Tables]) -> Tables:
    """The same tables of several seeds' runs, cell by cell as :func:`seed_cell` (rows, columns in
    first-seen order; a cell one seed lacks counts as missing)."""
    out: Tables = {}
    for name in dict.fromkeys(n for tables in per_seed for n in tables):
        rows = list(dict.fromkeys(r for tables in per_seed for r in tables.get(name, {})))
        table = out.setdefault(name, {})
        for row in rows:
            cells = [tables.get(name, {}).get(row, {}) for tables in per_seed]
            columns = list(dict.fromkeys(c for cell in cells for c in cell))
            table[row] = {c: seed_cell([cell.get(c) for cell in cells]) for c in columns}
    return out


def write_sweep_summary(
    scenario: Scenario,
    base: Path,
    run_dirs: Sequence[Path],
    values: Sequence[ConfigValue] | None = None,
    seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """Write ``base/summary.json`` for a finished sweep (or the ``values`` of it that ran) and return it.

    With ``seeds``, ``run_dirs`` hold every run at every seed (value-major: the seeds of the first
    value, then of the next), and every table cell is the mean ± std over the seeds
    (:func:`seed_cell`).  A scenario without a sweep may run at several seeds; its one row is named
    after the scenario, in a table named by its ``sweep-table`` (default "final metrics").
    """
    if scenario.sweep is None and not seeds:
        raise ValueError(f"scenario {scenario.name} has no sweep and no seeds")
    if scenario.sweep is not None:
        ran: list[ConfigValue] = list(values or scenario.sweep.values)
        labels = [scenario.sweep.label(v) for v in ran]
        title = scenario.sweep.table
    else:
        ran, labels = [], [scenario.name]
        title = str(scenario.values.get("sweep-table") or "final metrics")
    repeats = max(1, len(seeds))
    if len(run_dirs) != len(labels) * repeats:
        raise ValueError(f"expected {len(labels) * repeats} run directories, got {len(run_dirs)}")
    per_seed: list[Tables] = []
    for index in range(repeats):
        dirs = [Path(d) for d in run_dirs[index::repeats]]
        per_seed.append(
            {
                title: {label: final_row(d) for label, d in zip(labels, dirs, strict=True)},
                **merged_tables(dirs, labels),
            }
        )
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "sweep": {"key": scenario.sweep.key if scenario.sweep else "seed", "values": ran},
        "runs": [str(Path(d).relative_to(base)) for d in run_dirs],
        "tables": over_seeds(per_seed) if seeds else per_seed[0],
    }
    if seeds:
        summary["seeds"] = list(seeds)
    if scenario.paper:
        summary["paper"] = scenario.paper
    (base / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def completed_with(config: Any, run_config_text: str) -> bool:
    """Whether ``config.out_dir`` already holds a completed run of exactly this run config.

    ``run_config_text`` is the ``run_config.toml`` that submitting ``config`` would write.
    A directory holding a *completed* run of another config is refused (records never mix);
    one holding an unfinished attempt is cleared so the run starts clean.
    """
    out = Path(config.out_dir)
    summary = out / SUMMARY_FILE
    recorded = out / "run_config.toml"
    if summary.exists() and read_summary(out).get("status") == "completed":
        if recorded.exists() and recorded.read_text() == run_config_text:
            return True
        raise FedsecError(
            f"{out} holds a completed run of another run config; --keep-completed reuses only identical "
            "runs: choose a new --out, or --force to replace it"
        )
    if out.exists():
        shutil.rmtree(out)
    return False
