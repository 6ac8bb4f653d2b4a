"""Section 1, rounds: a simulated round through ``flwr run`` against the same round done in process.

The in-process floor (:func:`compute_floor`) is every client's ``fit`` one after
the other, FedAvg and the server's evaluation, timed with torch's default
threads and with one thread; a steady Flower round over the faster of the two
is the simulation's overhead ratio.  :func:`engine_cell` adds the round of an
empty Flower App on the same federation (:mod:`simulations.bench.engine`): the
engine's own share, which no app running on it can avoid.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from fedsec.bench import ratio
from fedsec.config import RunConfig
from fedsec.config_values import ConfigValue
from fedsec.contexts import torch_threads
from simulations.bench.common import Context, rounded
from simulations.bench.engine import engine_round
from simulations.bench.memory import memory_row, sim_config, simulate


def compute_floor(
    config: RunConfig, *, rounds: int, threads: int, subset: int | None = None
) -> dict[str, float]:
    """The same clients' rounds in process: fits one after the other, FedAvg, the server's evaluation.

    Returns the median per-round ``train`` and ``server`` seconds, ``build``: the seconds
    to construct all clients once (the simulation does that for every message), and
    ``parameters``: the model's number of parameters.  With
    ``subset``, only the first ``subset`` clients are built and fitted and their times are
    scaled to all ``num-clients`` (IID partitions are equally large).
    """
    from clients import build_client
    from fedsec.aggregation import weighted_mean
    from fedsec.experiment import load_bundle, new_model, server_data
    from fedsec.training import evaluate, get_weights, make_optimizer, set_weights, train

    n = config.num_clients
    k = n if subset is None else max(1, min(subset, n))
    with torch_threads(threads):
        bundle = load_bundle(config)
        build_client(config, partition_id=0, num_partitions=n)  # loads and memoizes the dataset
        start = time.perf_counter()
        clients = [build_client(config, partition_id=i, num_partitions=n) for i in range(k)]
        build = (time.perf_counter() - start) * n / k
        test = server_data(config, bundle)["test"]
        model = new_model(config, bundle)
        weights = get_weights(model)
        # Untimed warm-up of torch's kernels on a throwaway model.
        scratch = new_model(config, bundle)
        x0, y0 = bundle.train.x[:64], bundle.train.y[:64]
        train(
            scratch,
            x0,
            y0,
            epochs=1,
            batch_size=32,
            optimizer=make_optimizer("sgd", scratch.parameters(), lr=0.01),
            generator=torch.Generator().manual_seed(0),
        )
        trains, servers = [], []
        for server_round in range(1, rounds + 1):
            start = time.perf_counter()
            fits = [c.fit(weights, {"server-round": server_round}) for c in clients]
            trains.append(time.perf_counter() - start)
            start = time.perf_counter()
            weights = weighted_mean([w for w, _, _ in fits], [num for _, num, _ in fits])
            set_weights(model, weights)
            evaluate(model, test.x, test.y, num_classes=bundle.num_classes, batch_size=config.eval_batch_size)
            servers.append(time.perf_counter() - start)
    return {
        "train": float(statistics.median(trains)) * n / k,
        "server": float(statistics.median(servers)),
        "build": build,
        "parameters": float(sum(w.size for w in weights)),
    }


def bench_simulation(ctx: Context) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sections 1 and 4 (10 clients, and ``plan.sim_extra``'s sizes): simulation round vs compute floor,
    and the run's memory.

    The floor is the faster of two in-process ways to do a round's compute on this machine:
    the clients one after the other with torch's default threads, or with one thread each
    and ideally two at a time (the 1-thread sequential time halved), which is how the
    simulation's two single-threaded actors share the two cores.
    """
    plan = ctx.plan
    sim_rows: list[dict[str, Any]] = []
    memory_rows: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    cells = [(model_name, None) for model_name in plan.sim_models] + list(plan.sim_extra)
    for model_name, clients in cells:
        rounds = plan.sim_rounds[model_name]
        overrides: dict[str, ConfigValue] = {"model": model_name, "num-server-rounds": rounds}
        if clients is not None:
            overrides["num-clients"] = clients
        config = sim_config(ctx, f"sim-{model_name}-{clients or 10}", overrides)
        n = config.num_clients
        row: dict[str, Any] = {
            "model": model_name,
            "clients": n,
            "rounds": rounds,
            "local_epochs": config.local_epochs,
            "floor_threads": threads,
            "floor_train_s": None,
            "floor_server_s": None,
            "floor_2thread_s": None,
            "floor_1thread_s": None,
            "floor_1thread_clients": None,
            "floor_s": None,
            "floor_kind": None,
            "client_build_s": None,
            "superlink_start_s": None,
            "startup_s": None,
            "round1_s": None,
            "round_s": None,
            "ratio": None,
            "ratio_round1": None,
            "ratio_vs_2thread": None,
            "actors": None,
            "actor_fit_s": None,
            "floor_actor_train_s": None,
            "outside_fit_s": None,
            "engine_round_s": None,
            "ratio_bound": None,
            "rest_s": None,
            "engine_status": None,
            "cli_polls": None,
            "cli_poll_cpu_s": None,
            "status": "ok",
        }
        ctx.say(
            f"simulation: compute floor, {model_name}, {n} clients, {plan.floor_rounds} round(s), "
            f"{threads} threads"
        )
        floor = compute_floor(config, rounds=plan.floor_rounds, threads=threads)
        sequential = floor["train"] + floor["server"]
        subset = plan.floor_one_thread_clients or n
        ctx.say(f"simulation: compute floor, {model_name}, 1 thread, {subset} of {n} clients")
        one = compute_floor(config, rounds=plan.floor_rounds, threads=1, subset=subset)
        one_thread = one["train"] + one["server"]
        floor_s = min(sequential, one_thread / 2)
        if clients is None:
            ctx.floor_seconds[model_name] = floor_s
        row.update(
            floor_train_s=round(floor["train"], 3),
            floor_server_s=round(floor["server"], 3),
            floor_2thread_s=round(sequential, 3),
            floor_1thread_s=round(one_thread, 3),
            floor_1thread_clients=subset,
            floor_s=round(floor_s, 3),
            floor_kind=f"{threads} threads sequential" if floor_s == sequential else "1 thread x2 parallel",
            client_build_s=round(floor["build"], 3),
        )
        predicted = 60.0 + rounds * floor_s * 1.6
        if not ctx.budget.allows(predicted):
            row["status"] = f"skipped (budget: about {predicted:.0f}s needed)"
            sim_rows.append(row)
            continue
        ctx.say(f"simulation: flwr run, {model_name}, {n} clients, {rounds} rounds (about {predicted:.0f}s)")
        result = simulate(config)
        if result.round_seconds is not None:
            ctx.rounds_at[(model_name, n)] = result.round_seconds
            if clients is None:  # the scenario's 10 clients: the reference round of every share
                ctx.round_seconds[model_name] = result.round_seconds
        actors = int(result.memory.get("actors") or min(n, os.cpu_count() or 1))
        actor_fit = None if result.fit_seconds is None else result.fit_seconds / actors
        row.update(
            superlink_start_s=round(result.superlink_seconds, 2),
            startup_s=rounded(result.startup_seconds, 2),
            round1_s=rounded(result.round1_seconds, 2),
            round_s=rounded(result.round_seconds, 2),
            ratio=rounded(ratio(result.round_seconds, floor_s), 3),
            ratio_round1=rounded(ratio(result.round1_seconds, floor_s), 3),
            ratio_vs_2thread=rounded(ratio(result.round_seconds, sequential), 3),
            actors=actors,
            actor_fit_s=rounded(actor_fit, 3),
            floor_actor_train_s=round(one["train"] / actors, 3),
            outside_fit_s=None
            if actor_fit is None or result.round_seconds is None
            else round(result.round_seconds - actor_fit, 3),
            cli_polls=result.cli_calls,
            cli_poll_cpu_s=round(result.cli_cpu_seconds, 1),
            status=result.status
            + (f"; {result.foreign} foreign Flower processes ran" if result.foreign else ""),
        )
        engine_cell(ctx, row, clients=n, parameters=int(floor["parameters"]), rounds=rounds, floor_s=floor_s)
        sim_rows.append(row)
        if n in plan.memory_clients:
            memory_rows.append(memory_row(model_name, n, config.fraction_fit, result))
    return sim_rows, memory_rows


def engine_cell(
    ctx: Context, row: dict[str, Any], *, clients: int, parameters: int, rounds: int, floor_s: float
) -> None:
    """Add Flower's engine round at ``clients`` nodes to ``row``: the empty app's steady round, the
    ratio a round would have if it were the floor plus that (``ratio_bound``), and what the fedsec
    round spent beyond its actors' ``fit()`` and the engine round (``rest_s``)."""
    predicted = 40.0 + rounds * (0.05 * clients + parameters * clients * 2e-8)
    if not ctx.budget.allows(predicted):
        row["engine_status"] = f"skipped (budget: about {predicted:.0f}s needed)"
        return
    ctx.say(f"simulation: Flower's engine alone (empty app), {clients} clients, {parameters} floats")
    engine = engine_round(
        ctx.out / "runs" / f"engine-{row['model']}-{clients}",
        clients=clients,
        parameters=parameters,
        rounds=max(rounds, 3),
    )
    seconds = engine.steady_seconds
    row["engine_status"] = engine.status
    if seconds is None:
        return
    row["engine_round_s"] = round(seconds, 3)
    row["ratio_bound"] = rounded(ratio(floor_s + seconds, floor_s), 3)
    if row["round_s"] is not None and row["actor_fit_s"] is not None:
        row["rest_s"] = round(row["round_s"] - row["actor_fit_s"] - seconds, 3)


def round_reference(ctx: Context, models: list[str]) -> None:
    """An in-process floor round (10 clients, torch's default threads) for each of ``models`` that has no
    simulated round yet: what a defense's share of a round is taken against when the rounds section did
    not run (``fedsec bench --only aggregation``)."""
    for model_name in models:
        if model_name in ctx.round_seconds or model_name in ctx.floor_seconds:
            continue
        config = sim_config(ctx, f"floor-{model_name}-10", {"model": model_name})
        ctx.say(f"aggregation: in-process floor round of {model_name}, {config.num_clients} clients")
        floor = compute_floor(config, rounds=1, threads=torch.get_num_threads())
        ctx.floor_seconds[model_name] = floor["train"] + floor["server"]
