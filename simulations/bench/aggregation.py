"""Section 2, aggregation: every defense and robust aggregator against its floor and its peers.

For each model and number of clients ``n`` the bench builds one set of seeded
synthetic replies (the global model plus small noise, as Flower's train
replies) and times on fresh copies of them, per thread count: fedsec's strategy
(inside the update guard, as runs use it), its floor (:mod:`~simulations.bench.floors`),
Flower's version and ByzFL's (:mod:`~simulations.bench.peers`), and Flower's
unguarded FedAvg as the reference a defense's added cost is taken against.
Every timed call is ``aggregate_train`` (or ByzFL's decode + aggregate), median
of up to ``agg_repeat`` calls that fit the cell budget; a call predicted from
the previous size to exceed the budget is skipped and says so.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import Strategy

from fedsec.bench import predict_seconds, ratio
from fedsec.config import RunConfig
from simulations.bench import floors, peers
from simulations.bench.common import Context, rounded, thread_limit, time_cell
from simulations.bench.replies import bench_grid, fresh_replies, model_weights, synthetic_replies

#: How aggregation time grows with the number of clients n, for predicting what fits the budget:
#: Krum's pairwise distances are O(n²·d), Flower's Bulyan repeats Krum n-2f times (O(n³·d)), the
#: median and trimmed mean sort the stacked (n, d) updates (superlinear in practice); the rest O(n·d).
GROWTH = {
    "krum": 2.0,
    "multikrum": 2.0,
    "bulyan": 2.0,
    "flower-bulyan": 3.0,
    "fedmedian": 1.2,
    "fedtrimmedavg": 1.2,
    "layered": 2.0,
    "flame": 2.0,
    "foolsgold": 2.0,
    "detectors": 2.0,
}
#: Seconds of a first call that no smaller size predicts: the GAN audit trains a GAN every round,
#: whatever the number of clients (docs/benchmarks.md).
FIRST_GUESS = {("gan-audit", "lenet"): 2.5, ("gan-audit", "cnn"): 12.0}
#: Bench labels that are a registered strategy with extra config (wrappers such as the detectors).
WRAPPED: dict[str, dict[str, str | int | float]] = {
    "detectors": {
        "strategy": "fedavg",
        "detectors": "l2,cosine",
        "l2-ratio-threshold": 3.0,
        "cosine-gap": 0.5,
    },
    # PDGAN as in pdgan-mnist, auditing from round 1: GAN training on the auxiliary digits 0 and 4,
    # the audit set, and every client model's predictions on it.
    "gan-audit": {
        "strategy": "fedavg",
        "audit": "gan",
        "audit-start-round": 1,
        "auxiliary-size": 500,
        "auxiliary-classes": "0,4",
        "audit-size": 200,
        "gan-steps": 100,
    },
}
FAILED = "failed (aggregate_train returned no model; see the log)"


def defenses() -> list[str]:
    """Every fedsec defense and aggregator the bench times: the registry (less Flower's own) and WRAPPED."""
    from strategies import STRATEGIES

    return [name for name in STRATEGIES if not name.startswith("flower-")] + list(WRAPPED)


def assumed_malicious(n: int) -> int:
    """``f`` for ``n`` clients: a fifth of them, at most what Bulyan allows (``n >= 4f + 3``)."""
    return max(0, min(n // 5, (n - 3) // 4))


def bench_config(name: str, n: int, model: str) -> RunConfig:
    """The config a strategy is built from: ``n`` clients of ``model``, :func:`assumed_malicious` of them
    assumed Byzantine, Multi-Krum keeping ``n − f − 1`` (the rule ByzFL's MultiKrum(f + 1) computes)."""
    f = assumed_malicious(n)
    values = {"strategy": name, **WRAPPED.get(name, {}), "num-clients": n, "model": model}
    return RunConfig.from_run_config({**values, "num-malicious-clients": f, "multikrum-keep": n - f - 1})


def ready_strategy(name: str, n: int, initial: list[np.ndarray], *, model: str) -> Strategy:
    """``build_strategy`` for ``name`` at ``n`` clients of ``model``, after ``configure_train`` of round 1.

    ``configure_train`` is what teaches the guard the model layout and gives FDA³ the
    arrays its Adam step starts from, as in a real round.  ``model`` must be the
    architecture of ``initial``: defenses that evaluate client models (the GAN audit)
    build it.
    """
    from strategies import build_strategy

    strategy = build_strategy(bench_config(name, n, model), initial_arrays=initial)
    list(strategy.configure_train(1, ArrayRecord(initial), ConfigRecord(), bench_grid(n)))
    return strategy


def flower_fedavg(n: int, initial: list[np.ndarray]) -> Strategy:
    """Flower's own FedAvg with the arguments fedsec gives it, without the guard (the reference)."""
    return peers.flower_strategy(
        "flower-fedavg", bench_config("flower-fedavg", n, "lenet"), initial, bench_grid(n)
    )


@dataclass(frozen=True)
class Timing:
    """One timed implementation in a cell: median seconds (None if not run), calls, status, prediction."""

    seconds: float | None
    repeats: int = 0
    status: str = "ok"
    predicted: float | None = None

    @property
    def ms(self) -> float | None:
        return None if self.seconds is None else self.seconds * 1000


@dataclass
class Cell:
    """One (model, n, threads) cell: its replies and the sizes measured so far (for predictions)."""

    ctx: Context
    model: str
    n: int
    threads: int
    replies: list[Message]
    initial: list[np.ndarray]
    last: dict[str, tuple[int, float]]  # "name@threads" -> (n, seconds) at its last measured size

    def time(self, name: str, make: Callable[[], Callable[[], bool]], *, growth: str | None = None) -> Timing:
        """Time ``make()``'s call (True: it produced a model) unless predicted to exceed the budget."""
        plan, key = self.ctx.plan, f"{name}@{self.threads}"
        label = growth or name
        if key in self.last:
            size, seconds = self.last[key]
            predicted = predict_seconds(seconds, size, self.n, exponent=GROWTH.get(label, 1.0))
        else:
            predicted = FIRST_GUESS.get((label, self.model), 0.0)
        if predicted > plan.agg_cell_seconds or not self.ctx.budget.allows(predicted):
            return Timing(None, status=f"skipped (budget; ~{predicted:.0f}s predicted)", predicted=predicted)
        try:
            call = make()
            outcomes: list[bool] = []
            seconds, count = time_cell(
                lambda: outcomes.append(call()), repeat=plan.agg_repeat, cell_seconds=plan.agg_cell_seconds
            )
        except (
            ValueError,
            RuntimeError,
            TypeError,
        ) as error:  # a peer's own limits (ByzFL's 2f < n, Bulyan's n >= 4f + 3)
            return Timing(None, status=f"failed: {type(error).__name__}: {error}"[:200], predicted=predicted)
        self.last[key] = (self.n, seconds)
        # A strategy that kept the previous model (the guard caught an error) did not do its work.
        return Timing(seconds, count, "ok" if all(outcomes) else FAILED, predicted)

    def strategy_call(self, build: Callable[[], Strategy]) -> Callable[[], Callable[[], bool]]:
        def make() -> Callable[[], bool]:
            strategy = build()
            # One untimed round first: stateful defenses allocate their state in their first round
            # (FoolsGold's (clients, d) history, FDA³'s Adam moments); the timed calls are the rounds
            # after it, which every run but its first round pays.
            strategy.aggregate_train(1, fresh_replies(self.replies))
            return lambda: strategy.aggregate_train(1, fresh_replies(self.replies))[0] is not None

        return make


def bench_aggregation(ctx: Context) -> list[dict[str, Any]]:
    """Section 2: each defense by model, clients and threads, against its floor, Flower and ByzFL."""
    plan = ctx.plan
    labels = list(plan.agg_strategies or defenses())
    rows: list[dict[str, Any]] = []
    for model_name, sizes in plan.agg_sizes.items():
        weights = model_weights(model_name)
        last: dict[str, tuple[int, float]] = {}
        for n in sizes:
            threads = (1, 2) if (model_name, n) in plan.agg_two_thread_cells else (1,)
            rows += _aggregation_at(ctx, model_name, weights, n, labels, last, threads=threads)
            gc.collect()
    return rows


def _aggregation_at(
    ctx: Context,
    model_name: str,
    weights: list[np.ndarray],
    n: int,
    labels: Sequence[str],
    last: dict[str, tuple[int, float]],
    *,
    threads: Sequence[int] = (1,),
) -> list[dict[str, Any]]:
    """The rows of one (model, n): each label timed on the same synthetic updates per thread count."""
    params = int(sum(w.size for w in weights))
    if not ctx.budget.allows(5.0):
        return [
            _agg_row(model_name, params, n, label, threads=t, status="skipped (budget)")
            for t in threads
            for label in ["flower-fedavg", *labels]
        ]
    replies = synthetic_replies(weights, n, seed=n)
    rows = []
    for t in threads:
        ctx.say(f"aggregation: {model_name} ({params:,} parameters), {n} clients, {t} thread(s)")
        cell = Cell(ctx, model_name, n, t, replies, list(weights), last)
        with thread_limit(t):
            rows += _cell_rows(cell, params, labels)
    return rows


def _cell_rows(cell: Cell, params: int, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Flower's FedAvg (the reference), then each label: fedsec, its floor, Flower's and ByzFL's version."""
    n, model, f = cell.n, cell.model, assumed_malicious(cell.n)
    beta = bench_config("fedtrimmedavg", n, model).trim_beta
    steps = floors.time_steps(
        cell.replies,
        cell.initial,
        repeat=max(1, cell.ctx.plan.agg_repeat),
        threads=cell.threads,
        kept=n - 2 * f,  # Bulyan's θ
    )

    def build_reference() -> Strategy:
        return flower_fedavg(n, cell.initial)

    reference = cell.time("flower-fedavg", cell.strategy_call(build_reference))
    common: dict[str, Any] = {"threads": cell.threads, "f": f, "reference_ms": reference.ms}
    rows = [_agg_row(model, params, n, "flower-fedavg", **common, **_timed(reference))]
    byzfl_ok = peers.byzfl_available()
    for label in labels:
        fedsec = cell.time(label, cell.strategy_call(_fedsec_builder(label, n, cell.initial, model)))
        extra: dict[str, Any] = {}
        flower = peers.FLOWER.get(label)
        if flower is not None:
            timing = reference if flower == "flower-fedavg" else _time_flower(cell, flower, label)
            extra.update(flower=flower, flower_ms=rounded(timing.ms, 2), flower_status=timing.status)
        peer = peers.BYZFL.get(label)
        if peer is not None:
            extra["byzfl"] = peer.describe(n, f, beta)
            if not byzfl_ok:
                extra["byzfl_status"] = peers.NOT_INSTALLED
            else:
                timing = _time_byzfl(cell, label, f=f, beta=beta)
                extra.update(byzfl_ms=rounded(timing.ms, 2), byzfl_status=timing.status)
        floor = floors.floor_seconds(label, steps)
        if floor is not None:
            extra.update(floor_ms=floor * 1000, floor_steps="+".join(floors.FLOORS[label]))
        rows.append(_agg_row(model, params, n, label, **common, **_timed(fedsec), **extra))
    return rows


def _fedsec_builder(label: str, n: int, initial: list[np.ndarray], model: str) -> Callable[[], Strategy]:
    def build() -> Strategy:
        return ready_strategy(label, n, initial, model=model)

    return build


def _time_flower(cell: Cell, flower: str, label: str) -> Timing:
    """Flower's ``flower`` unguarded on the cell's replies; predicted like ``label`` unless in GROWTH."""

    def build() -> Strategy:
        config = bench_config(flower, cell.n, cell.model)
        return peers.flower_strategy(flower, config, cell.initial, bench_grid(cell.n))

    return cell.time(flower, cell.strategy_call(build), growth=flower if flower in GROWTH else label)


def _time_byzfl(cell: Cell, label: str, *, f: int, beta: float) -> Timing:
    """ByzFL's version of ``label``: decode the replies, aggregate, back to an ArrayRecord."""

    def make() -> Callable[[], bool]:
        aggregator = peers.BYZFL[label].build(cell.n, f, beta)  # imports ByzFL outside the timed calls

        def call() -> bool:
            result = peers.byzfl_aggregate(label, cell.replies, f=f, beta=beta, aggregator=aggregator)
            return result is not None

        return call

    return cell.time(f"byzfl-{label}", make, growth=label)


def _timed(timing: Timing) -> dict[str, Any]:
    return {
        "ms": timing.ms,
        "repeats": timing.repeats,
        "status": timing.status,
        "predicted_ms": None
        if timing.seconds is not None or timing.predicted is None
        else timing.predicted * 1000,
    }


def _agg_row(
    model: str,
    params: int,
    n: int,
    label: str,
    *,
    ms: float | None = None,
    reference_ms: float | None = None,
    predicted_ms: float | None = None,
    repeats: int = 0,
    status: str = "ok",
    threads: int = 1,
    f: int | None = None,
    floor_ms: float | None = None,
    floor_steps: str | None = None,
    flower: str | None = None,
    flower_ms: float | None = None,
    flower_status: str | None = None,
    byzfl: str | None = None,
    byzfl_ms: float | None = None,
    byzfl_status: str | None = None,
) -> dict[str, Any]:
    return {
        "model": model,
        "params": params,
        "clients": n,
        "threads": threads,
        "f": f,
        "strategy": label if label == "flower-fedavg" else f"{label}+guard",
        "ms": rounded(ms, 2),
        "reference": "flower-fedavg",
        "reference_ms": rounded(reference_ms, 2),
        "ratio": rounded(ratio(ms, reference_ms), 3),
        "floor_ms": rounded(floor_ms, 2),
        "floor_steps": floor_steps,
        "floor_ratio": rounded(ratio(ms, floor_ms), 3),
        "flower": flower,
        "flower_ms": flower_ms,
        "flower_status": flower_status,
        "byzfl": byzfl,
        "byzfl_ms": byzfl_ms,
        "byzfl_status": byzfl_status,
        "added_pct_of_round": None,  # filled in once a round was measured (fill_round_shares)
        "round_s": None,
        "added_pct_of_own_round": None,  # against a simulated round at this many clients, where one ran
        "own_round_s": None,
        "predicted_ms": rounded(predicted_ms, 1),
        "repeats": repeats,
        "status": status,
    }


def fill_round_shares(aggregation: list[dict[str, Any]], ctx: Context) -> None:
    """``added_pct_of_round``: a strategy's extra ms over Flower's FedAvg, as % of a 10-client round;
    ``added_pct_of_own_round``: the same, as % of a simulated round at the row's own client count.

    The reference round is the steady simulation round of the same model with 10 clients
    (else its in-process compute floor): the same data and epochs as any client count, so
    a round at 100 clients is at least as long and the percentage an upper bound.  Where the
    simulation section also ran the row's ``(model, clients)`` (``plan.sim_extra``), that
    round, in which every one of the clients trains and sends its update, is the second
    reference: what the defense adds to a round of the federation it aggregates.
    """
    for row in aggregation:
        round_s = ctx.round_seconds.get(row["model"]) or ctx.floor_seconds.get(row["model"])
        if row["ms"] is None or row["reference_ms"] is None or not round_s:
            continue
        row.update(_shares(row, round_s, ""))
        row["round_s"] = round(round_s, 3)
        own = ctx.rounds_at.get((row["model"], row["clients"]))
        if own:
            row.update(_shares(row, own, "_own"))
            row["own_round_s"] = round(own, 3)


def _shares(row: dict[str, Any], round_s: float, suffix: str) -> dict[str, float]:
    """The row's added ms over Flower's FedAvg (and its floor's, if measured) as % of ``round_s`` + FedAvg."""
    whole = round_s * 1000.0 + row["reference_ms"]
    shares = {f"added_pct_of{suffix}_round": round(100.0 * (row["ms"] - row["reference_ms"]) / whole, 2)}
    if row.get("floor_ms") is not None:  # what the defense's floor alone would add
        shares[f"floor_added_pct_of{suffix}_round"] = round(
            100.0 * (row["floor_ms"] - row["reference_ms"]) / whole, 2
        )
    return shares
