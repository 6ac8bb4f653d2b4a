"""Section 5, scale: 1000 simulated clients with a fraction sampled per round, and the largest
federation that completes its rounds here with ``fraction-fit = 0.1``.

The search runs ever larger federations (``BenchPlan.scale_search``) until one does not complete its
rounds within ``BenchPlan.scale_search_seconds``; its rows say where the time went (start-up; round 1,
which includes fedsec asking every node its partition id once; the steady rounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from fedsec.errors import DataUnavailableError
from simulations.bench.common import Context, rounded
from simulations.bench.memory import SimulationResult, sim_config, simulate
from simulations.launcher import RUN_TIMEOUT

#: Training examples a client needs at least for a search size to be run (else it is data-bound).
MIN_EXAMPLES_PER_CLIENT = 2
#: Datasets the search may use, largest first: the first that loads is used.
SEARCH_DATASETS = ("fashion-mnist", "mnist-5k")


def scale_row(
    clients: int, fraction: float, rounds: int, dataset: str, result: SimulationResult
) -> dict[str, Any]:
    """A row of the scale section from one simulation of ``clients`` clients."""
    return {
        "clients": clients,
        "fraction_fit": fraction,
        "clients_per_round": max(1, math.ceil(fraction * clients)),
        "dataset": dataset,
        "rounds": rounds,
        "completed": result.status == "finished:completed" and result.rounds == rounds,
        "peak_rss_mb": result.memory["peak_rss_mb"],
        "peak_pss_mb": result.memory["peak_pss_mb"],
        "actors": result.memory["actors"],
        "startup_s": rounded(result.startup_seconds, 2),
        "round1_s": rounded(result.round1_seconds, 2),
        "s_per_round": rounded(result.round_seconds, 2),
        "total_s": round(result.total_seconds, 1),
        "status": result.status,
    }


def search(
    sizes: Sequence[int], run: Callable[[int], dict[str, Any]], *, train_examples: int
) -> list[dict[str, Any]]:
    """Run each of ``sizes`` (ascending) until one does not complete; sizes that would leave a client
    fewer than :data:`MIN_EXAMPLES_PER_CLIENT` training examples are not run (data-bound)."""
    rows: list[dict[str, Any]] = []
    for clients in sorted(sizes):
        if train_examples < MIN_EXAMPLES_PER_CLIENT * clients:
            rows.append(
                {
                    "clients": clients,
                    "search": True,
                    "completed": False,
                    "status": f"not run: data-bound ({train_examples} training examples, fewer than "
                    f"{MIN_EXAMPLES_PER_CLIENT} per client)",
                }
            )
            break
        row = {**run(clients), "search": True}
        rows.append(row)
        if not row["completed"]:
            break
    return rows


def search_dataset() -> tuple[str, int]:
    """The largest installed dataset of :data:`SEARCH_DATASETS` and its number of training examples."""
    from fedsec.data.datasets import load_dataset

    for name in SEARCH_DATASETS:
        try:
            bundle = load_dataset(name)
        except DataUnavailableError:
            continue
        return name, len(bundle.train.y)
    raise DataUnavailableError(f"none of {', '.join(SEARCH_DATASETS)} is installed")


def largest_completed(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The search row of the most clients that completed its rounds (``None``: none did)."""
    done = [row for row in rows if row.get("search") and row.get("completed")]
    return max(done, key=lambda row: row["clients"]) if done else None


def bench_scale(ctx: Context) -> list[dict[str, Any]]:
    """Section 5: 1000 clients with a fraction sampled per round, then the search."""
    plan = ctx.plan
    rows: list[dict[str, Any]] = []
    if not plan.scale_fractions:
        return [
            {
                "clients": plan.scale_clients,
                "fraction_fit": None,
                "status": "skipped (quick mode; run `fedsec bench` without --quick)",
            }
        ]

    def simulate_size(
        clients: int, fraction: float, rounds: int, dataset: str, timeout: float
    ) -> dict[str, Any]:
        config = sim_config(
            ctx,
            f"scale-{clients}-{fraction:g}",
            {
                "model": "lenet",
                "dataset": dataset,
                "num-clients": clients,
                "fraction-fit": fraction,
                "num-server-rounds": rounds,
            },
        )
        ctx.say(f"scale: flwr run, {clients} clients ({dataset}), {fraction:.0%} per round, {rounds} rounds")
        return scale_row(clients, fraction, rounds, dataset, simulate(config, timeout=timeout))

    for fraction in plan.scale_fractions:
        rows.append(simulate_size(plan.scale_clients, fraction, plan.scale_rounds, "mnist-5k", RUN_TIMEOUT))
    if plan.scale_search:
        dataset, examples = search_dataset()
        rows += search(
            plan.scale_search,
            lambda clients: simulate_size(
                clients,
                plan.scale_search_fraction,
                plan.scale_search_rounds,
                dataset,
                plan.scale_search_seconds,
            ),
            train_examples=examples,
        )
    return rows
