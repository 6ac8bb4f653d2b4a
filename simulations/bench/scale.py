"""Section 5, scale: 1000 simulated clients with a fraction of them sampled per round."""

from __future__ import annotations

import math
from typing import Any

from simulations.bench.common import Context, rounded
from simulations.bench.memory import sim_config, simulate


def bench_scale(ctx: Context) -> list[dict[str, Any]]:
    """Section 5: 1000 clients with a fraction sampled per round."""
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
    for fraction in plan.scale_fractions:
        config = sim_config(
            ctx,
            f"scale-{plan.scale_clients}-{fraction:g}",
            {
                "model": "lenet",
                "num-clients": plan.scale_clients,
                "fraction-fit": fraction,
                "num-server-rounds": plan.scale_rounds,
            },
        )
        ctx.say(
            f"scale: flwr run, {plan.scale_clients} clients, {fraction:.0%} per round, "
            f"{plan.scale_rounds} rounds"
        )
        result = simulate(config)
        rows.append(
            {
                "clients": plan.scale_clients,
                "fraction_fit": fraction,
                "clients_per_round": max(1, math.ceil(fraction * plan.scale_clients)),
                "rounds": plan.scale_rounds,
                "completed": result.status == "finished:completed" and result.rounds == plan.scale_rounds,
                "peak_rss_mb": result.memory["peak_rss_mb"],
                "peak_pss_mb": result.memory["peak_pss_mb"],
                "actors": result.memory["actors"],
                "startup_s": rounded(result.startup_seconds, 2),
                "round1_s": rounded(result.round1_seconds, 2),
                "s_per_round": rounded(result.round_seconds, 2),
                "total_s": round(result.total_seconds, 1),
                "status": result.status,
            }
        )
    return rows
