"""The notes under the bench's tables: what each figure compares, and what the measurements say."""

from __future__ import annotations

from typing import Any

from simulations.bench.common import BenchPlan
from simulations.bench.floors import STEP_TEXT
from simulations.bench.peers import NOT_INSTALLED
from simulations.bench.scale import largest_completed


def findings(sections: dict[str, list[dict[str, Any]]], plan: BenchPlan) -> list[str]:
    """The notes under the tables: what each figure compares, the largest overheads and their remedies."""
    notes = [
        "simulation: the floor is the same round done in this process (every client's fit(), FedAvg, "
        "the server's evaluation), the faster of: clients one after the other with torch's default "
        "threads, or with 1 thread each and ideally two at a time (1-thread sequential time / 2, how the "
        "simulation's 2 single-threaded Ray actors share the 2 cores; in quick mode timed on 2 clients "
        "and scaled). ratio = steady simulation round / floor; round 1 (actor warm-up) and startup are "
        "reported apart. With other load on the machine torch's 2-thread kernels slow down far more "
        "than 1-thread ones, hence both floors.",
    ]
    if plan.local_epochs is not None:
        notes.append(
            f"quick mode trains {plan.local_epochs} local epoch(s) per round "
            "(the full run uses the scenario's 2)."
        )
    notes += startup_findings(sections.get("startup", []))
    for row in sections["simulation"]:
        if row.get("round_s") is None or row.get("floor_s") is None:
            continue
        gap = row["round_s"] - row["floor_s"]
        cell = f"{row['model']} x{row['clients']}"
        note = (
            f"overhead, simulation {cell}: steady round {row['round_s']:.2f}s vs floor {row['floor_s']:.2f}s "
            f"({row.get('floor_kind') or 'in process'}; ratio {row['ratio']:.2f}, {gap:+.2f}s a round)."
        )
        if row.get("actor_fit_s") is not None:
            note += (
                f" Each of the {row['actors']} Ray actors spent {row['actor_fit_s']:.2f}s of the round in "
                f"its clients' fit() (in process, one thread: {row['floor_actor_train_s']:.2f}s), so "
                f"{row['outside_fit_s']:.2f}s a round is outside fit(): Flower's engine handing the messages "
                "to the actors (it looks for new ones every 0.1 s) and the replies back, the ClientApp's "
                f"per-message work (building the clients: {row['client_build_s']:.2f} CPU-s a round), the "
                "guard, the aggregation and the server's evaluation."
            )
        if row.get("engine_round_s") is not None:
            note += (
                f" Flower's engine alone (an empty app: Flower's FedAvg, clients that send back what they "
                f"receive, the same nodes and array size) takes {row['engine_round_s']:.2f}s a round, so on "
                f"this engine a round can come no nearer than {row['ratio_bound']:.2f}x its floor"
            )
            if row.get("rest_s") is not None:
                note += (
                    f"; beyond its actors' fit() and the engine's round, fedsec's round spends "
                    f"{row['rest_s']:.2f}s (building the clients, the guard, the aggregation, the "
                    "evaluation, the checkpoint, the actors' uneven shares)"
                )
            note += "."
        note += (
            f" The launcher asked Flower for the run's status {row['cli_polls']} times "
            f"({row['cli_poll_cpu_s']:.0f} CPU-s), only while no round record was arriving."
        )
        notes.append(note)
        notes.append(
            f"overhead, startup {cell}: {row['superlink_start_s']:.1f}s to start the SuperLink, "
            f"{row['startup_s']:.1f}s from `flwr run` to round 0 (Ray start, ServerApp import, data) and "
            f"round 1 at {row['round1_s']:.1f}s ({row['round1_s'] - row['round_s']:+.1f}s over a steady "
            "round: the actors start, import torch and flwr, and load the dataset). A SuperLink and Ray "
            "kept running across runs (sweeps, benchmarks) would pay this once."
        )
    notes += aggregation_findings(sections["aggregation"], plan)
    for row in sections["attacks"]:
        if row["ratio"] is not None and row["reference"] == "plain batched torch":
            notes.append(
                f"attacks {row['attack']}: fedsec (ART) {row['per_100_s']:.3f}s per 100 images vs plain "
                f"batched torch {row['reference_per_100_s']:.3f}s ({row['ratio']:.2f}x)."
            )
    for row in sections["memory"]:
        if row.get("actor_rss_mb"):
            notes.append(
                f"memory {row['model']} x{row['clients']}: peak {row['peak_rss_mb']:.0f} MB RSS summed over "
                f"{row['processes']} processes ({row['peak_pss_mb']:.0f} MB PSS, shared pages counted once); "
                f"each of {row['actors']} Ray actors {row['actor_rss_mb']:.0f} MB RSS / "
                f"{row['actor_pss_mb']:.0f} MB PSS; the ServerApp process "
                f"{row['server_rss_mb'] or 0:.0f} MB, Ray's own processes "
                f"{row['ray_other_rss_mb'] or 0:.0f} MB."
            )
    notes += import_findings(sections.get("imports", []))
    notes += scale_findings(sections.get("scale", []), plan)
    return notes


def scale_findings(rows: list[dict[str, Any]], plan: BenchPlan) -> list[str]:
    """The scale section's notes: what its clients hold, and the largest federation that completed."""
    if not rows or rows[0].get("fraction_fit") is None:
        return []
    notes = [
        "scale: MNIST-5k leaves 3800 training examples, so 1000 clients hold 3-4 examples each; "
        "the figures measure orchestration cost, not learning. Round 1 includes fedsec asking every "
        "node its partition id once (one query message per node), which seeded sampling needs."
    ]
    searched = [row for row in rows if row.get("search")]
    if not searched:
        return notes
    best = largest_completed(searched)
    stop = searched[-1]
    done = (
        f"{best['clients']} clients ({best['dataset']}) completed {best['rounds']} rounds at "
        f"{best['s_per_round']} s per steady round (round 1 {best['round1_s']} s, start-up "
        f"{best['startup_s']} s, peak RSS {best['peak_rss_mb']:.0f} MB)"
        if best
        else "no size completed"
    )
    after = (
        f"; {stop['clients']} clients did not: {stop['status']}"
        if not stop.get("completed")
        else " (the largest size tried)"
    )
    notes.append(
        f"scale search: the largest federation with fraction-fit {plan.scale_search_fraction:g} that "
        f"completed its rounds within {plan.scale_search_seconds:.0f} s per run here: {done}{after}."
    )
    return notes


def aggregation_findings(rows: list[dict[str, Any]], plan: BenchPlan) -> list[str]:
    """Notes on the aggregation section: what floors and peers contain, and the largest ratios."""
    if not rows:
        return []
    notes = [
        "aggregation: seconds per aggregate_train on seeded synthetic updates, median of repeats, fresh "
        "copies of the replies for every call; fedsec's strategies run inside the update guard, Flower's "
        "unguarded. The floor of a defense is the sum of the steps it cannot avoid: "
        + "; ".join(f"{step}: {text}" for step, text in STEP_TEXT.items())
        + ". ByzFL's cell includes decoding the replies into its (n, d) matrix and the result back into "
        "an ArrayRecord; it gets f + 1 for Krum and Multi-Krum (its Krum scores n - f - 1 neighbours, "
        "Blanchard et al.'s n - f - 2) and averages unweighted; fedsec's and Flower's Multi-Krum keep "
        "n - f - 1, so all three compute the same rule. Threads: BLAS, OpenMP and torch limited to the "
        "row's count (threadpoolctl, torch.set_num_threads).",
    ]
    measured = [r for r in rows if r["ms"] is not None and r["floor_ratio"] is not None]
    for model, n in sorted({(r["model"], r["clients"]) for r in measured if r["threads"] == 1}):
        cell = [r for r in measured if r["model"] == model and r["clients"] == n and r["threads"] == 1]
        worst = max(cell, key=lambda r: r["floor_ratio"])
        within = sum(1 for r in cell if r["floor_ratio"] <= 2.0)
        notes.append(
            f"aggregation {model} x{n}, 1 thread: {within} of {len(cell)} defenses within 2x of their "
            f"floor; the largest ratio is {worst['strategy'].removesuffix('+guard')} at "
            f"{worst['floor_ratio']:.2f}x ({worst['ms']:.0f} ms vs {worst['floor_ms']:.0f} ms)."
        )
    for threads in (1, 2):
        shares = [
            r
            for r in rows
            if (r["model"], r["clients"], r["threads"]) == ("cnn", 100, threads)
            and r["added_pct_of_round"] is not None
            and r["strategy"] != "flower-fedavg"
        ]
        if shares:
            notes.append(share_note(shares, threads))
    if any(r.get("byzfl_status") == NOT_INSTALLED for r in rows):
        notes.append(f"aggregation: {NOT_INSTALLED}; its cells are empty.")
    if any(str(r["status"]).startswith("skipped") for r in rows):
        notes.append(
            "aggregation: a skipped (budget) cell was predicted from the previous client count "
            "(n² for the pairwise rules, n³ for Flower's Bulyan, n^1.2 for the coordinate-wise rules, n "
            f"otherwise) to exceed the per-cell budget of {plan.agg_cell_seconds:.0f}s."
        )
    return notes


def startup_findings(rows: list[dict[str, Any]]) -> list[str]:
    """What sharing one SuperLink and one Ray head saves a sweep, from the start-up rows."""
    by_mode = {row.get("mode"): row for row in rows}
    alone, shared = by_mode.get("alone"), by_mode.get("shared")
    if not alone or not shared or None in (alone.get("extra_startup_s"), shared.get("extra_startup_s")):
        return []
    return [
        f"start-up: a run alone takes {alone['extra_startup_s']:.1f}s from start to its round-0 record; "
        f"in a shared federation the first run takes {shared['first_startup_s']:.1f}s (it starts the "
        f"Ray head and the SuperLink) and each extra run {shared['extra_startup_s']:.1f}s (Flower still "
        f"creates the client actors per run). {shared['runs']} runs: {alone['total_s']:.0f}s alone, "
        f"{shared['total_s']:.0f}s shared."
    ]


def share_note(shares: list[dict[str, Any]], threads: int) -> str:
    """What each defense adds to the 10-client cnn round at 100 clients, and, past 10%, what its floor
    alone would add (a defense whose floor alone passes 10% cannot meet it by being faster); then the
    same against the simulated 100-client cnn round, where the simulation section ran one."""

    def listed(rows: list[dict[str, Any]], suffix: str) -> str:
        def one(row: dict[str, Any]) -> str:
            added = row[f"added_pct_of{suffix}_round"]
            text = f"{row['strategy'].removesuffix('+guard')} {added:+.1f}%"
            floor = row.get(f"floor_added_pct_of{suffix}_round")
            if added > 10.0 and floor is not None:
                text += f" (its floor alone {floor:+.1f}%)"
            return text

        ordered = sorted(rows, key=lambda r: -r[f"added_pct_of{suffix}_round"])
        within = sum(1 for r in rows if r[f"added_pct_of{suffix}_round"] <= 10.0)
        return (
            f"{', '.join(one(r) for r in ordered)} over Flower's FedAvg; {within} of {len(rows)} add at "
            "most 10%."
        )

    note = (
        f"aggregation cnn x100, {threads} thread(s), share of a round ({shares[0]['round_s']:.2f}s, the "
        f"10-client cnn round): {listed(shares, '')}"
    )
    own = [r for r in shares if r.get("added_pct_of_own_round") is not None]
    if own:
        note += (
            f" Share of the simulated round at 100 cnn clients ({own[0]['own_round_s']:.2f}s: the same "
            f"data as the 10-client round, a hundredth of it on each client): {listed(own, '_own')}"
        )
    return note


def import_findings(rows: list[dict[str, Any]]) -> list[str]:
    """The note on section 4b: what every client process holds (the steps not marked ``+``), the
    largest step, and what the libraries imported on first use (``+``) would add if imported eagerly."""
    if not rows or any(row.get("rss_mb") is None for row in rows):
        return []
    every = [row for row in rows if not row["step"].startswith("+ ")]
    later = [row for row in rows if row["step"].startswith("+ ")]
    client = every[-1]
    largest = max((row for row in rows if row.get("added_mb") is not None), key=lambda row: row["added_mb"])
    note = (
        f"imports: every client process holds {client['rss_mb']:.0f} MB after "
        f"{', '.join(row['step'] for row in every[1:])}; the largest step is {largest['step']} "
        f"(+{largest['added_mb']:.0f} MB"
    )
    if largest["cuda_mb"]:
        note += (
            f"; {largest['cuda_mb']:.0f} MB resident in CUDA libraries after it, mapped whether or not "
            "there is a GPU"
        )
    note += ")."
    if later:
        names = ", ".join(row["step"].removeprefix("+ ") for row in later)
        note += (
            f" The libraries only some roles import, on first use ({names}), add "
            f"{later[-1]['rss_mb'] - client['rss_mb']:.0f} MB: a client importing them all eagerly would "
            f"hold {later[-1]['rss_mb']:.0f} MB."
        )
    return [note]
