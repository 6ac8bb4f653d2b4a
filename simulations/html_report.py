"""``fedsec report DIR... --html FILE``: one self-contained HTML page for runs and grids.

The page needs no network and no script: styles are inline, curves are inline SVG,
and the attack × defense heatmap is a table whose cells are coloured by value.  It shows

* the runs side by side (final accuracy, ASR where measured, rejected updates, seconds);
* every paper-style table the runs stored (``summary["tables"]``);
* per-round curves of accuracy and, where measured, attack success, one line per run;
* for a grid (runs whose configs have ``variant`` and ``defense``), a heatmap of final ASR
  and of final accuracy, attack by defense;
* for every filtering defense, which clients it kept and dropped each round, attackers marked
  (from the run's ``roles``);
* each run's configuration.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedsec.config import RunConfig
from fedsec.results import read_summary
from simulations.report import (
    RunEntry,
    _is_sweep,
    _runs_of,
    format_value,
    run_labels,
    seed_group,
    with_paper,
)

#: The page ``fedsec run`` writes into every run's output directory.
REPORT_FILE = "report.html"
#: Per-round metrics drawn as curves when present, with their titles.
CURVES = {
    "accuracy": "Test accuracy",
    "asr": "Backdoor attack success rate",
    "targeted_accuracy": "Targeted accuracy (attacker's goal)",
}
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1.5em; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.kept { background: #c7e9c0; } td.dropped { background: #fcbba1; } td.absent { background: #f4f4f4; }
td.attacker { font-weight: bold; outline: 2px solid #000; outline-offset: -3px; }
figure { display: inline-block; margin: 0 1em 1em 0; } figcaption { font-size: 0.9em; }
details { margin: 0.3em 0; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    return _esc(format_value(value))


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, css: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def paper_table_html(
    table: Mapping[str, Mapping[str, Any]], paper: Mapping[str, Mapping[str, float]] | None = None
) -> str:
    columns, rows = with_paper(table, paper)
    return html_table(["", *columns], rows)


def svg_curves(series: Mapping[str, Sequence[tuple[int, float]]], *, title: str) -> str:
    """Line chart (inline SVG) of ``{label: [(round, value in [0, 1])]}``, with axes and a legend."""
    width, height, left, bottom, top, right = 520, 300, 46, 30, 12, 12
    rounds = [x for points in series.values() for x, _ in points]
    last = max(max(rounds, default=1), 1)

    def px(x: float, y: float) -> tuple[float, float]:
        plot_w, plot_h = width - left - right, height - top - bottom
        return left + plot_w * x / last, top + plot_h * (1.0 - max(0.0, min(1.0, y)))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    parts.append(f"<title>{_esc(title)}</title>")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x0, y = px(0, tick)
        x1, _ = px(last, tick)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{tick:g}</text>')
    for rnd in sorted(set(rounds)):
        x, y = px(rnd, 0.0)
        parts.append(f'<text x="{x:.1f}" y="{y + 16:.1f}" font-size="11" text-anchor="middle">{rnd}</text>')
    for index, (label, points) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(f"{px(x, y)[0]:.1f},{px(x, y)[1]:.1f}" for x, y in points)
        parts.append(
            f'<polyline class="curve" fill="none" stroke="{colour}" stroke-width="2" points="{coords}">'
            f"<title>{_esc(label)}</title></polyline>"
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span style="color:{COLOURS[i % len(COLOURS)]}">&#9632;</span> {_esc(label)}&nbsp; '
        for i, label in enumerate(series)
    )
    return f"<figure>{''.join(parts)}<figcaption>{_esc(title)}<br>{legend}</figcaption></figure>"


def _heat(value: float | None, *, good_high: bool) -> str:
    if value is None:
        return '<td class="absent">–</td>'
    badness = 1.0 - value if good_high else value
    hue = 120 * (1.0 - max(0.0, min(1.0, badness)))
    return f'<td style="background:hsl({hue:.0f},70%,78%)">{value:.3f}</td>'


def heatmaps(runs: Sequence[RunEntry]) -> str:
    """Attack × defense heatmaps of final ASR and accuracy, for runs with ``variant`` and ``defense``."""
    finals: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for _, summary, _ in runs:
        config = summary.get("config", {})
        if config.get("variant") and config.get("defense"):
            finals.setdefault((str(config["variant"]), str(config["defense"])), []).append(
                summary.get("final", {})
            )
    if not finals:
        return ""
    cells = {key: _mean_final(records) for key, records in finals.items()}  # several seeds: their mean
    attacks = list(dict.fromkeys(a for a, _ in cells))
    defenses = list(dict.fromkeys(d for _, d in cells))
    parts = ["<h2>Attack × defense</h2>"]
    for metric, title, good_high in (("asr", "final ASR", False), ("accuracy", "final clean accuracy", True)):
        head = "".join(f"<th>{_esc(d)}</th>" for d in defenses)
        rows = "".join(
            f"<tr><td>{_esc(a)}</td>"
            + "".join(_heat((cells.get((a, d)) or {}).get(metric), good_high=good_high) for d in defenses)
            + "</tr>"
            for a in attacks
        )
        parts.append(
            f'<h3>{_esc(title)}</h3><table class="heatmap"><thead><tr><th>attack \\ defense</th>{head}'
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
    return "".join(parts)


def _mean_final(records: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """ASR and accuracy of one grid cell: the mean over its runs (one per seed) that recorded them."""
    out: dict[str, float | None] = {}
    for metric in ("asr", "accuracy"):
        values = [float(r[metric]) for r in records if isinstance(r.get(metric), int | float)]
        out[metric] = sum(values) / len(values) if values else None
    return out


def seed_curves(series: Mapping[str, Sequence[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    """Curves of runs repeated over seeds (labels ``…/seed=S``) as one mean curve per run
    (``… (mean of N seeds)``); other curves as they are."""
    groups: dict[str, list[Sequence[tuple[int, float]]]] = {}
    for label, points in series.items():
        groups.setdefault(seed_group(label), []).append(points)
    out: dict[str, list[tuple[int, float]]] = {}
    for label, members in groups.items():
        if len(members) == 1:
            out[label] = list(members[0])
            continue
        by_round: dict[int, list[float]] = {}
        for points in members:
            for rnd, value in points:
                by_round.setdefault(rnd, []).append(value)
        name = f"{label} (mean of {len(members)} seeds)"
        out[name] = [(rnd, sum(v) / len(v)) for rnd, v in sorted(by_round.items())]
    return out


def attackers_of(summary: Mapping[str, Any]) -> set[str]:
    """Partition ids of the run's malicious clients, from its configuration's ``roles``."""
    from clients import malicious_partitions

    config = summary.get("config") or {}
    try:
        known = RunConfig.keys()
        parsed = RunConfig.from_run_config({k: v for k, v in config.items() if k in known})
        return {str(pid) for pid in malicious_partitions(parsed, parsed.num_clients)}
    except Exception:  # noqa: BLE001 - an old or foreign record: no marks rather than no report
        return set()


def kept_dropped(label: str, summary: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]]) -> str:
    """Per defense, a round × client grid: kept (green), dropped (red), attackers outlined."""
    defenses = list(dict.fromkeys(name for record in metrics for name in (record.get("kept") or {})))
    if not defenses:
        return ""
    attackers = attackers_of(summary)
    parts = [f"<h3>{_esc(label)}: clients kept and dropped</h3>"]
    for defense in defenses:
        clients = sorted(
            {c for r in metrics for c in (r.get("update_stats") or {})}
            | {c for r in metrics for c in (r.get("kept") or {}).get(defense, [])},
            key=lambda c: (len(c), c),
        )
        head = "".join(f"<th>{_esc(c)}</th>" for c in clients)
        rows = []
        for record in metrics:
            if defense not in (record.get("kept") or {}):
                continue
            kept = set(record["kept"][defense])
            present = set(record.get("update_stats") or {}) | kept
            cells = []
            for client in clients:
                state = "kept" if client in kept else "dropped" if client in present else "absent"
                marker = " attacker" if client in attackers else ""
                text = "A" if client in attackers else ""
                cells.append(f'<td class="{state}{marker}" title="{state}">{text}</td>')
            rows.append(f"<tr><td>round {record['round']}</td>{''.join(cells)}</tr>")
        parts.append(
            f'<p>{_esc(defense)} (A: attacker)</p><table class="kept-dropped"><thead><tr><th></th>{head}'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(parts)


def render_html(run_dirs: Sequence[Path]) -> str:
    """The report page for ``run_dirs`` (runs, or sweep/grid directories standing for their runs)."""
    if not run_dirs:
        raise ValueError("give at least one run directory")
    tops: list[dict[str, Any]] = []
    runs: list[RunEntry] = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        if not (path / "summary.json").is_file():
            raise FileNotFoundError(f"{path} has no summary.json (not a finished fedsec run)")
        summary = read_summary(path)
        tops.append(summary)
        prefix = f"{summary.get('scenario', path.name)}/" if _is_sweep(summary) and len(run_dirs) > 1 else ""
        runs += [(prefix + label, s, m) for label, s, m in _runs_of(path, summary)]
    sweeps = any(_is_sweep(s) for s in tops)
    labels = [label for label, _, _ in runs] if sweeps else run_labels([s for _, s, _ in runs])
    title = ", ".join(dict.fromkeys(str(s.get("scenario", "run")) for s in tops))
    body = [f"<h1>fedsec report: {_esc(title)}</h1>", "<h2>Runs</h2>"]
    body.append(
        html_table(
            ["run", "rounds", "final accuracy", "final ASR", "rejected updates", "status", "seconds"],
            [
                [
                    label,
                    s.get("rounds"),
                    (s.get("final") or {}).get("accuracy"),
                    (s.get("final") or {}).get("asr"),
                    s.get("rejected_updates", 0),
                    s.get("status", "completed"),
                    s.get("seconds"),
                ]
                for label, (_, s, _) in zip(labels, runs, strict=True)
            ],
            css="runs",
        )
    )
    body.append("<h2>Per round</h2>")
    for metric, caption in CURVES.items():
        series = {
            label: [(int(r["round"]), float(r[metric])) for r in m if r.get(metric) is not None]
            for label, (_, _, m) in zip(labels, runs, strict=True)
        }
        series = seed_curves({label: points for label, points in series.items() if points})
        if series:
            body.append(svg_curves(series, title=caption))
    body.append(heatmaps(runs))
    for label, summary in zip(run_labels(tops), tops, strict=True):
        paper = summary.get("paper") or {}
        for name, table in (summary.get("tables") or {}).items():
            body.append(f"<h2>{_esc(name)}{f' ({_esc(label)})' if len(tops) > 1 else ''}</h2>")
            body.append(paper_table_html(table, paper.get(name)))
    filtering = [kept_dropped(label, s, m) for label, (_, s, m) in zip(labels, runs, strict=True)]
    if any(filtering):
        body.append("<h2>What the defenses kept</h2>" + "".join(filtering))
    body.append("<h2>Configuration</h2>")
    for label, (_, summary, _) in zip(labels, runs, strict=True):
        config = summary.get("config") or {}
        body.append(
            f"<details><summary>{_esc(label)}</summary>"
            + html_table(["key", "value"], sorted(config.items()), css="config")
            + "</details>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>fedsec report: {_esc(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_html(run_dirs: Sequence[Path], out: Path) -> Path:
    """Write :func:`render_html` of ``run_dirs`` to ``out`` (a ``.html`` file); return it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(run_dirs), encoding="utf-8")
    return out
