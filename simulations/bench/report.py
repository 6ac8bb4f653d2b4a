"""The bench's tables: one per section, printed with rich and written as Markdown (``bench.md``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["COLUMNS", "FALLBACK", "TITLES", "cell", "markdown", "print_tables"]

#: Columns shown per section: (key, header, format).
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "simulation": [
        ("model", "model", "s"),
        ("clients", "N", "d"),
        ("rounds", "rounds", "d"),
        ("local_epochs", "epochs", "d"),
        ("floor_2thread_s", "floor 2-thread seq. s", ".2f"),
        ("floor_1thread_s", "floor 1-thread seq. s", ".2f"),
        ("floor_s", "floor s/round", ".2f"),
        ("client_build_s", "client build s", ".2f"),
        ("superlink_start_s", "SuperLink start s", ".1f"),
        ("startup_s", "submit→round 0 s", ".1f"),
        ("round1_s", "round 1 s", ".2f"),
        ("round_s", "round s", ".2f"),
        ("ratio", "ratio", ".2f"),
        ("ratio_vs_2thread", "ratio vs 2-thread seq.", ".2f"),
        ("actor_fit_s", "fit() s/actor", ".2f"),
        ("floor_actor_train_s", "floor fit s/actor", ".2f"),
        ("outside_fit_s", "outside fit() s", ".2f"),
        ("engine_round_s", "empty-app round s", ".2f"),
        ("ratio_bound", "floor + empty round, ratio", ".2f"),
        ("rest_s", "rest s", ".2f"),
        ("cli_poll_cpu_s", "poll CPU s", ".0f"),
        ("status", "status", "s"),
    ],
    "startup": [
        ("mode", "runs", "s"),
        ("runs", "N", "d"),
        ("first_startup_s", "first run: start→round 0 s", ".1f"),
        ("extra_startup_s", "each extra run s", ".1f"),
        ("total_s", "all runs s", ".1f"),
        ("status", "status", "s"),
    ],
    "aggregation": [
        ("model", "model", "s"),
        ("clients", "clients", "d"),
        ("threads", "threads", "d"),
        ("strategy", "strategy", "s"),
        ("ms", "fedsec ms", ".1f"),
        ("floor_ms", "floor ms", ".1f"),
        ("floor_ratio", "x floor", ".2f"),
        ("flower_ms", "Flower ms", ".1f"),
        ("byzfl_ms", "ByzFL ms", ".1f"),
        ("reference_ms", "Flower FedAvg ms", ".1f"),
        ("ratio", "x FedAvg", ".2f"),
        ("added_pct_of_round", "+% of round", ".2f"),
        ("added_pct_of_own_round", "+% of its N's round", ".2f"),
        ("status", "status", "s"),
    ],
    "attacks": [
        ("attack", "attack", "s"),
        ("images", "images", "d"),
        ("per_100_s", "fedsec s/100", ".3f"),
        ("reference", "reference", "s"),
        ("reference_per_100_s", "reference s/100", ".3f"),
        ("ratio", "ratio", ".2f"),
        ("status", "status", "s"),
        ("note", "note", "s"),
    ],
    "memory": [
        ("model", "model", "s"),
        ("clients", "clients", "d"),
        ("peak_rss_mb", "peak RSS MB", ".0f"),
        ("peak_pss_mb", "peak PSS MB", ".0f"),
        ("processes", "processes", "d"),
        ("actors", "actors", "d"),
        ("actor_rss_mb", "RSS/actor MB", ".0f"),
        ("actor_pss_mb", "PSS/actor MB", ".0f"),
        ("server_rss_mb", "ServerApp MB", ".0f"),
        ("status", "status", "s"),
    ],
    "imports": [
        ("step", "step", "s"),
        ("statement", "statement", "s"),
        ("rss_mb", "RSS MB", ".0f"),
        ("added_mb", "+MB", ".0f"),
        ("seconds", "import s", ".2f"),
        ("cuda_mb", "CUDA libraries MB", ".0f"),
        ("loaded", "libraries it loaded", "s"),
        ("status", "status", "s"),
    ],
    "scale": [
        ("clients", "clients", "d"),
        ("fraction_fit", "fraction", ".2f"),
        ("clients_per_round", "per round", "d"),
        ("dataset", "dataset", "s"),
        ("rounds", "rounds", "d"),
        ("completed", "completed", "s"),
        ("peak_rss_mb", "peak RSS MB", ".0f"),
        ("startup_s", "startup s", ".1f"),
        ("round1_s", "round 1 s", ".1f"),
        ("s_per_round", "s/round", ".2f"),
        ("status", "status", "s"),
    ],
}

#: A column whose value is missing shows this other key's text instead (why a peer was not timed:
#: "ByzFL not installed (pip install -e .[bench]; make installs it)", "skipped (budget; ...)", "failed: ...").
FALLBACK = {"flower_ms": "flower_status", "byzfl_ms": "byzfl_status"}

TITLES = {
    "simulation": "1. simulation overhead: flwr run (Ray) vs in-process compute floor, per round",
    "startup": "1b. start-up per run: alone vs one shared SuperLink + Ray head",
    "aggregation": "2. aggregation and defense cost per aggregate_train (synthetic updates): "
    "fedsec vs its numpy floor, Flower and ByzFL",
    "attacks": "3. attack generation, seconds per 100 images (LeNet-5, MNIST-5k)",
    "memory": "4. memory of a simulation",
    "imports": "4b. what a client process imports: RSS of a fresh interpreter after each step (cumulative)",
    "scale": "5. scale: 1000 simulated clients, then ever larger federations at 10% per round",
}


def cell(row: dict[str, Any], key: str, fmt: str) -> str:
    """The text of ``row[key]`` in format ``fmt`` ("–" if missing; its :data:`FALLBACK` text if any)."""
    value = row.get(key)
    if value is None:
        fallback = row.get(FALLBACK.get(key, ""))
        return str(fallback) if fallback is not None and fallback != "ok" else "–"
    if fmt == "s" or isinstance(value, str | bool):
        return str(value)
    if fmt == "d":
        return str(int(value))
    return format(float(value), fmt)


def print_tables(console: Console, document: dict[str, Any]) -> None:
    """Print one rich table per section and the notes (wide when the output is not a terminal)."""
    if not console.is_terminal:  # a file or pipe: don't squeeze the tables into 80 columns
        console = Console(file=console.file, width=max(console.width, 250), highlight=False)
    for name, columns in COLUMNS.items():
        table = Table(title=TITLES[name], title_justify="left")
        for _, header, fmt in columns:
            table.add_column(header, justify="left" if fmt == "s" else "right")
        for row in document["sections"].get(name, []):
            table.add_row(*(cell(row, key, fmt) for key, _, fmt in columns))
        console.print(table)
    console.print("[bold]notes[/bold]")
    for note in document["notes"]:
        console.print(f"- {note}", markup=False)


def cores_text(machine: dict[str, Any]) -> str:
    """``"2 cores (AMD EPYC)"``: the cores and CPU a bench record was measured on."""
    return f"{machine['cores']} cores ({machine['cpu']})"


def markdown(document: dict[str, Any]) -> str:
    """The tables and notes in Markdown, headed by the date and the machine (for the README)."""
    m = document["machine"]
    gpu = "a GPU" if m["gpu"] else "no GPU"
    byzfl = f", ByzFL {m['byzfl']}" if m.get("byzfl") else ", ByzFL not installed"
    text = [
        f"Benchmark of {document['date']} ({'quick' if document['quick'] else 'full'} run, "
        f"{document['wall_seconds']} s): {cores_text(m)}, {gpu}, {m['memory_gb']} GB; "
        f"Python {m['python']}, torch {m['torch']}, flwr {m['flwr']}, ray {m['ray']}, ART {m['art']}"
        f"{byzfl}.",
        "",
    ]
    for name, columns in COLUMNS.items():
        rows = document["sections"].get(name, [])
        if not rows:  # a section left out (--sections): its notes say so
            continue
        text += [f"**{TITLES[name]}**", ""]
        text.append("| " + " | ".join(header for _, header, _ in columns) + " |")
        text.append("|" + "|".join(":--" if fmt == "s" else "--:" for _, _, fmt in columns) + "|")
        for row in rows:
            text.append("| " + " | ".join(cell(row, key, fmt) for key, _, fmt in columns) + " |")
        text.append("")
    text += ["Notes:", "", *(f"- {note}" for note in document["notes"]), ""]
    return "\n".join(text)
