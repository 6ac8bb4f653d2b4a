"""Run records: ``metrics.jsonl`` per round, ``summary.json`` at the end, plots.

The file names and keys here are a contract that tests, ``fedsec report`` and
outside checks read:

``metrics.jsonl``
    one JSON object per round: ``round``, ``accuracy``, ``loss``, ``seconds``
    and, where a strategy filtered anything, ``kept`` / ``dropped`` client ids
    and ``rejected`` (``{client: reason}``); later capabilities add their own
    keys (``asr``, robust accuracy per attack, detection counts).
``summary.json``
    ``scenario``, ``config``, ``rounds``, ``final`` (at least ``accuracy`` and
    ``loss``), ``seconds``, ``rejected_updates`` and ``failures``; paper-style
    comparison tables go under ``tables`` as ``{table: {row: {column: number}}}``.
``accuracy.png``
    accuracy (and loss) per round.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsec.errors import FedsecError

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
ACCURACY_PLOT = "accuracy.png"


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays and non-finite floats into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class RunRecorder:
    """Collects what happens in each round and writes the run's records.

    Strategies call :meth:`note` with whatever they decided in a round (kept,
    dropped, rejected clients); the server-side evaluation calls
    :meth:`end_round`, which appends the round's line to ``metrics.jsonl``.
    :meth:`finish` writes ``summary.json`` and the plots.

    Parameters
    ----------
    out_dir
        Absolute directory for the records; ``None`` keeps them in memory only.
    scenario
        Scenario name, copied to the summary.
    config
        The run configuration as a kebab-case mapping, copied to the summary.
    """

    out_dir: Path | None
    scenario: str
    config: Mapping[str, Any]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: Continue the records of an interrupted run in ``out_dir`` after this round (``None``: a new run).
    resume_after: int | None = None
    _pending: dict[int, dict[str, Any]] = field(default_factory=dict)
    _started: float = field(default_factory=time.perf_counter)
    _last_mark: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        if self.out_dir is not None and self.resume_after is not None:
            self._resume(Path(self.out_dir), self.resume_after)
        elif self.out_dir is not None:
            self.out_dir = Path(self.out_dir)
            if not self.out_dir.is_absolute():
                raise ValueError(f"out_dir must be an absolute path, got {self.out_dir}")
            if self.out_dir.exists() and not self.out_dir.is_dir():
                raise RecordsError(f"out-dir {self.out_dir} is a file, not a directory")
            taken = [name for name in (METRICS_FILE, SUMMARY_FILE) if (self.out_dir / name).exists()]
            if taken:
                raise RecordsError(
                    f"out-dir {self.out_dir} already holds another run's records ({', '.join(taken)}); "
                    "choose a new directory"
                )
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / METRICS_FILE).write_text("")

    def _resume(self, out_dir: Path, after: int) -> None:
        """Keep the rounds <= ``after`` of the interrupted run in ``out_dir``; drop later, unfinished ones."""
        if not out_dir.is_absolute():
            raise ValueError(f"out_dir must be an absolute path, got {out_dir}")
        if (out_dir / SUMMARY_FILE).exists():
            raise RecordsError(
                f"the run in {out_dir} already finished (it has a {SUMMARY_FILE}); nothing to resume"
            )
        metrics = out_dir / METRICS_FILE
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by the crash
                break
            if record.get("round", after + 1) <= after:
                kept.append(record)
        if [r["round"] for r in kept] != list(range(after + 1)):
            raise RecordsError(f"{metrics} does not hold rounds 0..{after} of the interrupted run")
        write_atomically(metrics, "".join(json.dumps(r, sort_keys=False) + "\n" for r in kept))
        self.out_dir = out_dir
        self.rounds = kept

    def note(self, server_round: int, **fields: Any) -> None:
        """Add ``fields`` to round ``server_round``'s record; lists and dicts merge."""
        pending = self._pending.setdefault(server_round, {})
        for key, value in fields.items():
            old = pending.get(key)
            if isinstance(old, list) and isinstance(value, list | tuple):
                old.extend(value)
            elif isinstance(old, dict) and isinstance(value, Mapping):
                old.update(value)
            else:
                pending[key] = list(value) if isinstance(value, tuple) else value

    def end_round(self, server_round: int, *, accuracy: float, loss: float, **fields: Any) -> dict[str, Any]:
        """Close round ``server_round`` with its evaluation and write its line."""
        now = time.perf_counter()
        record: dict[str, Any] = {
            "round": server_round,
            "accuracy": float(accuracy),
            "loss": float(loss),
            "seconds": round(now - self._last_mark, 4),
        }
        self._last_mark = now
        record.update(self._pending.pop(server_round, {}))
        record.update(fields)
        record = _jsonable(record)
        self.rounds.append(record)
        if self.out_dir is not None:
            append_line(self.out_dir / METRICS_FILE, json.dumps(record, sort_keys=False))
        logger.info("round %s: accuracy=%.4f loss=%.4f", server_round, accuracy, loss)
        return record

    def finish(self, *, tables: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Write ``summary.json`` and ``accuracy.png``; return the summary."""
        final = dict(self.rounds[-1]) if self.rounds else {"accuracy": None, "loss": None}
        final.pop("seconds", None)
        rejected = sum(len(r.get("rejected", {})) for r in self.rounds)
        failures = sum(int(r.get("failures", 0)) for r in self.rounds)
        summary: dict[str, Any] = {
            "scenario": self.scenario,
            "config": dict(self.config),
            "rounds": max((r["round"] for r in self.rounds), default=0),
            "final": final,
            "seconds": round(time.perf_counter() - self._started, 3),
            "rejected_updates": rejected,
            "failures": failures,
        }
        if tables:
            summary["tables"] = tables
        summary.update(extra)
        summary = _jsonable(summary)
        if self.out_dir is not None:
            write_atomically(self.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
            plot_metric(self.rounds, self.out_dir / ACCURACY_PLOT, title=self.scenario)
        return summary


class RecordsError(FedsecError):
    """A run's records cannot be written where asked (another run's records there, a file in the way)."""


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` with a single write, flushed to disk (a reader never sees half a line)."""
    data = (line.rstrip("\n") + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Read a run's ``metrics.jsonl`` (one dict per round)."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(run_dir: Path) -> dict[str, Any]:
    """Read a run's ``summary.json``."""
    return dict(json.loads((Path(run_dir) / SUMMARY_FILE).read_text()))


def plot_metric(
    rounds: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    title: str,
    series: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Path:
    """Plot accuracy and loss per round for one run (or several, via ``series``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = dict(series) if series is not None else {title: rounds}
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for label, run in runs.items():
        xs = [r["round"] for r in run]
        ax_acc.plot(xs, [r.get("accuracy") for r in run], marker="o", label=label)
        ax_loss.plot(xs, [r.get("loss") for r in run], marker="o", label=label)
    ax_acc.set(xlabel="round", ylabel="test accuracy", title="accuracy", ylim=(0, 1))
    ax_loss.set(xlabel="round", ylabel="test loss", title="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
