"""``fedsec bench``: what a round, a defense and an attack cost, next to their references (issue #8).

Every figure is measured in the same run as its reference, so that the ratio holds
on a noisy machine:

1. **simulation** — a round of N=10 clients through ``flwr run`` on Flower's Ray
   simulation engine against the same clients' local training done in process
   (``client.fit`` one after the other, plus FedAvg and the server's evaluation):
   the compute floor.  SuperLink start, submit-to-first-record and round 1 (actor
   warm-up) are reported apart from the steady rounds.
2. **aggregation** — milliseconds per ``aggregate_train`` on synthetic updates for
   every strategy (wrapped in fedsec's update guard, as runs use them) against
   Flower's own unguarded ``FedAvg``, by number of clients and model.
3. **attacks** — seconds per 100 images for each registered evasion attack through
   :func:`fedsec.attacks.evasion.generate`, against plain batched torch FGSM / BIM /
   PGD and against ART at its default batch size (CW-L2, DeepFool, JSMA).
4. **memory** — peak resident memory of a simulation's processes and per Ray actor.
5. **scale** — 1000 simulated clients, 1% and 10% sampled per round.

:func:`run_bench` writes ``bench.json`` (layout: :func:`fedsec.bench.bench_document`)
and ``bench.md`` (the tables in Markdown) to the output directory and prints the
tables.  ``--quick`` shrinks every section to fit in a few minutes and skips
whatever its deadline would not allow, saying so in the row.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import platform
import resource
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, Strategy
from rich.console import Console
from rich.table import Table
from torch import nn

from fedsec.bench import (
    Budget,
    bench_document,
    measure_samples,
    per_100,
    plain_fgsm,
    plain_pgd,
    predict_seconds,
    ratio,
    steady_round_seconds,
)
from fedsec.config import ConfigValue, RunConfig
from fedsec.results import read_metrics
from simulations import launcher

logger = logging.getLogger(__name__)

BENCH_FILE = "bench.json"
MARKDOWN_FILE = "bench.md"
MNIST_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
#: How aggregation time grows with the number of clients n, for predicting what fits the budget:
#: Krum's pairwise distances are O(n²·d), Bulyan repeats Krum n-2f times (O(n³·d)), the median and
#: trimmed mean sort the stacked (n, d) updates (superlinear in practice); the rest are O(n·d).
GROWTH = {
    "krum": 2.0,
    "multikrum": 2.0,
    "bulyan": 3.0,
    "fedmedian": 1.2,
    "fedtrimmedavg": 1.2,
    "layered": 2.0,
    "flame": 2.0,
    "foolsgold": 2.0,
    "detectors": 2.0,
}
#: Seconds per 100 images at batch size 100 on an idle 2-core machine (ENVIRONMENT.md), and at
#: ART's default batch size: the starting point of the attack section's time predictions.
EXPECTED_PER_100 = {
    "fgsm": 0.012,
    "bim": 0.45,
    "pgd": 0.45,
    "jsma": 1.4,
    "deepfool": 5.7,
    "cw2": 13.0,
    "simba": 48.0,
}
EXPECTED_ART_DEFAULT_PER_100 = {"jsma": 4.9, "deepfool": 29.0, "cw2": 53.0}
#: The strategies the issue names; quick mode benchmarks only these.
ISSUE_STRATEGIES = (
    "fedavg",
    "krum",
    "fedmedian",
    "fda3",
    "layered",
    "flame",
    "foolsgold",
    "detectors",
    "gan-audit",
)
#: Bench labels that are a registered strategy with extra config (wrappers such as the detectors).
WRAPPED = {
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
FLOWER_PROCESSES = ("flower-superlink", "flwr-simulation", "raylet")
MB = 1024 * 1024


# ---------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class BenchPlan:
    """Sizes of every section; :meth:`for_mode` gives the quick and the full plan."""

    quick: bool
    sim_models: tuple[str, ...]
    sim_rounds: dict[str, int]
    local_epochs: int | None  # None: the quickstart scenario's
    floor_rounds: int
    floor_one_thread_clients: int | None  # clients fitted for the 1-thread floor (scaled to N); None: all
    agg_sizes: dict[str, tuple[int, ...]]
    agg_strategies: tuple[str, ...] | None  # None: every registered strategy
    agg_repeat: int
    agg_cell_seconds: float
    attack_images: int
    simba_images: int
    art_default_images: int
    memory_clients: tuple[int, ...]
    memory_rounds: int
    scale_fractions: tuple[float, ...]
    scale_clients: int
    scale_rounds: int
    deadline_seconds: float

    @classmethod
    def for_mode(cls, *, quick: bool) -> BenchPlan:
        if quick:
            return cls(
                quick=True,
                sim_models=("lenet", "cnn"),
                sim_rounds={"lenet": 3, "cnn": 2},
                local_epochs=1,
                floor_rounds=1,
                floor_one_thread_clients=2,
                agg_sizes={"lenet": (10, 50), "cnn": (10, 100)},
                agg_strategies=ISSUE_STRATEGIES,
                agg_repeat=3,
                agg_cell_seconds=6.0,
                attack_images=100,
                simba_images=2,
                art_default_images=10,
                memory_clients=(10,),
                memory_rounds=2,
                scale_fractions=(),
                scale_clients=1000,
                scale_rounds=2,
                deadline_seconds=265.0,
            )
        return cls(
            quick=False,
            sim_models=("lenet", "cnn"),
            sim_rounds={"lenet": 5, "cnn": 5},
            local_epochs=None,
            floor_rounds=2,
            floor_one_thread_clients=None,
            agg_sizes={"lenet": (10, 50, 100, 200), "cnn": (10, 50, 100, 200)},
            agg_strategies=None,
            agg_repeat=5,
            agg_cell_seconds=90.0,
            attack_images=100,
            simba_images=5,
            art_default_images=100,
            memory_clients=(10, 100),
            memory_rounds=2,
            scale_fractions=(0.01, 0.1),
            scale_clients=1000,
            scale_rounds=3,
            deadline_seconds=math.inf,
        )


@dataclass
class Context:
    """What the sections share: plan, output directory, deadline, console, and cross-section results."""

    plan: BenchPlan
    out: Path
    console: Console
    budget: Budget
    started: float = field(default_factory=time.perf_counter)
    round_seconds: dict[str, float] = field(default_factory=dict)  # model -> steady sim round (s)
    floor_seconds: dict[str, float] = field(default_factory=dict)  # model -> floor round (s)
    notes: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.started:6.1f}s[/dim] {message}")


def scenario_config(overrides: dict[str, ConfigValue]) -> RunConfig:
    """The quickstart scenario's config with ``overrides`` (the bench's common baseline)."""
    from simulations.scenarios import load_scenario

    return load_scenario("quickstart").config(overrides)


def machine() -> dict[str, Any]:
    """Cores, GPU, CPU model, memory and the versions that matter."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cores": os.cpu_count(),
        "gpu": bool(torch.cuda.is_available()),
        "cpu": cpu,
        "memory_gb": memory_gb,
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flwr": version("flwr"),
        "ray": version("ray"),
        "art": version("adversarial-robustness-toolbox"),
        "numpy": np.__version__,
    }


# ---------------------------------------------------------------------------- section 2: aggregation


def model_weights(name: str) -> list[np.ndarray]:
    """The float32 arrays of model ``name`` on MNIST-shaped input (what clients send)."""
    from fedsec.models import build_model
    from fedsec.training import get_weights

    return get_weights(build_model(name, input_shape=MNIST_SHAPE, num_classes=NUM_CLASSES, seed=0))


def synthetic_replies(weights: Sequence[np.ndarray], n: int, *, seed: int) -> list[Message]:
    """``n`` seeded updates shaped like ``weights`` (global + small noise), as Flower's train replies."""
    from simulations.local_grid import set_local_identity

    set_local_identity()
    rng = np.random.default_rng(seed)
    replies: list[Message] = []
    for i in range(n):
        arrays = [
            (w + (rng.random(w.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(0.02)).astype(w.dtype)
            for w in weights
        ]
        metrics = MetricRecord({"num-examples": 30 + i % 7, "partition-id": i})
        instruction = Message(
            RecordDict({"config": ConfigRecord()}), dst_node_id=1000 + i, message_type="train"
        )
        content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics})
        replies.append(Message(content=content, reply_to=instruction))
    return replies


def fresh_replies(replies: Sequence[Message]) -> list[Message]:
    """Copies of ``replies`` whose records can be consumed (Flower's FedMedian, FedTrimmedAvg and
    Bulyan pop the arrays out of the replies they aggregate); the arrays' bytes are shared, not copied."""
    copies = []
    for msg in replies:
        records = {
            key: ArrayRecord(dict(record.items())) for key, record in msg.content.array_records.items()
        }
        content = RecordDict({**records, **dict(msg.content.metric_records.items())})
        copies.append(Message(content=content, metadata=msg.metadata))  # type: ignore[call-overload]
    return copies


def bench_grid(n: int) -> Any:
    """``n`` in-process nodes ``1000 + i`` that answer the partition query with ``i``."""
    from simulations.local_grid import LocalGrid, partition_handler

    return LocalGrid({1000 + i: partition_handler(i) for i in range(n)})


def ready_strategy(name: str, n: int, initial: list[np.ndarray], *, model: str) -> Strategy:
    """``build_strategy`` for ``name`` at ``n`` clients of ``model``, after ``configure_train`` of round 1.

    ``configure_train`` is what teaches the guard the model layout and gives FDA³ the
    arrays its Adam step starts from, as in a real round.  ``model`` must be the
    architecture of ``initial``: defenses that evaluate client models (the GAN audit)
    build it.
    """
    from strategies import build_strategy

    config = RunConfig.from_run_config(
        {"strategy": name, **WRAPPED.get(name, {}), "num-clients": n, "model": model}
    )
    strategy = build_strategy(config, initial_arrays=initial)
    list(strategy.configure_train(1, ArrayRecord(initial), ConfigRecord(), bench_grid(n)))
    return strategy


def flower_fedavg(n: int, initial: list[np.ndarray]) -> Strategy:
    """Flower's own FedAvg with the arguments fedsec gives it, without the guard (the reference)."""
    from strategies import flower_kwargs

    config = RunConfig.from_run_config({"strategy": "fedavg", "num-clients": n})
    strategy = FedAvg(**flower_kwargs(config))
    list(strategy.configure_train(1, ArrayRecord(initial), ConfigRecord(), bench_grid(n)))
    return strategy


def _time_cell(fn: Callable[[], object], *, repeat: int, cell_seconds: float) -> tuple[float, int]:
    """Median seconds of ``fn`` over up to ``repeat`` calls that fit in ``cell_seconds``; and the count."""
    samples = measure_samples(fn, repeat=1)
    more = min(repeat - 1, int(cell_seconds / max(samples[0], 1e-9)) - 1)
    if more > 0:
        samples += measure_samples(fn, repeat=more)
    return float(statistics.median(samples)), len(samples)


def bench_aggregation(ctx: Context) -> list[dict[str, Any]]:
    """Section 2: ms per ``aggregate_train`` by model, clients and strategy, against Flower's FedAvg."""
    from strategies import STRATEGIES

    plan = ctx.plan
    labels = ["flower-fedavg", *(plan.agg_strategies or [*STRATEGIES, *WRAPPED])]
    rows: list[dict[str, Any]] = []
    for model_name, sizes in plan.agg_sizes.items():
        weights = model_weights(model_name)
        last: dict[str, tuple[int, float]] = {}  # label -> (n, seconds) at its last measured size
        for n in sizes:
            rows += _aggregation_at(ctx, model_name, weights, n, labels, last)
            gc.collect()
    return rows


def _aggregation_at(
    ctx: Context,
    model_name: str,
    weights: list[np.ndarray],
    n: int,
    labels: Sequence[str],
    last: dict[str, tuple[int, float]],
) -> list[dict[str, Any]]:
    """The rows of one (model, n): each label timed on the same synthetic updates, or skipped."""
    params = int(sum(w.size for w in weights))
    initial = list(weights)
    rows = []
    if not ctx.budget.allows(5.0):
        return [_agg_row(model_name, params, n, label, status="skipped (budget)") for label in labels]
    ctx.say(f"aggregation: {model_name} ({params:,} parameters), {n} clients")
    replies = synthetic_replies(weights, n, seed=n)
    reference_ms: float | None = None
    for label in labels:
        exponent = GROWTH.get(label, 1.0)
        predicted = (
            predict_seconds(last[label][1], last[label][0], n, exponent=exponent) if label in last else 0.0
        )
        if predicted > ctx.plan.agg_cell_seconds or not ctx.budget.allows(predicted):
            rows.append(
                _agg_row(
                    model_name,
                    params,
                    n,
                    label,
                    reference_ms=reference_ms,
                    predicted_ms=predicted * 1000,
                    status=f"skipped (budget; ~{predicted:.0f}s predicted)",
                )
            )
            continue
        strategy = (
            flower_fedavg(n, initial)
            if label == "flower-fedavg"
            else ready_strategy(label, n, initial, model=model_name)
        )
        aggregated: list[bool] = []

        def call(strategy: Strategy = strategy, aggregated: list[bool] = aggregated) -> None:
            aggregated.append(strategy.aggregate_train(1, fresh_replies(replies))[0] is not None)

        seconds, count = _time_cell(call, repeat=ctx.plan.agg_repeat, cell_seconds=ctx.plan.agg_cell_seconds)
        last[label] = (n, seconds)
        if label == "flower-fedavg":
            reference_ms = seconds * 1000
        # A strategy that kept the previous model (the guard caught an error) did not do its work:
        # its time is not the defense's cost.
        status = "ok" if all(aggregated) else "failed (aggregate_train returned no model; see the log)"
        rows.append(
            _agg_row(
                model_name,
                params,
                n,
                label,
                ms=seconds * 1000,
                reference_ms=reference_ms,
                repeats=count,
                status=status,
            )
        )
    return rows


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
) -> dict[str, Any]:
    return {
        "model": model,
        "params": params,
        "clients": n,
        "strategy": label if label == "flower-fedavg" else f"{label}+guard",
        "ms": _round(ms, 2),
        "reference": "flower-fedavg",
        "reference_ms": _round(reference_ms, 2),
        "ratio": _round(ratio(ms, reference_ms), 3),
        "added_pct_of_round": None,  # filled in once the simulation section ran (fill_round_shares)
        "predicted_ms": _round(predicted_ms, 1),
        "repeats": repeats,
        "status": status,
    }


# ---------------------------------------------------------------------------- section 3: attacks


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients, as fedsec's ``generate`` runs attacks; restored on exit."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def attack_model(*, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """LeNet-5 trained one epoch on MNIST-5k, and the first 100 test images with labels."""
    from fedsec.experiment import load_bundle, torch_generator
    from fedsec.models import build_model
    from fedsec.training import make_optimizer, train

    config = scenario_config({"model": "lenet"})
    bundle = load_bundle(config)
    model = build_model("lenet", input_shape=bundle.input_shape, num_classes=bundle.num_classes, seed=seed)
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9)
    train(
        model,
        bundle.train.x,
        bundle.train.y,
        epochs=1,
        batch_size=32,
        optimizer=optimizer,
        generator=torch_generator(seed, 0),
    )
    model.eval()
    return model, bundle.test.x[:100].clone(), bundle.test.y[:100].clone()


def art_default_reference(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[Callable[[], object], int]:
    """fedsec's own runner for ``name`` (same ART class and parameters) at ART's default batch size."""
    import inspect

    from art.attacks.evasion import CarliniL2Method, DeepFool, SaliencyMapMethod

    from fedsec.attacks.evasion import ATTACKS, art_classifier

    art_classes = {"cw2": CarliniL2Method, "deepfool": DeepFool, "jsma": SaliencyMapMethod}
    if name not in art_classes:
        raise ValueError(f"no ART-default reference for attack {name!r}")
    default_batch = int(inspect.signature(art_classes[name]).parameters["batch_size"].default)
    spec = ATTACKS[name]
    clf = art_classifier(model, input_shape=MNIST_SHAPE, num_classes=NUM_CLASSES)
    x_np = x.numpy().astype(np.float32)
    y_np = y.numpy()
    return (lambda: spec.run(clf, x_np, y_np, spec.defaults, default_batch)), default_batch


def _time_attack(fn: Callable[[], object], *, cheap_repeat: int = 5, cheap_below: float = 1.0) -> float:
    """Median seconds: one call, then more (up to ``cheap_repeat``) if a call is under ``cheap_below`` s."""
    samples = measure_samples(fn, repeat=1)
    if samples[0] < cheap_below:
        samples += measure_samples(fn, repeat=cheap_repeat - 1)
    return float(statistics.median(samples))


def bench_attacks(ctx: Context) -> list[dict[str, Any]]:
    """Section 3: seconds per 100 images per attack, against plain torch or ART's default batch size."""
    from fedsec.attacks.evasion import ATTACKS, generate

    plan = ctx.plan
    if not ctx.budget.allows(15.0):
        return [{"attack": name, "images": None, "status": "skipped (budget)"} for name in ATTACKS]
    ctx.say("attacks: training LeNet-5 one epoch on MNIST-5k")
    model, x_all, y_all = attack_model()
    plain: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "fgsm": lambda x, y: plain_fgsm(model, x, y, eps=float(ATTACKS["fgsm"].defaults["eps"])),
        "bim": lambda x, y: plain_pgd(
            model,
            x,
            y,
            eps=float(ATTACKS["bim"].defaults["eps"]),
            eps_step=float(ATTACKS["bim"].defaults["eps_step"]),
            max_iter=int(ATTACKS["bim"].defaults["max_iter"]),
            random_init=False,
        ),
        "pgd": lambda x, y: plain_pgd(
            model,
            x,
            y,
            eps=float(ATTACKS["pgd"].defaults["eps"]),
            eps_step=float(ATTACKS["pgd"].defaults["eps_step"]),
            max_iter=int(ATTACKS["pgd"].defaults["max_iter"]),
            generator=torch.Generator().manual_seed(0),
        ),
    }
    measured: dict[str, dict[str, Any]] = {}
    slowdowns: list[float] = []  # measured / expected seconds of the attacks run so far

    def predict(per_100_idle: float, images: int) -> float:
        factor = max(1.0, statistics.median(slowdowns)) if slowdowns else 1.0
        single = per_100_idle * images / 100 * factor
        return single * 5 if single < 1.0 else single  # cheap calls are repeated (see _time_attack)

    # Cheapest first, so that a tight deadline drops the costly ones, which are predicted from the
    # machine's measured slowdown against ENVIRONMENT.md's idle figures.
    for name in sorted(ATTACKS, key=lambda a: EXPECTED_PER_100.get(a, 10.0)):
        images = plan.simba_images if name == "simba" else plan.attack_images
        x, y = x_all[:images], y_all[:images]
        row: dict[str, Any] = {
            "attack": name,
            "images": images,
            "batch_size": 1 if name == "simba" else 100,
            "seconds": None,
            "per_100_s": None,
            "reference": None,
            "reference_images": None,
            "reference_per_100_s": None,
            "ratio": None,
            "status": "ok",
            "note": f"measured on {images} images, scaled to 100" if images != 100 else "",
        }
        measured[name] = row
        idle = EXPECTED_PER_100.get(name, 10.0)
        predicted = predict(idle, images)
        if not ctx.budget.allows(predicted):
            row["status"] = f"skipped (budget; ~{predicted:.0f}s predicted)"
            continue
        ctx.say(f"attacks: {name} on {images} images")
        seconds = _time_attack(
            lambda name=name, x=x, y=y: generate(name, model, x, y, num_classes=NUM_CLASSES, seed=0)  # type: ignore[misc]
        )
        if idle * images / 100 >= 0.1:  # too short a run says little about the machine's speed
            slowdowns.append(seconds / (idle * images / 100))
        row["seconds"] = round(seconds, 4)
        row["per_100_s"] = round(per_100(seconds, images), 4)
        reference_per_100: float | None = None
        if name in plain:
            row["reference"] = "plain batched torch"
            row["reference_images"] = images
            with frozen(model):
                ref = _time_attack(lambda name=name, x=x, y=y: plain[name](x, y))  # type: ignore[misc]
            reference_per_100 = per_100(ref, images)
        elif name in EXPECTED_ART_DEFAULT_PER_100:
            ref_images = min(plan.art_default_images, len(x_all))
            predicted = predict(EXPECTED_ART_DEFAULT_PER_100[name], ref_images)
            if ctx.budget.allows(predicted):
                ctx.say(f"attacks: {name} through ART at its default batch size on {ref_images} images")
                with frozen(model):
                    fn, size = art_default_reference(name, model, x_all[:ref_images], y_all[:ref_images])
                    ref = _time_attack(fn)
                row["reference"] = f"ART default batch_size={size}"
                row["reference_images"] = ref_images
                reference_per_100 = per_100(ref, ref_images)
                if ref_images != 100:
                    row["note"] = (row["note"] + "; " if row["note"] else "") + (
                        f"reference on {ref_images} images, scaled to 100"
                    )
            else:
                row["reference"] = f"ART default batch size: skipped (budget; ~{predicted:.0f}s predicted)"
        if reference_per_100 is not None:
            row["reference_per_100_s"] = round(reference_per_100, 4)
            row["ratio"] = _round(ratio(row["per_100_s"], reference_per_100), 3)
    return [measured[name] for name in ATTACKS]


# ---------------------------------------------------------------------------- sections 1, 4, 5: Flower


def foreign_flower_processes(own_tag: str | None = None) -> list[int]:
    """PIDs of Flower/Ray processes that are not this bench's (they would skew its timings)."""
    own = set(launcher.tagged_pids(own_tag)) if own_tag else set()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            program = _program(_argv(int(entry.name)))
        except OSError:
            continue
        if program in FLOWER_PROCESSES:
            found.append(int(entry.name))
    return found


def _status_kb(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def _pss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return None


def _argv(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    return [part for part in raw.split("\0") if part]


def _program(argv: Sequence[str]) -> str:
    """The program a command line runs: its executable, or the script a Python interpreter runs."""
    if not argv:
        return ""
    first = Path(argv[0].split(" ")[0]).name
    if first.startswith("python") and len(argv) > 1:
        return Path(argv[1]).name
    return first


def _role(argv: Sequence[str]) -> str:
    program = _program(argv)
    if argv and argv[0].startswith("ray::ClientAppActor"):
        return "actor"
    return {"flower-superlink": "superlink", "flwr-simulation": "server", "flwr": "cli"}.get(program, "ray")


class MemorySampler:
    """Samples every tagged process's RSS (and PSS) from /proc every ``interval`` s in a thread."""

    def __init__(self, tag: str, *, interval: float = 0.5) -> None:
        self.tag = tag
        self.interval = interval
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self.peak_by_pid: dict[int, int] = {}
        self.pss_by_pid: dict[int, int] = {}
        self.role_by_pid: dict[int, str] = {}
        self.peak_by_role: dict[str, int] = {}
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-memory", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        rss_total = pss_total = 0
        roles: dict[str, int] = {}
        pids = launcher.tagged_pids(self.tag)
        for pid in pids:
            status = _status_kb(pid)
            if "VmRSS" not in status:
                continue
            with contextlib.suppress(OSError):  # re-read: Ray renames a worker once it hosts an actor
                self.role_by_pid[pid] = _role(_argv(pid))
            rss = status["VmRSS"]
            role = self.role_by_pid.get(pid, "ray")
            roles[role] = roles.get(role, 0) + rss
            pss = _pss_kb(pid) or rss
            rss_total += rss
            pss_total += pss
            self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0), rss, status.get("VmHWM", 0))
            self.pss_by_pid[pid] = max(self.pss_by_pid.get(pid, 0), pss)
        for role, kb in roles.items():
            self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), kb)
        self.peak_rss_kb = max(self.peak_rss_kb, rss_total)
        self.peak_pss_kb = max(self.peak_pss_kb, pss_total)
        self.peak_processes = max(self.peak_processes, len(pids))

    def summary(self) -> dict[str, Any]:
        def mb(kb: float | None) -> float | None:
            return None if kb is None else round(kb / 1024, 1)

        actors = [pid for pid, role in self.role_by_pid.items() if role == "actor"]
        by_role = self.peak_by_role  # the largest concurrent sum per role over the samples
        return {
            "peak_rss_mb": mb(self.peak_rss_kb),
            "peak_pss_mb": mb(self.peak_pss_kb),
            "processes": self.peak_processes,
            "actors": len(actors),
            "actor_rss_mb": mb(statistics.mean(self.peak_by_pid[p] for p in actors)) if actors else None,
            "actor_pss_mb": mb(statistics.mean(self.pss_by_pid[p] for p in actors)) if actors else None,
            "server_rss_mb": mb(by_role.get("server")),
            "superlink_rss_mb": mb(by_role.get("superlink")),
            "ray_other_rss_mb": mb(by_role.get("ray")),
            "flwr_cli_rss_mb": mb(by_role.get("cli")),
        }


@dataclass
class MeteredSession(launcher.FlowerSession):
    """A FlowerSession that counts the ``flwr`` CLI calls it makes (polling) and their CPU time."""

    cli_calls: int = 0
    cli_cpu_seconds: float = 0.0

    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            return super().flwr(*args, timeout=timeout)
        finally:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.cli_calls += 1
            self.cli_cpu_seconds += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@dataclass
class SimulationResult:
    """One ``flwr run`` on the Ray engine, as the bench saw it."""

    status: str
    superlink_seconds: float
    startup_seconds: float
    total_seconds: float
    round1_seconds: float | None
    round_seconds: float | None
    rounds: int
    memory: dict[str, Any]
    cli_calls: int
    cli_cpu_seconds: float
    foreign: int


def simulate(config: RunConfig) -> SimulationResult:
    """Run ``config`` like :func:`simulations.launcher.run_simulation`, sampling memory and timing startup.

    It opens the :class:`~simulations.launcher.FlowerSession` itself (instead of calling
    ``run_simulation``) to know the session's process tag, which the memory sampler needs.
    """
    out = Path(config.out_dir)
    shutil.rmtree(out, ignore_errors=True)  # stale metrics.jsonl would be read as this run's progress
    out.mkdir(parents=True)
    foreign = len(foreign_flower_processes())
    session = MeteredSession(simulation=True, log_dir=out / "logs")
    with session, MemorySampler(session.tag) as sampler:
        start = time.perf_counter()
        session.start_superlink()
        superlink = time.perf_counter() - start
        federation = launcher.simulation_federation(config.num_clients)
        try:
            outcome = launcher.submit_and_wait(session, config, federation_config=federation)
            status = outcome.status
            startup, total = outcome.startup_seconds, outcome.seconds
        except launcher.LaunchError as error:
            status, startup, total = f"failed: {error}", math.nan, time.perf_counter() - start
        sampler.sample()
    records = read_metrics(out) if (out / "metrics.jsonl").exists() else []
    first, steady = steady_round_seconds(records)
    return SimulationResult(
        status=status,
        superlink_seconds=superlink,
        startup_seconds=startup,
        total_seconds=total,
        round1_seconds=first,
        round_seconds=steady,
        rounds=max((int(r["round"]) for r in records), default=0),
        memory=sampler.summary(),
        cli_calls=session.cli_calls,
        cli_cpu_seconds=session.cli_cpu_seconds,
        foreign=foreign,
    )


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def compute_floor(
    config: RunConfig, *, rounds: int, threads: int, subset: int | None = None
) -> dict[str, float]:
    """The same clients' rounds in process: fits one after the other, FedAvg, the server's evaluation.

    Returns the median per-round ``train`` and ``server`` seconds and ``build``: the seconds
    to construct all clients once (the simulation does that for every message).  With
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
    }


def _sim_config(ctx: Context, name: str, overrides: dict[str, ConfigValue]) -> RunConfig:
    values: dict[str, ConfigValue] = {"out-dir": str(ctx.out / "runs" / name), **overrides}
    if ctx.plan.local_epochs is not None:
        values.setdefault("local-epochs", ctx.plan.local_epochs)
    return scenario_config(values)


def _memory_row(model: str, clients: int, fraction: float, result: SimulationResult) -> dict[str, Any]:
    return {
        "model": model,
        "clients": clients,
        "fraction_fit": fraction,
        **result.memory,
        "status": result.status,
    }


def bench_simulation(ctx: Context) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sections 1 and 4 (10 clients): simulation round vs compute floor, and the run's memory.

    The floor is the faster of two in-process ways to do a round's compute on this machine:
    the clients one after the other with torch's default threads, or with one thread each
    and ideally two at a time (the 1-thread sequential time halved), which is how the
    simulation's two single-threaded actors share the two cores.
    """
    plan = ctx.plan
    sim_rows: list[dict[str, Any]] = []
    memory_rows: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    for model_name in plan.sim_models:
        rounds = plan.sim_rounds[model_name]
        config = _sim_config(ctx, f"sim-{model_name}-10", {"model": model_name, "num-server-rounds": rounds})
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
            ctx.round_seconds[model_name] = result.round_seconds
        row.update(
            superlink_start_s=round(result.superlink_seconds, 2),
            startup_s=_round(result.startup_seconds, 2),
            round1_s=_round(result.round1_seconds, 2),
            round_s=_round(result.round_seconds, 2),
            ratio=_round(ratio(result.round_seconds, floor_s), 3),
            ratio_round1=_round(ratio(result.round1_seconds, floor_s), 3),
            ratio_vs_2thread=_round(ratio(result.round_seconds, sequential), 3),
            cli_polls=result.cli_calls,
            cli_poll_cpu_s=round(result.cli_cpu_seconds, 1),
            status=result.status
            + (f"; {result.foreign} foreign Flower processes ran" if result.foreign else ""),
        )
        sim_rows.append(row)
        if n in plan.memory_clients:
            memory_rows.append(_memory_row(model_name, n, config.fraction_fit, result))
    return sim_rows, memory_rows


def bench_memory(ctx: Context) -> list[dict[str, Any]]:
    """Section 4 beyond the 10-client runs of section 1: a lenet simulation of each larger size."""
    rows: list[dict[str, Any]] = []
    for clients in ctx.plan.memory_clients:
        if clients == 10 and "lenet" in ctx.plan.sim_models:
            continue  # measured during section 1
        rounds = ctx.plan.memory_rounds
        config = _sim_config(
            ctx,
            f"memory-lenet-{clients}",
            {"model": "lenet", "num-clients": clients, "num-server-rounds": rounds},
        )
        predicted = 60.0 + rounds * ctx.floor_seconds.get("lenet", 10.0) * 3
        if not ctx.budget.allows(predicted):
            rows.append(
                {"model": "lenet", "clients": clients, "fraction_fit": 1.0, "status": "skipped (budget)"}
            )
            continue
        ctx.say(f"memory: flwr run, lenet, {clients} clients, {rounds} rounds")
        rows.append(_memory_row("lenet", clients, 1.0, simulate(config)))
    return rows


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
        config = _sim_config(
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
                "startup_s": _round(result.startup_seconds, 2),
                "round1_s": _round(result.round1_seconds, 2),
                "s_per_round": _round(result.round_seconds, 2),
                "total_s": round(result.total_seconds, 1),
                "status": result.status,
            }
        )
    return rows


# ---------------------------------------------------------------------------- cross-section figures, notes


def fill_round_shares(aggregation: list[dict[str, Any]], ctx: Context) -> None:
    """``added_pct_of_round``: a strategy's extra ms over Flower's FedAvg, as % of a 10-client sim round.

    The reference round is the steady simulation round of the same model with 10 clients
    (else its compute floor): the same data and epochs as any client count, so a round at
    100 clients is at least as long and the percentage an upper bound.
    """
    for row in aggregation:
        round_s = ctx.round_seconds.get(row["model"]) or ctx.floor_seconds.get(row["model"])
        if row["ms"] is None or row["reference_ms"] is None or not round_s:
            continue
        added = row["ms"] - row["reference_ms"]
        row["added_pct_of_round"] = round(100.0 * added / (round_s * 1000.0 + row["reference_ms"]), 2)


#: Why a strategy's aggregation costs what it does (for the notes).
AGGREGATION_CAUSES = {
    "krum": "Flower's Krum computes the n² pairwise distances in a Python double loop over flat vectors "
    "(a Gram-matrix form, ||a||²+||b||²-2a·b with one matrix product, would remove most of it)",
    "multikrum": "as Krum: n² pairwise distances in a Python double loop",
    "bulyan": "Krum selection repeated n-2f times, each with the n² distance loop, then a trimmed mean",
    "fedmedian": "Flower's np.median(axis=0) over the stacked (n, d) array of every layer, a strided "
    "partition per coordinate (np.sort along the client axis and averaging the middle two is about 8x "
    "faster on 100 x 400k float32 here)",
    "fedtrimmedavg": "a sort of the stacked (n, d) array per layer",
    "fda3": "gradient mean accumulated in float64 plus a numpy Adam step over all parameters",
    "fedavg": "the guard's second decode and its finiteness check",
}


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
    for row in sections["simulation"]:
        if row.get("round_s") is None or row.get("floor_s") is None:
            continue
        gap = row["round_s"] - row["floor_s"]
        notes.append(
            f"overhead, simulation {row['model']}: steady round {row['round_s']:.2f}s vs floor "
            f"{row['floor_s']:.2f}s ({row.get('floor_kind') or 'in process'}; ratio {row['ratio']:.2f}, "
            f"{gap:+.2f}s a round)"
            ". Rebuilding the 10 "
            f"clients (re-partitioning the dataset and a new model), which client_fn does for every "
            f"message, costs {row['client_build_s']:.2f} CPU-s a round: caching each partition and model per "
            "actor process would remove that. The launcher's progress polling ran "
            f"{row['cli_polls']} `flwr ls` processes using {row['cli_poll_cpu_s']:.0f} CPU-s on the same "
            "2 cores: polling the SuperLink's API in process (or every few seconds) would remove that."
        )
        notes.append(
            f"overhead, startup {row['model']}: {row['superlink_start_s']:.1f}s to start the SuperLink, "
            f"{row['startup_s']:.1f}s from `flwr run` to round 0 (Ray start, ServerApp import, data) and "
            f"round 1 at {row['round1_s']:.1f}s ({row['round1_s'] - row['round_s']:+.1f}s over a steady "
            "round: the actors start, import torch and flwr, and load the dataset). A SuperLink and Ray "
            "kept running across runs (sweeps, benchmarks) would pay this once."
        )
    agg = [r for r in sections["aggregation"] if r["ms"] is not None]
    guard = [r for r in agg if r["strategy"] == "fedavg+guard"]
    if guard:
        worst = max(guard, key=lambda r: (r["params"], r["clients"]))
        share = worst["added_pct_of_round"]
        notes.append(
            f"overhead, update guard: fedavg+guard is {worst['ratio']:.2f}x Flower's FedAvg at "
            f"{worst['clients']} {worst['model']} clients ({worst['ms'] - worst['reference_ms']:.0f} ms added"
            + (f", {share:.1f}% of a round" if share is not None else "")
            + "): it decodes every update to screen it and the inner strategy decodes it again. Screening "
            "the decoded arrays and handing them on (or checking the .npy payload in place with "
            "np.frombuffer) would halve it."
        )
    heavy = [r for r in agg if r["strategy"] not in ("flower-fedavg", "fedavg+guard") and r["ratio"]]
    if heavy:
        top = max(heavy, key=lambda r: r["ms"])
        name = top["strategy"].removesuffix("+guard")
        notes.append(
            f"overhead, aggregation: the costliest measured cell is {top['strategy']} at {top['clients']} "
            f"{top['model']} clients, {top['ms']:.0f} ms ({top['ratio']:.1f}x FedAvg"
            + (
                f", +{top['added_pct_of_round']:.1f}% of a round"
                if top["added_pct_of_round"] is not None
                else ""
            )
            + f"): {AGGREGATION_CAUSES.get(name, 'its own aggregation')}."
        )
    if any(str(r["status"]).startswith("skipped") for r in sections["aggregation"]):
        notes.append(
            "aggregation: a skipped (budget) cell was predicted from the previous client count "
            "(n² for Krum, n³ for Bulyan, n^1.2 for median/trimmed mean, n otherwise) to exceed the "
            "per-cell budget "
            f"of {plan.agg_cell_seconds:.0f}s."
        )
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
    if sections["scale"] and sections["scale"][0].get("fraction_fit") is not None:
        notes.append(
            "scale: MNIST-5k leaves 3800 training examples, so 1000 clients hold 3-4 examples each; "
            "the figures measure orchestration cost, not learning."
        )
    return notes


# ---------------------------------------------------------------------------- output

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
        ("cli_poll_cpu_s", "poll CPU s", ".0f"),
        ("status", "status", "s"),
    ],
    "aggregation": [
        ("model", "model", "s"),
        ("clients", "clients", "d"),
        ("strategy", "strategy", "s"),
        ("ms", "ms/aggregate_train", ".1f"),
        ("reference_ms", "Flower FedAvg ms", ".1f"),
        ("ratio", "ratio", ".2f"),
        ("added_pct_of_round", "+% of round", ".2f"),
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
    "scale": [
        ("clients", "clients", "d"),
        ("fraction_fit", "fraction", ".2f"),
        ("clients_per_round", "per round", "d"),
        ("rounds", "rounds", "d"),
        ("completed", "completed", "s"),
        ("peak_rss_mb", "peak RSS MB", ".0f"),
        ("startup_s", "startup s", ".1f"),
        ("round1_s", "round 1 s", ".1f"),
        ("s_per_round", "s/round", ".2f"),
        ("status", "status", "s"),
    ],
}

TITLES = {
    "simulation": "1. simulation overhead: flwr run (Ray) vs in-process compute floor, per round",
    "aggregation": "2. aggregation and defense cost per aggregate_train (synthetic updates)",
    "attacks": "3. attack generation, seconds per 100 images (LeNet-5, MNIST-5k)",
    "memory": "4. memory of a simulation",
    "scale": "5. scale: 1000 simulated clients",
}


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if fmt == "s" or isinstance(value, str | bool):
        return str(value)
    if fmt == "d":
        return str(int(value))
    return format(float(value), fmt)


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def print_tables(console: Console, document: dict[str, Any]) -> None:
    """Print one rich table per section and the notes (wide when the output is not a terminal)."""
    if not console.is_terminal:  # a file or pipe: don't squeeze the tables into 80 columns
        console = Console(file=console.file, width=max(console.width, 250), highlight=False)
    for name, columns in COLUMNS.items():
        rows = document["sections"][name]
        table = Table(title=TITLES[name], title_justify="left")
        for _, header, fmt in columns:
            table.add_column(header, justify="left" if fmt == "s" else "right")
        for row in rows:
            table.add_row(*(_cell(row.get(key), fmt) for key, _, fmt in columns))
        console.print(table)
    console.print("[bold]notes[/bold]")
    for note in document["notes"]:
        console.print(f"- {note}", markup=False)


def markdown(document: dict[str, Any]) -> str:
    """The tables and notes in Markdown, headed by the date and the machine (for the README)."""
    m = document["machine"]
    gpu = "a GPU" if m["gpu"] else "no GPU"
    text = [
        f"Benchmark of {document['date']} ({'quick' if document['quick'] else 'full'} run, "
        f"{document['wall_seconds']} s): {m['cores']} cores ({m['cpu']}), {gpu}, {m['memory_gb']} GB; "
        f"Python {m['python']}, torch {m['torch']}, flwr {m['flwr']}, ray {m['ray']}, ART {m['art']}.",
        "",
    ]
    for name, columns in COLUMNS.items():
        text += [f"**{TITLES[name]}**", ""]
        text.append("| " + " | ".join(header for _, header, _ in columns) + " |")
        text.append("|" + "|".join(":--" if fmt == "s" else "--:" for _, _, fmt in columns) + "|")
        for row in document["sections"][name]:
            text.append("| " + " | ".join(_cell(row.get(key), fmt) for key, _, fmt in columns) + " |")
        text.append("")
    text += ["Notes:", "", *(f"- {note}" for note in document["notes"]), ""]
    return "\n".join(text)


# ---------------------------------------------------------------------------- entry point


def run_bench(*, quick: bool, out: Path, console: Console) -> dict[str, Any]:
    """Run every section, print the tables, write ``bench.json`` and ``bench.md`` to ``out``."""
    import json

    out = out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = BenchPlan.for_mode(quick=quick)
    ctx = Context(plan=plan, out=out, console=console, budget=Budget(plan.deadline_seconds))
    # Flower's INFO lines and the defenses' per-client "dropped client" warnings (hundreds per
    # aggregate_train at 200 clients) would flood the console and time the logging, not the math.
    quiet = {"flwr": logging.WARNING, "strategies": logging.ERROR, "fedsec": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name, quiet_level in quiet.items():
        logging.getLogger(name).setLevel(quiet_level)
    foreign = foreign_flower_processes()
    if foreign:
        console.print(
            f"[yellow]warning:[/yellow] {len(foreign)} Flower/Ray processes of another run are alive; "
            "timings will be skewed"
        )
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    sections: dict[str, list[dict[str, Any]]] = {name: [] for name in COLUMNS}
    try:
        # Flower runs first: right after the caller checked that no other Flower run is alive.
        sections["simulation"], sections["memory"] = bench_simulation(ctx)
        sections["memory"] += bench_memory(ctx)
        sections["scale"] = bench_scale(ctx)
        sections["aggregation"] = bench_aggregation(ctx)
        sections["attacks"] = bench_attacks(ctx)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    fill_round_shares(sections["aggregation"], ctx)
    info["load_avg_end"] = round(os.getloadavg()[0], 2)
    if info["load_avg_start"] > 0.5 * (os.cpu_count() or 1):  # the end is loaded by the bench itself
        ctx.notes.append(
            f"the machine was busy with other work (1-minute load average {info['load_avg_start']} at the "
            f"start on {os.cpu_count()} cores): absolute times are inflated; the ratios, measured side by "
            "side, hold better."
        )
    if foreign:
        ctx.notes.append(f"{len(foreign)} Flower/Ray processes of another run were alive at the start.")
    document = bench_document(
        date=date,
        machine=info,
        quick=quick,
        sections=sections,
        notes=[*findings(sections, plan), *ctx.notes],
        wall_seconds=time.perf_counter() - ctx.started,
    )
    (out / "bench.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / MARKDOWN_FILE).write_text(markdown(document))
    print_tables(console, document)
    console.print(f"wrote {out / BENCH_FILE} and {out / MARKDOWN_FILE} in {document['wall_seconds']:.0f}s")
    return document


__all__ = [
    "BENCH_FILE",
    "BenchPlan",
    "MemorySampler",
    "bench_aggregation",
    "bench_attacks",
    "compute_floor",
    "markdown",
    "run_bench",
    "simulate",
    "synthetic_replies",
]
