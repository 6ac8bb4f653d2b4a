"""``fedsec compare A B``: do two records of the same runs agree, bit for bit or within a tolerance?

A and B are run directories, or directories holding runs (a sweep, ``--seeds``, ``docs/results/NAME``);
runs are matched by their path below A and B. Every round's record is compared field by field,
except wall-clock fields (names ending in ``seconds``): numbers by relative difference, everything
else (kept and dropped clients, rejections, labels) for equality. A run is *identical* when every
value is equal, *within rtol* when only numbers differ and by no more than ``rtol``, and *differs*
otherwise; the first round that differs says where two records part.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedsec.bench import cpu_model
from fedsec.errors import FedsecError
from fedsec.numbers import is_real
from fedsec.results import METRICS_FILE, read_metrics

COMPARISON_VERSION = 1


@dataclass(frozen=True)
class RunComparison:
    """How the records of one run in A and in B compare."""

    run: str
    rounds_a: int
    rounds_b: int
    numbers: int = 0
    first_round: int | None = None  # the first round whose record differs (None: none differs)
    first_round_relative: float = 0.0  # the largest relative difference in that round
    max_relative: float = 0.0  # the largest relative difference over all rounds
    other: tuple[str, ...] = field(default_factory=tuple)  # non-numeric differences, e.g. "r3.dropped"
    final_accuracy_a: float | None = None
    final_accuracy_b: float | None = None

    def verdict(self, rtol: float) -> str:
        if self.rounds_a != self.rounds_b or self.other:
            return "differs"
        if self.first_round is None:
            return "identical"
        return "within rtol" if self.max_relative <= rtol else "differs"


def _timing(key: str) -> bool:
    return key.endswith("seconds")


def _relative(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def _differences(a: Any, b: Any, path: str) -> Iterator[tuple[str, float | None]]:
    """``(path, relative difference)`` for every number that differs; ``(path, None)`` for the rest."""
    if is_real(a) and is_real(b):
        relative = _relative(float(a), float(b))
        if relative:
            yield path, relative
    elif isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            if _timing(str(key)):
                continue
            if key not in a or key not in b:
                yield f"{path}.{key}", None
            else:
                yield from _differences(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _differences(x, y, f"{path}[{index}]")
    elif a != b:
        yield path, None


def _count_numbers(value: Any) -> int:
    if is_real(value):
        return 1
    if isinstance(value, Mapping):
        return sum(_count_numbers(v) for k, v in value.items() if not _timing(str(k)))
    if isinstance(value, list):
        return sum(_count_numbers(v) for v in value)
    return 0


def _final_accuracy(rounds: Sequence[Mapping[str, Any]]) -> float | None:
    value: Any = rounds[-1].get("accuracy") if rounds else None
    return float(value) if is_real(value) else None


def compare_rounds(run: str, a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> RunComparison:
    """Compare two runs' per-round records (``metrics.jsonl`` rows)."""
    first_round: int | None = None
    first_relative = max_relative = 0.0
    other: list[str] = []
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        label = f"r{x.get('round', index)}"
        found = list(_differences(x, y, label))
        if not found:
            continue
        relatives = [r for _, r in found if r is not None]
        other += [path for path, r in found if r is None]
        if first_round is None:
            first_round = int(x.get("round", index))
            first_relative = max(relatives, default=0.0)
        max_relative = max([max_relative, *relatives])
    return RunComparison(
        run=run,
        rounds_a=len(a),
        rounds_b=len(b),
        numbers=sum(_count_numbers(x) for x in a[: len(b)]),
        first_round=first_round,
        first_round_relative=first_relative,
        max_relative=max_relative,
        other=tuple(other),
        final_accuracy_a=_final_accuracy(a),
        final_accuracy_b=_final_accuracy(b),
    )


def _runs(root: Path) -> dict[str, Path]:
    """Every run below ``root`` (a directory holding ``metrics.jsonl``), keyed by its path below it."""
    if not root.is_dir():
        raise FedsecError(f"{root} is not a directory")
    runs = {str(path.parent.relative_to(root)): path.parent for path in sorted(root.rglob(METRICS_FILE))}
    if not runs:
        raise FedsecError(f"{root} holds no run ({METRICS_FILE})")
    return runs


@dataclass(frozen=True)
class Comparison:
    """Every run of A against the same run of B."""

    a: str
    b: str
    rtol: float
    runs: tuple[RunComparison, ...]
    only_a: tuple[str, ...] = ()
    only_b: tuple[str, ...] = ()
    matched_only: bool = False  # runs in only one of A and B are listed, not counted against agreement
    machine: str = field(default_factory=cpu_model)

    @property
    def agrees(self) -> bool:
        """Every run in both (unless ``matched_only``), and none differs beyond ``rtol``."""
        return (
            (self.matched_only or not (self.only_a or self.only_b))
            and bool(self.runs)
            and all(r.verdict(self.rtol) != "differs" for r in self.runs)
        )

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["version"] = COMPARISON_VERSION
        for run, record in zip(self.runs, document["runs"], strict=True):
            record["verdict"] = run.verdict(self.rtol)
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Comparison:
        runs = tuple(_run_from_json(r) for r in document["runs"])
        return cls(
            a=document["a"],
            b=document["b"],
            rtol=float(document["rtol"]),
            runs=runs,
            only_a=tuple(document.get("only_a", ())),
            only_b=tuple(document.get("only_b", ())),
            matched_only=bool(document.get("matched_only", False)),
            machine=document.get("machine", ""),
        )


def _run_from_json(record: Mapping[str, Any]) -> RunComparison:
    fields: dict[str, Any] = {key: value for key, value in record.items() if key != "verdict"}
    fields["other"] = tuple(fields.get("other", ()))
    return RunComparison(**fields)


def compare_dirs(
    a: Path,
    b: Path,
    *,
    rtol: float = 1e-6,
    labels: tuple[str, str] | None = None,
    matched_only: bool = False,
) -> Comparison:
    """Compare every run recorded under ``a`` with the run at the same path under ``b``."""
    if not rtol >= 0:
        raise FedsecError(f"--rtol must be >= 0, got {rtol}")
    runs_a, runs_b = _runs(Path(a)), _runs(Path(b))
    common = [run for run in runs_a if run in runs_b]
    return Comparison(
        a=labels[0] if labels else str(a),
        b=labels[1] if labels else str(b),
        rtol=rtol,
        runs=tuple(
            compare_rounds(run, read_metrics(runs_a[run]), read_metrics(runs_b[run])) for run in common
        ),
        only_a=tuple(run for run in runs_a if run not in runs_b),
        only_b=tuple(run for run in runs_b if run not in runs_a),
        matched_only=matched_only,
    )


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def markdown(comparison: Comparison) -> str:
    """One table row per run: verdict, where the records part, by how much, final accuracies."""
    lines = [
        f"A: `{comparison.a}`; B: `{comparison.b}`; tolerance {comparison.rtol:g} (relative).",
        "",
        "| run | rounds | numbers | verdict | first differing round | its largest rel. diff "
        "| largest rel. diff | final accuracy A | B |",
        "| --- | --: | --: | --- | --: | --: | --: | --: | --: |",
    ]
    for run in comparison.runs:
        rounds = str(run.rounds_a) if run.rounds_a == run.rounds_b else f"{run.rounds_a} / {run.rounds_b}"
        first = "-" if run.first_round is None else str(run.first_round)
        cells = [
            f"`{run.run}`",
            rounds,
            str(run.numbers),
            run.verdict(comparison.rtol) + (f" ({len(run.other)} other values)" if run.other else ""),
            first,
            f"{run.first_round_relative:.1e}" if run.first_round is not None else "-",
            f"{run.max_relative:.1e}" if run.first_round is not None else "-",
            _accuracy(run.final_accuracy_a),
            _accuracy(run.final_accuracy_b),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for side, missing in (("A", comparison.only_a), ("B", comparison.only_b)):
        if missing and comparison.matched_only:
            lines += ["", f"Not compared: {len(missing)} runs only in {side}."]
        elif missing:
            lines += ["", f"Only in {side}: " + ", ".join(f"`{m}`" for m in missing) + "."]
    return "\n".join(lines) + "\n"


def write_json(comparison: Comparison, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(comparison.to_json(), indent=2) + "\n")
