"""Render one or several run directories into Markdown tables and plots.

Runs are labelled by what differs between their configs (``strategy=krum``), or
by scenario name when only one run is given.  Besides the side-by-side summary
and per-round accuracy, every paper-style table a run stores under
``summary["tables"]`` (``{table: {row: {column: number}}}``) is rendered with
rows and columns named as in the paper.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedsec.results import plot_metric, read_metrics, read_summary

IGNORED_FOR_LABELS = {"out-dir", "scenario"}

#: A run label's seed part (``dba/layered/seed=42`` → ``dba/layered``).
SEED_LABEL = re.compile(r"/?seed=\d+$")


def seed_group(label: str) -> str:
    """The run a seed's run repeats (its label without ``/seed=S``; "run" if nothing is left)."""
    return SEED_LABEL.sub("", label) or "run"


def is_seed_cell(value: Any) -> bool:
    """Whether ``value`` is a cell summarised over seeds (``{"mean", "std", "n", ...}``)."""
    return isinstance(value, Mapping) and {"mean", "std", "n"} <= set(value)


def format_value(value: Any) -> str:
    """A table cell's text: "–" for None, floats to 4 decimals, "mean ± std (n=N)" over seeds."""
    if value is None:
        return "–"
    if is_seed_cell(value):
        return f"{value['mean']:.4f} ± {value['std']:.4f} (n={value['n']})"
    if isinstance(value, Mapping) and {"value", "low", "high"} <= set(value):  # a 95% interval
        return f"{value['value']:.4f} [{value['low']:.4f}, {value['high']:.4f}]"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(format_value(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_labels(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Short labels: the config keys whose values differ between runs."""
    if len(summaries) == 1:
        return [str(summaries[0].get("scenario", "run"))]
    configs = [s.get("config", {}) for s in summaries]
    keys = sorted({k for c in configs for k in c} - IGNORED_FOR_LABELS)
    differing = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    labels = []
    for summary, config in zip(summaries, configs, strict=True):
        parts = [f"{k}={config.get(k)}" for k in differing]
        labels.append(", ".join(parts) or str(summary.get("scenario", "run")))
    if len(set(labels)) < len(labels):  # identical configs: number them
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def _is_sweep(summary: Mapping[str, Any]) -> bool:
    """A sweep's summary lists its runs (``runs``) instead of rounds of its own."""
    return isinstance(summary.get("runs"), list) and "rounds" not in summary


RunEntry = tuple[str, dict[str, Any], list[dict[str, Any]]]


def _runs_of(path: Path, summary: Mapping[str, Any]) -> list[RunEntry]:
    """``(label, summary, metrics)`` of the finished runs a summary stands for (a sweep: its runs)."""
    if not _is_sweep(summary):
        metrics = read_metrics(path) if (path / "metrics.jsonl").is_file() else []
        return [(str(summary.get("scenario", "run")), dict(summary), metrics)]
    runs = []
    for label in summary["runs"]:
        child = path / str(label)
        if (child / "summary.json").is_file():
            metrics = read_metrics(child) if (child / "metrics.jsonl").is_file() else []
            runs.append((str(label), read_summary(child), metrics))
    return runs


def render_report(run_dirs: Sequence[Path], out_dir: Path | None = None) -> str:
    """Markdown for ``run_dirs``; with ``out_dir``, also write ``report.md`` and ``accuracy.png`` there.

    A sweep directory (``fedsec run`` of a scenario with variants) stands for its
    runs: they are the rows of the Runs table and the accuracy curves, and the
    sweep's merged tables follow.
    """
    if not run_dirs:
        raise ValueError("give at least one run directory")
    tops: list[dict[str, Any]] = []
    runs: list[RunEntry] = []
    sweeps = 0
    for run_dir in run_dirs:
        path = Path(run_dir)
        if not (path / "summary.json").is_file():
            raise FileNotFoundError(f"{path} has no summary.json (not a finished fedsec run)")
        summary = read_summary(path)
        tops.append(summary)
        sweep = _is_sweep(summary)
        sweeps += sweep
        prefix = f"{summary.get('scenario', path.name)}/" if sweep and len(run_dirs) > 1 else ""
        runs += [(prefix + label, s, m) for label, s, m in _runs_of(path, summary)]
    plain = [s for _, s, _ in runs]
    labels = [label for label, _, _ in runs] if sweeps else run_labels(plain)
    metrics = [m for _, _, m in runs]
    parts = ["## Runs", ""]
    parts.append(
        markdown_table(
            ["run", "scenario", "rounds", "final accuracy", "final loss", "rejected updates", "seconds"],
            [
                [
                    label,
                    s.get("scenario"),
                    s.get("rounds"),
                    s.get("final", {}).get("accuracy"),
                    s.get("final", {}).get("loss"),
                    s.get("rejected_updates", 0),
                    s.get("seconds"),
                ]
                for label, s in zip(labels, plain, strict=True)
            ],
        )
    )
    rounds = sorted({r["round"] for m in metrics for r in m})
    by_round = [{r["round"]: r.get("accuracy") for r in m} for m in metrics]
    parts += ["", "## Test accuracy per round", ""]
    parts.append(
        markdown_table(["round", *labels], [[rnd, *(b.get(rnd) for b in by_round)] for rnd in rounds])
    )
    top_labels = run_labels(tops)
    for label, summary in zip(top_labels, tops, strict=True):
        paper = summary.get("paper") or {}
        for name, table in (summary.get("tables") or {}).items():
            parts += ["", f"## {name}" + (f" ({label})" if len(tops) > 1 else ""), ""]
            parts.append(paper_table(table, paper.get(name)))
    text = "\n".join(parts) + "\n"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.md").write_text(text)
        plot_metric(
            [],
            out_dir / "accuracy.png",
            title="fedsec report",
            series=dict(zip(labels, metrics, strict=True)),
        )
    return text


PAPER_SUFFIX = " (paper)"


def table_columns(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The columns of ``{row: {column: value}}`` in first-seen order."""
    columns: list[str] = []
    for row in table.values():
        columns += [c for c in row if c not in columns]
    return columns


def with_paper(
    table: Mapping[str, Mapping[str, Any]], paper: Mapping[str, Mapping[str, float]] | None
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of ``table``, each column the paper reports followed by ``COLUMN (paper)``.

    ``paper`` is ``{row: {column: number}}`` (a scenario's ``[paper."TABLE"]``); rows the paper
    reports that the table lacks are not added (the runs did not measure them).
    """
    paper = paper or {}
    columns: list[str] = []
    for column in table_columns(table):
        columns.append(column)
        if any(column in (paper.get(row) or {}) for row in table):
            columns.append(column + PAPER_SUFFIX)

    def cell(row: str, column: str) -> Any:
        if column.endswith(PAPER_SUFFIX) and column not in table[row]:
            return (paper.get(row) or {}).get(column[: -len(PAPER_SUFFIX)])
        return table[row].get(column)

    return columns, [[name, *(cell(name, c) for c in columns)] for name in table]


def paper_table(
    table: Mapping[str, Mapping[str, Any]], paper: Mapping[str, Mapping[str, float]] | None = None
) -> str:
    """Render ``{row: {column: value}}`` with columns in first-seen order, and the paper's numbers
    (``paper``: ``{row: {column: number}}``) in a ``COLUMN (paper)`` column beside each of ours."""
    columns, rows = with_paper(table, paper)
    return markdown_table(["", *columns], rows)
